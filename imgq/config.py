"""Every tunable of imgq, in one place.

Each setting has a default and a one-line description; the environment
overrides it with ``IMGQ_<NAME>`` (``IMGQ_BATCH_SIZE=256``). Lists are
separated by commas or the path separator, booleans read ``1/true/yes/on``.
``imgq config`` prints the settings in force.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from imgq.errors import ConfigError

ENV_PREFIX = "IMGQ_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF"}


def _setting(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] = (),
    required: bool = False,
) -> Any:
    """A dataclass field that carries its description for ``imgq config``.

    ``minimum`` and ``maximum`` bound a number, ``choices`` lists the values a
    string may take, and ``required`` refuses an empty string or list.
    """
    metadata = {
        "help": help,
        "minimum": minimum,
        "maximum": maximum,
        "choices": choices,
        "required": required,
    }
    if isinstance(default, list | tuple):
        return field(default_factory=lambda: tuple(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """The settings in force; build with :func:`get_settings` or ``from_env``."""

    data_dir: Path = _setting(
        Path("imgq-data"), "Folder for the embedded database, models and reports."
    )
    database_url: str = _setting(
        "", "SQLAlchemy URL; empty means SQLite at <data_dir>/imgq.db."
    )
    broker_url: str = _setting(
        "redis://127.0.0.1:6379/0",
        "Celery broker; 'filesystem://' selects the embedded queue in data_dir.",
        required=True,
    )
    redis_password: str = _setting(
        "", "Password added to a redis:// broker URL that carries none."
    )
    model: str = _setting(
        "production",
        "Model version (number) or alias the producer submits to.",
        required=True,
    )
    model_dir: Path = _setting(
        Path(""), "Folder of saved models; empty means <data_dir>/models."
    )
    report_dir: Path = _setting(
        Path(""), "Folder for rendered reports; empty means <data_dir>/reports."
    )
    batch_size: int = _setting(
        512,
        "Images per forward pass; the compiled shape, the last batch is padded.",
        minimum=1,
    )
    chunk_size: int = _setting(
        2048,
        "Image ids per queue message; a worker works a chunk in batches.",
        minimum=1,
    )
    decode_threads: int = _setting(
        0,
        "Threads decoding images while the model runs the previous batch; 0 means "
        "one less than the CPU count, at most 8 (the model needs cores too).",
        minimum=0,
    )
    fresh_queue: str = _setting(
        "imgq.fresh", "Queue for freshly submitted jobs.", required=True
    )
    background_queue: str = _setting(
        "imgq.background",
        "Queue for re-inference; served after the fresh queue.",
        required=True,
    )
    visibility_timeout: int = _setting(
        3600,
        "Seconds before Redis re-delivers an unacknowledged message; keep it "
        "above the longest batch.",
        minimum=1,
    )
    max_attempts: int = _setting(
        5,
        "Deliveries of one chunk before its images are recorded as failed.",
        minimum=1,
    )
    retry_backoff: float = _setting(
        2.0,
        "First delay in seconds before a chunk retries a database error.",
        minimum=0,
    )
    retry_backoff_max: float = _setting(
        60.0, "Longest delay in seconds between retries of a chunk.", minimum=0
    )
    allowed_roots: tuple[str, ...] = _setting(
        [], "Folders images may come from; empty allows the current folder only."
    )
    allowed_formats: tuple[str, ...] = _setting(
        ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"],
        "Image formats the worker decodes; others are refused before decoding.",
        required=True,
    )
    max_image_pixels: int = _setting(
        50_000_000,
        "Images with more pixels are failures (decompression bombs).",
        minimum=1,
    )
    max_image_bytes: int = _setting(
        200_000_000,
        "Files larger than this are failures without being read.",
        minimum=1,
    )
    low_confidence: float = _setting(
        0.6,
        "Predictions below this confidence count as low-confidence.",
        minimum=0,
        maximum=1,
    )
    reinfer_schedule: str = _setting(
        "0 2 * * *",
        "Crontab (min hour day month weekday) of scheduled re-inference.",
        required=True,
    )
    reconcile_interval: int = _setting(
        600,
        "Seconds between reconciler runs that re-queue images left unfinished.",
        minimum=1,
    )
    reconcile_grace: int = _setting(
        3600,
        "Seconds an image may stay without result before it is re-queued.",
        minimum=0,
    )
    watch_interval: float = _setting(
        1.0, "Seconds between scans of a watched folder.", minimum=0.01
    )
    watch_settle: float = _setting(
        2.0,
        "Seconds a file's size must stay unchanged before it is ingested.",
        minimum=0,
    )
    watch_batch_wait: float = _setting(
        5.0,
        "Longest wait in seconds before a partial watch batch is submitted.",
        minimum=0,
    )
    mixed_precision: bool = _setting(False, "Run the model in mixed float16 on a GPU.")
    gpu: int = _setting(
        -1, "GPU index a worker uses; -1 lets TensorFlow choose.", minimum=-1
    )
    slow_model_seconds: float = _setting(
        0.0, "Extra sleep per batch, for tests that hold a batch in flight.", minimum=0
    )
    metrics_port: int = _setting(
        0,
        "Port of a worker's Prometheus endpoint; 0 turns it off.",
        minimum=0,
        maximum=65535,
    )
    log_level: str = _setting(
        "INFO", "Logging level for all imgq processes.", choices=LOG_LEVELS
    )

    def __post_init__(self) -> None:
        # Spellings people use for formats and levels, in Pillow's and
        # logging's own names.
        formats = tuple(
            FORMAT_ALIASES.get(name.upper(), name.upper())
            for name in self.allowed_formats
        )
        object.__setattr__(self, "allowed_formats", formats)
        object.__setattr__(self, "log_level", self.log_level.upper())
        for setting in dataclasses.fields(self):
            _check(setting, getattr(self, setting.name))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the defaults, overridden by ``IMGQ_*`` variables."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + setting.name.upper())
            if raw is not None:
                values[setting.name] = _parse(setting, raw)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed."""
        return dataclasses.replace(self, **changes)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'imgq.db').resolve()}"

    @property
    def resolved_model_dir(self) -> Path:
        return (
            self.model_dir
            if str(self.model_dir) not in ("", ".")
            else (self.data_dir / "models")
        )

    @property
    def resolved_report_dir(self) -> Path:
        return (
            self.report_dir
            if str(self.report_dir) not in ("", ".")
            else (self.data_dir / "reports")
        )

    @property
    def resolved_decode_threads(self) -> int:
        if self.decode_threads:
            return self.decode_threads
        return max(1, min(8, (os.cpu_count() or 2) - 1))

    @property
    def resolved_broker_url(self) -> str:
        url = self.broker_url
        if self.redis_password and url.startswith("redis://") and "@" not in url:
            url = url.replace("redis://", f"redis://:{self.redis_password}@", 1)
        return url

    @property
    def resolved_allowed_roots(self) -> tuple[Path, ...]:
        roots = self.allowed_roots or (os.getcwd(),)
        return tuple(Path(root).expanduser().resolve() for root in roots)

    def describe(self) -> list[tuple[str, str, str]]:
        """(environment variable, value, help) for every setting."""
        rows = []
        for setting in dataclasses.fields(self):
            value = getattr(self, setting.name)
            if isinstance(value, tuple):
                value = ",".join(value)
            rows.append(
                (
                    ENV_PREFIX + setting.name.upper(),
                    str(value),
                    setting.metadata["help"],
                )
            )
        return rows


