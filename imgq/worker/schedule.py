"""The beat schedule: when Celery beat starts a re-inference.

``IMGQ_REINFER_SCHEDULE`` is a crontab, five fields "minute hour day-of-month
month day-of-week" in UTC (the app runs with ``enable_utc``). The entry sends
the re-inference task with no arguments, so the model alias it follows
(``IMGQ_MODEL``, ``production`` by default) is resolved when it runs, not
when beat started.

The reconciler runs every ``IMGQ_RECONCILE_INTERVAL`` seconds; a run that
waited longer than that in the queue expires instead of piling up.
"""

from __future__ import annotations

from typing import Any

from celery.schedules import ParseException, crontab

from imgq.config import Settings
from imgq.errors import ConfigError

REINFER_TASK = "imgq.reinfer"
REINFER_ENTRY = "reinfer-production"
RECONCILE_TASK = "imgq.reconcile"
RECONCILE_ENTRY = "reconcile"
BEAT_SCHEDULE_FILE = "beat-schedule"
CRONTAB_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


def parse_crontab(text: str) -> crontab:
    """A crontab from "m h dom mon dow"; ConfigError if it is not one."""
    fields = text.split()
    if len(fields) != len(CRONTAB_FIELDS):
        raise ConfigError(
            f"IMGQ_REINFER_SCHEDULE={text!r} needs 5 fields "
            "(minute hour day-of-month month day-of-week), "
            f"not {len(fields)}"
        )
    try:
        return crontab(**dict(zip(CRONTAB_FIELDS, fields, strict=True)))
    except (ValueError, ParseException) as error:
        raise ConfigError(
            f"IMGQ_REINFER_SCHEDULE={text!r} is not a valid crontab: {error}"
        ) from error


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The ``beat_schedule`` of the app: re-inference and the reconciler."""
    return {
        REINFER_ENTRY: {
            "task": REINFER_TASK,
            "schedule": parse_crontab(settings.reinfer_schedule),
        },
        RECONCILE_ENTRY: {
            "task": RECONCILE_TASK,
            "schedule": float(settings.reconcile_interval),
            "options": {"expires": float(settings.reconcile_interval)},
        },
    }
