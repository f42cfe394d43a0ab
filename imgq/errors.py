"""The one exception tree of imgq and the exit codes the CLI maps it to."""

from __future__ import annotations

# Exit codes of the ``imgq`` command; scripts can rely on them.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_INPUT = 4
EXIT_MODEL = 5
EXIT_QUEUE = 6
EXIT_DATABASE = 7
EXIT_UNHEALTHY = 8


class ImgqError(Exception):
    """Raised when imgq cannot do what was asked; the root of every imgq error."""

    exit_code = EXIT_FAILURE


class ConfigError(ImgqError):
    """Raised when a setting or an environment variable has an invalid value."""

    exit_code = EXIT_CONFIG


class InputError(ImgqError):
    """Raised when a path, manifest or dataset given by the user is unusable."""

    exit_code = EXIT_INPUT


class PathRefusedError(InputError):
    """Raised when a path lies outside the allowed roots."""


class DatasetError(InputError):
    """Raised when a training dataset is empty, has one class or cannot be read."""


class ImageError(ImgqError):
    """Raised when one image cannot be used; ``kind`` names the reason."""

    exit_code = EXIT_INPUT

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class ModelError(ImgqError):
    """Raised when a model is missing, corrupt, or unknown to the registry."""

    exit_code = EXIT_MODEL


class ModelIntegrityError(ModelError):
    """Raised when a model file's content hash differs from its registered one."""


class QueueError(ImgqError):
    """Raised when the broker cannot be reached or refuses a message."""

    exit_code = EXIT_QUEUE


class DatabaseError(ImgqError):
    """Raised when the database cannot be reached or is not at the current schema."""

    exit_code = EXIT_DATABASE


class UnhealthyError(ImgqError):
    """Raised when a health check finds a part of the system down."""

    exit_code = EXIT_UNHEALTHY
