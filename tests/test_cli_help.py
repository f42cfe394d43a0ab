"""Every command and subcommand of ``imgq`` answers --help with its docstring.

The commands are found by walking the click tree, so a command added later is
covered without touching this file.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from imgq import __version__
from imgq.cli import main


def walk(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        context = click.Context(command)
        for name in command.list_commands(context):
            subcommand = command.get_command(context, name)
            assert subcommand is not None
            yield from walk(subcommand, (*path, name))


COMMANDS = list(walk(main))


def squeeze(text: str) -> str:
    """Text with every run of whitespace made one space, as help rewraps it."""
    return " ".join(text.split())


def test_the_tree_holds_the_foundation_commands() -> None:
    paths = {" ".join(path) for path, _ in COMMANDS}

    expected = {"config", "db", "db upgrade", "train", "evaluate", "models list"}
    assert expected <= paths
    assert "models promote" in paths


@pytest.mark.parametrize(
    ("path", "command"),
    COMMANDS,
    ids=[" ".join(("imgq", *path)) for path, _ in COMMANDS],
)
def test_help_exits_zero_and_prints_the_first_line_of_the_docstring(
    path: tuple[str, ...], command: click.Command
) -> None:
    first_line = inspect.cleandoc(command.help or "").split("\n")[0]
    assert first_line, f"imgq {' '.join(path)} has no docstring"

    result = CliRunner().invoke(main, [*path, "--help"])

    assert result.exit_code == 0, result.output
    assert squeeze(first_line) in squeeze(result.output)
    assert "Usage:" in result.output


def test_short_help_option_works_too() -> None:
    result = CliRunner().invoke(main, ["-h"])

    assert result.exit_code == 0
    assert "imgq classifies images in bulk" in result.output


def test_version_prints_the_package_version() -> None:
    result = CliRunner().invoke(main, ["--version"])

    assert result.exit_code == 0
    assert __version__ in result.output
