"""The exceptions streamae raises for expected failures.

Every expected failure (a missing file, a wrong dataset, non-finite values, a bad
option) is one of these, carrying one plain sentence that names the file, what was
found and what to do.  The command line prints the sentence and exits with
``exit_code``: 2 for usage errors (the command was given something it does not take),
1 for runtime errors (something went wrong while working), 3 for :class:`Interrupted`
(only training stops on a signal with a checkpoint; elsewhere Ctrl-C is a plain
``KeyboardInterrupt``, which the command line reports with exit code 130).  Each class also inherits
the matching built-in, so library callers can catch ``FileNotFoundError`` or
``ValueError`` as usual.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 3


class StreamaeError(Exception):
    """Base of all expected streamae failures; ``str(error)`` is the user message."""

    exit_code: int = EXIT_RUNTIME


class UsageError(StreamaeError, ValueError):
    """The command was given an option value or input it does not take (exit code 2).

    ``parameter`` names the library parameter at fault, when there is one, so the
    command line can say which flag to change (the library never speaks of flags).
    """

    exit_code = EXIT_USAGE

    def __init__(self, message: str = "", *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


class InputFileError(UsageError):
    """An input file is missing or is not what the command reads (exit code 2)."""


class MissingInputError(InputFileError, FileNotFoundError):
    """An input path does not exist (exit code 2)."""


class OutputExistsError(UsageError, FileExistsError):
    """The output exists and ``force`` was not given (exit code 2)."""


class DataError(StreamaeError, ValueError):
    """The data holds values the computation cannot use, found while working (exit 1)."""


class StorageError(StreamaeError, OSError):
    """Reading or writing failed part-way: disk full, truncated file (exit code 1)."""


class Interrupted(StreamaeError):
    """A signal asked the run to stop; a checkpoint was written (exit code 3)."""

    exit_code = EXIT_INTERRUPTED
