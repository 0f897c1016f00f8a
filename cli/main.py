"""The ``streamae`` command: a click group whose subcommands live one per module.

Heavy imports (NumPy, Numba, h5py) happen inside the commands, so ``streamae --help``
compiles nothing.
"""

from __future__ import annotations

import sys

import click

from streamae._version import __version__


class StreamaeGroup(click.Group):
    """The command group, saying click's own usage errors as one sentence with what to do.

    click prints "Usage: ...", "Try ... for help." and a sentence without a remedy; streamae
    promises one plain line naming the thing at fault and the fix, exit code 2.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            value = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.UsageError as error:
            command = error.ctx.command_path if error.ctx is not None else "streamae"
            from streamae.text import printable

            message = printable(click.unstyle(error.format_message()), 300).rstrip(".")
            click.echo(f"Error: {message}; check '{command} --help' for what it takes.", err=True)
            sys.exit(error.exit_code)
        except click.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
        except click.exceptions.Abort:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        sys.exit(value if isinstance(value, int) else 0)


@click.group(
    cls=StreamaeGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Exit codes: 0 success, 1 runtime error, 2 usage error, 3 train stopped by a signal "
    "(a checkpoint was written), 130 interrupted (Ctrl-C).",
)
@click.version_option(__version__, prog_name="streamae")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Learn sparse-autoencoder features from image patches far larger than memory.

    Typical use: `streamae extract images/ -o patches.h5`, then
    `streamae train patches.h5 -o model.h5`, then
    `streamae visualize model.h5 -o features.png`.  `streamae demo` runs all three on
    photographs that ship with the package.
    """
    _refuse_bad_thread_settings(ctx)


def _refuse_bad_thread_settings(ctx: click.Context) -> None:
    """Say what is wrong with NUMBA_NUM_THREADS before a command starts Numba (exit 2)."""
    import sys

    from streamae.errors import EXIT_USAGE
    from streamae.runtime.threads import thread_problem_found

    problem = thread_problem_found()
    if problem is not None and not ctx.resilient_parsing and not {"-h", "--help"} & set(sys.argv[1:]):
        click.echo(f"Error: {problem}", err=True)
        ctx.exit(EXIT_USAGE)


def _register() -> None:
    from . import demo, train

    cli.add_command(demo.demo)

    cli.add_command(train.train)
    cli.add_command(train.gradcheck)

    from . import encode, info, visualize

    cli.add_command(visualize.visualize)
    cli.add_command(encode.encode)
    cli.add_command(info.info)

    from . import extract

    cli.add_command(extract.extract)

    from . import export

    cli.add_command(export.export)

    from . import data

    cli.add_command(data.data)


_register()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="streamae")
