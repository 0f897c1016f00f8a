"""``streamae info``: a readable summary of a patch file, a model file or any HDF5 file."""

from __future__ import annotations

import json
from pathlib import Path

import click

from streamae.options import INFO

from .common import EXIT_CODES_HELP, reported_errors, say, spec_options


@click.command(
    short_help="Summarise a patch, model, features or other HDF5 file.",
    epilog=EXIT_CODES_HELP,
)
@click.argument("file", required=False, type=click.Path(dir_okay=True, path_type=Path))
@spec_options(INFO)
def info(file: Path | None, as_json: bool, dataset: str, host: bool, debug: bool) -> None:
    """Summarise FILE: a patch file, a model file, a features file or any other HDF5 file.

    Patch files: shape, dtype, chunking, compression, patch shape, normalisation, seed and
    sources.  Model files: hyperparameters, iterations, the final J and its terms, the mean
    activation and the data trained on.  Of patch and features files only the metadata is
    read, never the rows; a model file is loaded whole (its weights are checked).
    --dataset other than /patches describes that dataset of any HDF5 file as training data.
    With --host (and no FILE): this host's CPU, vector width, BLAS and versions, and what
    products='auto' measured and chose here.
    """
    with reported_errors(debug, INFO):
        from streamae.errors import UsageError

        if host:
            if file is not None:
                raise UsageError(f"give FILE or --host, not both (FILE was {file}).")
            _host(as_json)
            return
        if file is None:
            raise UsageError("give a FILE to describe, or --host to describe this host.")
        from streamae.describe import describe, format_description

        description = describe(file, dataset=None if dataset == INFO["dataset"].default else dataset)
        if as_json:
            say(json.dumps(description, indent=2, sort_keys=False))
        else:
            say(format_description(description))


def _host(as_json: bool) -> None:
    """Print this host's description and calibrations."""
    from streamae.compute.calibration import format_host_report, host_report

    report = host_report()
    say(json.dumps(report, indent=2) if as_json else format_host_report(report))
