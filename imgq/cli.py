"""The ``imgq`` command: one entry point, a subcommand per task.

Each part of imgq keeps its commands in its own ``cli`` module; this module
gathers them, sets up logging and turns imgq's errors into a one-line
message and a documented exit code (see :mod:`imgq.errors`).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click
import sqlalchemy.exc

from imgq import __version__
from imgq.config import get_settings
from imgq.errors import EXIT_DATABASE, ImgqError
from imgq.logs import configure_logging

# Keep TensorFlow's C++ start-up chatter out of the user's terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

log = logging.getLogger(__name__)

COMMAND_MODULES = (
    "imgq.db.cli",
    "imgq.models.cli",
    "imgq.producer.cli",
    "imgq.worker.cli",
    "imgq.worker.reinfer_cli",
    "imgq.worker.reconcile_cli",
    "imgq.report.cli",
    "imgq.ops.cli",
)


class ImgqGroup(click.Group):
    """A click group that reports ImgqError as a message and an exit code."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ImgqError as error:
            click.echo(f"imgq: error: {error}", err=True)
            sys.exit(error.exit_code)
        except sqlalchemy.exc.OperationalError as error:
            # the database is down, unreachable, or refuses the connection
            reason = str(error.orig or error).strip().splitlines()[0]
            click.echo(f"imgq: error: database unavailable: {reason}", err=True)
            sys.exit(EXIT_DATABASE)


@click.group(cls=ImgqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="imgq")
@click.option(
    "--log-level",
    envvar="IMGQ_LOG_LEVEL",
    default=None,
    help="DEBUG, INFO, WARNING or ERROR (default: the IMGQ_LOG_LEVEL setting).",
)
def main(log_level: str | None) -> None:
    """imgq classifies images in bulk with a CNN and keeps every answer in SQL.

    Train a model, promote it, submit images, let workers classify them,
    then review the wrong and least confident answers in a report.
    Every setting can be overridden with an IMGQ_* environment variable;
    'imgq config' lists them.
    """
    if log_level:
        # the setting, so that pool processes, beat and every process imgq
        # starts log at the same level
        os.environ["IMGQ_LOG_LEVEL"] = log_level
        get_settings.cache_clear()
    configure_logging(get_settings().log_level)


@main.command("config")
def show_config() -> None:
    """Print every setting in force, its environment variable and meaning."""
    for variable, value, description in get_settings().describe():
        click.echo(f"{variable}={value}")
        click.echo(f"    {description}")


def _register_commands() -> None:
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        for command in module.commands:
            main.add_command(command)


_register_commands()
