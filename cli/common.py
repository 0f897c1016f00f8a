"""What every streamae command shares: error handling, common options, progress display.

Library errors (:class:`streamae.errors.StreamaeError`) become one plain line on stderr
and the error's exit code (2 usage, 1 runtime, 3 stopped by a signal while training;
Ctrl-C elsewhere exits 130), with settings said as flags; anything unexpected
becomes one line asking for ``--debug``, which shows the full traceback instead.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator

import click

from streamae.errors import EXIT_RUNTIME, Interrupted, StreamaeError
from streamae.text import printable

EXIT_CODES_HELP = "Exit codes: 0 success, 1 runtime error, 2 usage error, 130 interrupted (Ctrl-C)."
TRAIN_EXIT_CODES_HELP = (
    "Exit codes: 0 success, 1 runtime error, 2 usage error, 3 stopped by a signal while training "
    "(SIGTERM, SIGINT or SIGUSR1; a checkpoint was written, continue with --resume), "
    "130 interrupted (Ctrl-C) before training started."
)


def in_flags(message: str, parameter: str | None, option_set=None) -> str:
    """``message`` of an error about ``parameter`` with its opening name said as the flag.

    Only the parameter the error carries is looked at ("hidden must be ..." → "--hidden
    must be ..."); settings inside the message are already said as flags, since the
    library spelled them in the command line's vocabulary (:func:`streamae.options.setting`).
    """
    from streamae.options import COMMANDS

    if parameter is None or not message.startswith(parameter + " "):
        return message
    for each in ([option_set] if option_set is not None else []) + list(COMMANDS.values()):
        if parameter in each and each[parameter].cli:
            return each[parameter].cli_flag + message[len(parameter) :]
    return message


@contextlib.contextmanager
def reported_errors(
    debug: bool, option_set=None, again: Callable[[dict], str] | None = None
) -> Iterator[None]:
    """Turn expected failures into one line on stderr and the documented exit code.

    Within the block the library says settings as the flags of ``option_set``'s command
    (and, through ``again``, how to run the command again); an error about a parameter
    is reported by that parameter's flag.
    The process is configured for the kernels first (:func:`streamae.runtime.configure`),
    before the command imports any of them: the command line owns its process.
    Warnings raised meanwhile (NumPy's "overflow encountered", say) are held back: after a
    failure the one sentence stands alone; after a success each is said once as a
    ``warning:`` line.  Warnings the filters turn into errors (the test suite's) still raise.
    """
    from streamae.options import speaking_flags

    with warnings.catch_warnings(record=True) as held:
        try:
            from streamae.runtime.process import configure

            configure()
            with speaking_flags(option_set, again):
                yield
        except BaseException:
            held.clear()
            _report(debug, option_set)
    for message in dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in held):
        say(f"warning: {message}", err=True)


def _report(debug: bool, option_set) -> None:
    """Say the exception being handled as reported_errors promises (re-raised with --debug)."""
    try:
        raise
    except StreamaeError as error:
        if debug:
            raise
        # Under MPI the library marks an error every rank raised "silent" on all ranks but
        # one (streamae.runtime.mpi.one_rank_reports): print what it decided, once.
        if not getattr(error, "silent", False):
            label = "Stopped" if isinstance(error, Interrupted) else "Error"
            # The last line of defence: no escape sequence from a file reaches the terminal.
            message = in_flags(printable(error, None), getattr(error, "parameter", None), option_set)
            click.echo(f"{label}: {message}", err=True)
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


def say(message: object = "", err: bool = False) -> None:
    """``click.echo`` for text that may hold names from the user or from files: each line is
    made printable (an output named with escape codes is shown escaped, never obeyed)."""
    text = "\n".join(printable(line, None) for line in str(message).split("\n"))
    click.echo(text, err=err)


def stderr_is_terminal() -> bool:
    """True when progress bars can redraw in place (stderr is a terminal)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _click_type(option):
    """The click type that parses ``option``'s values from text.

    Only the syntax of numbers is checked here; ranges, and values the option parses
    itself (sizes such as ``12x8``, memory such as ``8G``), are checked by the library,
    whose one-sentence message names the parameter (said as the flag by
    :func:`reported_errors`).
    """
    if option.choices is not None:
        return click.Choice(list(option.choices))
    if option.parse is not None:
        return click.STRING
    if option.kind is int:
        return click.INT
    if option.kind is float:
        return click.FLOAT
    if option.kind == "path":
        return click.Path(path_type=str)
    return click.STRING


def _inverted(default):
    """Callback of a flag that sets its option to False (``--no-file-locking``)."""

    def convert(ctx, param, value):
        return False if value else default

    return convert


def spec_options(option_set, *names: str) -> Callable:
    """Decorator: click options for ``names`` (default: every CLI option) of ``option_set``.

    Each option's flag, type, default and help come from :mod:`streamae.options`, so a
    command declares nothing twice; the callback receives the library's parameter names.
    """
    chosen = [option_set[name] for name in names] if names else [o for o in option_set if o.cli]

    def decorate(function: Callable) -> Callable:
        for option in reversed(chosen):
            declarations = [option.cli_flag] + ([option.short] if option.short else [])
            help_text = option.help + (f" [{option.unit}]" if option.unit else "")
            if option.kind is bool:
                extra = {"callback": _inverted(option.default)} if option.inverted else {}
                function = click.option(*declarations, option.name, is_flag=True, help=help_text, **extra)(
                    function
                )
                continue
            show_default = option.show_default
            if show_default is None:
                show_default = option.default is not None
            function = click.option(
                *declarations,
                option.name,
                type=_click_type(option),
                default=option.default,
                show_default=show_default,
                metavar=option.metavar,
                required=option.required,
                help=help_text,
            )(function)
        return function

    return decorate
