"""``streamae data``: list the sample data that ships, or copy it where the exercises expect it."""

from __future__ import annotations

import click

from streamae.options import SAMPLE_DATA

from .common import EXIT_CODES_HELP, reported_errors, say, spec_options


@click.command(
    short_help="List the sample data that ships (photos, MNIST digits, audio), or copy it.",
    epilog=EXIT_CODES_HELP,
)
@click.argument("names", nargs=-1)
@spec_options(SAMPLE_DATA)
def data(names: tuple[str, ...], output: str, force: bool, debug: bool) -> None:
    """Without NAMES, list the samples; with NAMES (photos, mnist, audio), copy each to OUTPUT/NAME/.

    The samples are installed with streamae, so the README's exercises run offline:
    `streamae data photos mnist` makes photos/ and mnist/ in the current folder, each
    with its licence note (LICENSES.md).
    """
    with reported_errors(debug, SAMPLE_DATA):
        from streamae.sampledata import copy_samples, list_samples

        if not names:
            for entry in list_samples():
                size = f"{entry['bytes'] / 1e3:>6,.0f} kB"
                click.echo(f"{entry['name']:<7} {size}  {entry['what']} ({entry['licence']})")
                click.echo(f"{'':<17}{', '.join(entry['files'])} in {entry['path']}")
            click.echo("Copy with `streamae data NAME... [-o FOLDER]`.")
            return
        for folder in copy_samples(names, output, force=force):
            say(f"Wrote {folder}/")
