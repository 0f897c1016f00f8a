"""What every streamae command shares: error handling, common options, progress display.

Library errors (:class:`streamae.errors.StreamaeError`) become one plain line on stderr
and the error's exit code (2 usage, 1 runtime, 3 interrupted); anything unexpected
becomes one line asking for ``--debug``, which shows the full traceback instead.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import click

from streamae.errors import EXIT_RUNTIME, StreamaeError

EXIT_CODES_HELP = "Exit codes: 0 success, 1 runtime error, 2 usage error, 3 stopped by a signal."


@contextlib.contextmanager
def reported_errors(debug: bool) -> Iterator[None]:
    """Turn expected failures into one line on stderr and the documented exit code."""
    try:
        yield
    except StreamaeError as error:
        if debug:
            raise
        click.echo(f"Error: {error}", err=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        if debug:
            raise
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except MemoryError:
        if debug:
            raise
        click.echo(
            "Error: out of memory; lower --chunk-rows or --memory-budget, or use a larger node.",
            err=True,
        )
        sys.exit(EXIT_RUNTIME)
    except Exception as error:  # noqa: BLE001 - the last line of defence of a CLI
        if debug:
            raise
        click.echo(
            f"Error: internal error ({type(error).__name__}: {error}); "
            "rerun with --debug for the traceback and report it.",
            err=True,
        )
        sys.exit(EXIT_RUNTIME)


def debug_option(function: Callable) -> Callable:
    """--debug: show tracebacks instead of one-line messages."""
    return click.option(
        "--debug", is_flag=True, help="Show the full traceback of any error (for bug reports)."
    )(function)


def quiet_option(function: Callable) -> Callable:
    """--quiet: no progress bars or per-step lines."""
    return click.option(
        "--quiet", "-q", is_flag=True, help="Print nothing but errors and the final summary."
    )(function)


def force_option(function: Callable) -> Callable:
    """--force: replace an existing output."""
    return click.option("--force", "-f", is_flag=True, help="Replace the output file if it exists.")(function)


def stderr_is_terminal() -> bool:
    """True when progress bars can redraw in place (stderr is a terminal)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