def _parse(setting: dataclasses.Field[Any], raw: str) -> Any:
    name = ENV_PREFIX + setting.name.upper()
    kind = setting.type
    try:
        if kind == "bool":
            if raw.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if raw.strip().lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw)
        if kind.startswith("tuple"):
            separators = raw.replace(os.pathsep, ",")
            return tuple(part.strip() for part in separators.split(",") if part.strip())
        return raw
    except ValueError as error:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind}") from error


def _check(setting: dataclasses.Field[Any], value: Any) -> None:
    """Raise ConfigError unless ``value`` is within the setting's bounds."""
    name = ENV_PREFIX + setting.name.upper()
    rules = setting.metadata
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} is not a finite number")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if rules["minimum"] is not None and value < rules["minimum"]:
            raise ConfigError(
                f"{name}={value!r} is below its minimum {rules['minimum']}"
            )
        if rules["maximum"] is not None and value > rules["maximum"]:
            raise ConfigError(
                f"{name}={value!r} is above its maximum {rules['maximum']}"
            )
    if rules["required"] and not value:
        raise ConfigError(f"{name} must not be empty")
    if rules["choices"] and value not in rules["choices"]:
        choices = ", ".join(rules["choices"])
        raise ConfigError(f"{name}={value!r} is not one of {choices}")


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings.from_env()
