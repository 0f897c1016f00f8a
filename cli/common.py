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
from streamae.text import printable

EXIT_CODES_HELP = "Exit codes: 0 success, 1 runtime error, 2 usage error, 3 stopped by a signal."


@contextlib.contextmanager
def reported_errors(debug: bool) -> Iterator[None]:
    """Turn expected failures into one line on stderr and the documented exit code."""
    try:
        yield
    except StreamaeError as error:
        if debug:
            raise
        # The last line of defence: no escape sequence from a file reaches the terminal.
        click.echo(f"Error: {printable(error, None)}", err=True)
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
            "Error: out of memory; use a larger node, or lower the memory the command uses (for "
            "train: --chunk-rows or --memory-budget).",
            err=True,
        )
        sys.exit(EXIT_RUNTIME)
    except Exception as error:  # noqa: BLE001 - the last line of defence of a CLI
        if debug:
            raise
        click.echo(
            f"Error: internal error ({type(error).__name__}: {printable(error)}); "
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


def _click_type(option):
    """The click type that parses ``option``'s values from text."""
    if option.choices is not None:
        return click.Choice(list(option.choices))
    if option.kind is int:
        if option.low is not None or option.high is not None:
            return click.IntRange(
                min=None if option.low is None else int(option.low),
                max=None if option.high is None else int(option.high),
                min_open=option.low_open,
                max_open=option.high_open,
            )
        return int
    if option.kind is float:
        return float  # the library checks finiteness and bounds, naming the parameter
    if option.kind == "path":
        return click.Path(path_type=str)
    return str


def spec_options(option_set, *names: str) -> Callable:
    """Decorator: click options for ``names`` (default: every CLI option) of ``option_set``.

    Each option's flag, type, default and help come from :mod:`streamae.options`, so a
    command declares nothing twice; the callback receives the library's parameter names.
    """
    chosen = [option_set[name] for name in names] if names else [o for o in option_set if o.cli]

    def decorate(function: Callable) -> Callable:
        for option in reversed(chosen):
            declarations = [option.cli_flag] + ([option.short] if option.short else [])
            if option.kind is bool:
                function = click.option(*declarations, option.name, is_flag=True, help=option.help)(function)
                continue
            help_text = option.help + (f" [{option.unit}]" if option.unit else "")
            function = click.option(
                *declarations,
                option.name,
                type=_click_type(option),
                default=option.default,
                show_default=option.default is not None,
                help=help_text,
            )(function)
        return function

    return decorate
