"""``streamae export``: a model's weights and hyperparameters as .npz, .mat or a folder of .npy."""

from __future__ import annotations

import click

from streamae.options import EXPORT

from .common import debug_option, force_option, reported_errors, spec_options


@click.command(
    short_help="Write a model's weights as .npz, .mat or a folder of .npy files.",
    epilog="Exit codes: 0 success, 1 runtime error, 2 usage error.",
)
@click.argument("model", type=click.Path(dir_okay=True, path_type=str))
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=str),
    required=True,
    help="weights.npz, weights.mat or a folder name (npy-dir).",
)
@spec_options(EXPORT, "format")
@force_option
@debug_option
def export(model: str, output: str, format: str | None, force: bool, debug: bool) -> None:  # noqa: A002
    """Write MODEL's W1, b1, W2, b2 and hyperparameters to OUTPUT.

    The .mat file also holds theta = [W1(:); W2(:); b1(:); b2(:)] (column-major), the
    order of the UFLDL MATLAB starter code, so the notes' own functions take it.
    Example: `streamae export model.h5 -o weights.mat`.
    """
    with reported_errors(debug):
        from streamae.export import export_weights, format_of

        path = export_weights(model, output, format=format, force=force)
        click.echo(f"Wrote {path} ({format_of(output, format)}).")
