"""``streamae visualize``: the notes' picture of the learned features, and training plots."""

from __future__ import annotations

from pathlib import Path

import click

from streamae.options import VISUALIZE_MORE

from .common import debug_option, force_option, quiet_option, reported_errors, spec_options


@click.command(
    short_help="Draw a model's features as a PNG tile grid; training plots.",
    epilog="Exit codes: 0 success, 1 runtime error, 2 usage error.",
)
@click.argument("model", type=click.Path(dir_okay=True, path_type=Path))
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    help="PNG of the features: one tile per hidden unit, the input that activates it most.",
)
@click.option(
    "--cols",
    type=click.IntRange(min=1),
    metavar="N",
    default=None,
    help="Tiles per row of the grid.  [default: ceil(sqrt(hidden units)), a near-square grid]",
)
@click.option(
    "--scale",
    type=click.IntRange(1, 64),
    metavar="K",
    default=4,
    show_default=True,
    help="Enlarge the features PNG by repeating each pixel K times in each direction.",
)
@click.option(
    "--sort",
    type=click.Choice(["none", "activation", "norm"]),
    default="none",
    show_default=True,
    help="Order of the tiles: as stored, by mean activation rho_hat (largest first), "
    "or by the norm of the unit's weights (largest first).",
)
@click.option(
    "--patch-shape",
    metavar="HxW[xC]",
    default=None,
    help="Shape to draw each unit's weights in, such as 8x8 or 8x8x3.  [default: the shape "
    "stored in the model; without one, a square gray patch when the input size is a perfect "
    "square, otherwise an error]",
)
@click.option(
    "--curves",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write a PNG of J and its three terms against the iteration (log axis), "
    "with the gradient norm below.",
)
@click.option(
    "--activations",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write a PNG histogram of the final mean activations rho_hat, target rho marked.",
)
@spec_options(VISUALIZE_MORE, "space", "reconstructions", "pairs", "seed")
@force_option
@quiet_option
@debug_option
def visualize(
    model: Path,
    output: Path | None,
    cols: int | None,
    scale: int,
    sort: str,
    patch_shape: str | None,
    curves: Path | None,
    activations: Path | None,
    space: str | None,
    reconstructions: str | None,
    pairs: int,
    seed: int,
    force: bool,
    quiet: bool,
    debug: bool,
) -> None:
    """Draw a trained MODEL's features as a PNG tile grid, and optionally its training plots.

    Hidden unit i is drawn as W1[i] / ||W1[i]||, reshaped to the patch shape, each tile
    stretched so that 0 is mid-gray; colour patches are drawn in colour.
    Example: `streamae visualize model.h5 -o features.png --curves curves.png`.
    """
    with reported_errors(debug):
        from streamae.errors import UsageError
        from streamae.io.atomic import check_output_path
        from streamae.io.modelfile import load_model
        from streamae.render import parse_patch_shape, plot_activations, plot_curves, render_features

        outputs = [path for path in (output, curves, activations) if path is not None]
        if not outputs:
            raise UsageError(
                f"{model}: nothing to write; give -o features.png, --curves PATH or --activations PATH."
            )
        if len({path.resolve() for path in outputs}) != len(outputs):
            raise UsageError("-o, --curves and --activations name the same file; give each its own path.")
        shape = parse_patch_shape(patch_shape) if patch_shape is not None else None
        # Refuse unwritable outputs before reading anything, and never write over the model.
        for path in outputs:
            check_output_path(path, force=force, inputs=(model,))
        loaded = load_model(model)
        written = []
        if output is not None and reconstructions is not None:
            from streamae.reconstruction_grid import render_reconstructions

            pictured = render_reconstructions(
                loaded,
                reconstructions,
                output,
                pairs=pairs,
                seed=seed,
                cols=cols,
                scale=scale,
                patch_shape=shape,
                name=str(model),
                force=force,
                inputs=(model,),
            )
            written.append(
                f"{output}: {pictured.rows.size} patches of {reconstructions} beside their reconstructions"
            )
        elif output is not None:
            grid = render_features(
                loaded,
                output,
                cols=cols,
                scale=scale,
                sort=sort,
                patch_shape=shape,
                name=str(model),
                force=force,
                inputs=(model,),
                space=space,
            )
            height, width = grid.image.shape[:2]
            rows, columns = grid.grid
            written.append(
                f"{output}: {loaded.n_hidden} features in {rows} x {columns} tiles of "
                f"{'x'.join(map(str, grid.tile_shape))}, {width} x {height} pixels"
            )
        if curves is not None:
            plot_curves(loaded, curves, name=str(model), force=force, inputs=(model,))
            written.append(f"{curves}: training curves over {len(loaded.history['cost'])} iterations")
        if activations is not None:
            plot_activations(loaded, activations, name=str(model), force=force, inputs=(model,))
            written.append(f"{activations}: histogram of {loaded.n_hidden} mean activations")
        for line in written:
            click.echo(f"Wrote {line}.")
