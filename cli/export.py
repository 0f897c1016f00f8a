"""``streamae export``: a model's weights and hyperparameters as .npz, .mat or a folder of .npy."""

from __future__ import annotations

import click

from streamae.options import EXPORT

from .common import EXIT_CODES_HELP, reported_errors, say, spec_options


@click.command(
    short_help="Write a model's weights as .npz, .mat or a folder of .npy files.",
    epilog=EXIT_CODES_HELP,
)
@click.argument("model", type=click.Path(dir_okay=True, path_type=str))
@spec_options(EXPORT)
def export(model: str, output: str, quiet: bool, debug: bool, **options) -> None:
    """Write MODEL's W1, b1, W2, b2 and hyperparameters to OUTPUT.

    Every format names the hyperparameters alike (hidden, inputs, rho, beta, lambda,
    decoder, activation, iterations).  The .mat file is in the notes' layout (each
    channel's pixels column-major, R, G, B one after another) and holds theta =
    [W1(:); W2(:); b1(:); b2(:)], as the UFLDL starter code packs it, so the notes' own
    functions take it; .npz and the folder keep NumPy's C order of (height, width,
    colour).  See docs/export.md.
    Example: `streamae export model.h5 -o weights.mat`.
    """
    with reported_errors(debug, EXPORT):
        from streamae.export import export_weights, format_of

        path = export_weights(model, output, **options)
        say(f"Wrote {path} ({format_of(output, options['format'])}).")
