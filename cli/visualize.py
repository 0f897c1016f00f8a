"""``streamae visualize``: the notes' picture of the learned features, and training plots."""

from __future__ import annotations

from pathlib import Path

import click

from streamae.options import VISUALIZE

from .common import EXIT_CODES_HELP, reported_errors, say, spec_options


@click.command(
    short_help="Draw a model's features as a PNG tile grid; training plots.",
    epilog=EXIT_CODES_HELP,
)
@click.argument("model", type=click.Path(dir_okay=True, path_type=Path))
@spec_options(VISUALIZE)
def visualize(model: Path, quiet: bool, debug: bool, **values) -> None:
    """Draw a trained MODEL's features as a PNG tile grid, and optionally its training plots.

    Hidden unit i is drawn as W1[i] / ||W1[i]||, reshaped to the patch shape, each tile
    stretched so that 0 is mid-gray; colour patches are drawn in colour.  A model of 1-D
    windows (audio: patch shape 1 x samples x channels) is drawn as one small line plot per
    unit instead, with --spectra its magnitude spectrum below.
    Example: `streamae visualize model.h5 -o features.png --curves curves.png`.
    """
    with reported_errors(debug, VISUALIZE):
        from streamae.io.modelfile import load_model
        from streamae.options import VisualizeOptions
        from streamae.reconstruction_grid import is_one_dimensional
        from streamae.render import plot_activations, plot_curves

        options = VisualizeOptions(**values)
        output, curves, activations = _checked_outputs(model, options)
        loaded = load_model(model)
        # Audio windows are stored as 1 x samples x channels patches: a 1-D model.
        signals = is_one_dimensional(loaded.patch_shape) and options.patch_shape is None
        refuse_unused_drawing(options, str(model), signals=signals, drawing=output is not None)
        written = []
        if output is not None:
            written.append(_draw(model, loaded, output, options, signals))
        if curves is not None:
            plot_curves(loaded, curves, name=str(model), force=options.force, inputs=(model,))
            written.append(f"{curves}: training curves over {len(loaded.history['cost'])} iterations")
        if activations is not None:
            plot_activations(loaded, activations, name=str(model), force=options.force, inputs=(model,))
            written.append(f"{activations}: histogram of {loaded.n_hidden} mean activations")
        for line in written:
            say(f"Wrote {line}.")


def _checked_outputs(model: Path, options) -> tuple[Path | None, Path | None, Path | None]:
    """(-o, --curves, --activations) as paths, each checked writable before anything is read."""
    from streamae.errors import UsageError
    from streamae.io.atomic import check_output_path

    named = [
        None if path is None else Path(path) for path in (options.output, options.curves, options.activations)
    ]
    outputs = [path for path in named if path is not None]
    if not outputs:
        raise UsageError(
            f"{model}: nothing to write; give -o features.png, --curves PATH or --activations PATH."
        )
    for path in outputs:  # never write over the model
        check_output_path(path, force=options.force, inputs=(model,))
    if len({path.resolve() for path in outputs}) != len(outputs):
        raise UsageError("-o, --curves and --activations name the same file; give each its own path.")
    return named[0], named[1], named[2]


# Options of the tile grid that the line plots of a 1-D model (its features and its
# reconstructions alike) do not use.
GRID_ONLY = ("cols", "scale", "sort", "space")


def refuse_unused_drawing(options, model: str, *, signals: bool, drawing: bool) -> None:
    """Refuse an option the chosen drawing would ignore (every option acts or is refused)."""
    from streamae.errors import UsageError
    from streamae.options import VISUALIZE

    if options.spectra and not signals:
        raise UsageError(
            f"spectra applies to models of 1-D signals (audio windows), not to {model}; leave it out.",
            parameter="spectra",
        )
    if signals and drawing:
        for name in GRID_ONLY:
            if getattr(options, name) != VISUALIZE[name].default:
                raise UsageError(
                    f"{name} applies to the tile grid of image features, but the units of {model} are "
                    "1-D signals drawn as line plots; leave it out.",
                    parameter=name,
                )


def _draw(model: Path, loaded, output: Path, options, signals: bool) -> str:
    """Draw -o: reconstructions, a 1-D model's line plots or the feature grid; the line to report."""
    common = {"force": options.force, "inputs": (model,)}
    if options.reconstructions is not None:
        from streamae.reconstruction_grid import render_reconstructions

        pictured = render_reconstructions(
            loaded, options.reconstructions, output, pairs=options.pairs, seed=options.seed,
            cols=options.cols, scale=options.scale, patch_shape=options.patch_shape, name=str(model),
            **common,
        )  # fmt: skip
        shown = pictured.shown if hasattr(pictured, "shown") else pictured.rows.size
        how = "drawn over" if hasattr(pictured, "shown") else "beside"
        return f"{output}: {shown} patches of {options.reconstructions} {how} their reconstructions"
    if signals:
        from streamae.render_signals import plot_signal_features, sample_rate

        rate = sample_rate((loaded.data or {}).get("path"))
        plot = plot_signal_features(
            loaded.W1, output, spectra=options.spectra, rate=rate, name=str(model), **common
        )
        return (
            f"{output}: {plot.shown} units of {loaded.n_visible} samples as line plots"
            + (" with spectra" if options.spectra else "")
            + f" (time in {plot.time_unit}), {plot.size[0]} x {plot.size[1]} pixels"
        )
    from streamae.render import render_features

    grid = render_features(
        loaded, output, cols=options.cols, scale=options.scale, sort=options.sort,
        patch_shape=options.patch_shape, name=str(model), space=options.space, **common,
    )  # fmt: skip
    height, width = grid.image.shape[:2]
    rows, columns = grid.grid
    return (
        f"{output}: {loaded.n_hidden} features in {rows} x {columns} tiles of "
        f"{'x'.join(map(str, grid.tile_shape))}, {width} x {height} pixels"
    )
