"""Pictures of a trained model: the notes' tile grid of features, and training plots.

The tile grid follows the notes' ``display_network``: hidden unit i is drawn as the input
of norm 1 that activates it most, x = W1[i] / ‖W1[i]‖, reshaped to the patch shape
(h, w, c); tiles sit in a near-square grid separated by a 1-pixel border; each tile is
contrast-stretched symmetrically about 0, so 0 is mid-gray whatever the tile's range.
Because the stretch is per tile, the unit-norm scaling does not change the picture; it
is kept so that :func:`normalized_features` returns the notes' quantity.

Plots use matplotlib's Agg canvas through :class:`matplotlib.figure.Figure` (never
pyplot), so they need no display and touch no global state.  Every plotting function
returns the data it drew, so tests and notebooks can check what the picture shows.
Every file is written through :func:`~streamae.io.atomic.atomic_output`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamae.errors import InputFileError, UsageError
from streamae.io.atomic import atomic_output
from streamae.io.modelfile import Model
from streamae.options import VISUALIZE, setting

# Gray levels of the tile grid.  A tile maps [-peak, peak] onto [1, 255] with 0 at 128,
# exactly symmetric; the border is 0, darker than any tile pixel, so it never blends
# into a tile (the notes draw the border at the darkest value, -1, too).
MID_GRAY = 128
HALF_RANGE = 127
BORDER_VALUE = 0
BORDER_PIXELS = 1

SPACES = ("input", "whitened")

# Every plot is this size, in pixels, so callers (and tests) know what they get.
PLOT_INCHES = (8.0, 6.0)
PLOT_DPI = 100
PLOT_PIXELS = (int(PLOT_INCHES[0] * PLOT_DPI), int(PLOT_INCHES[1] * PLOT_DPI))


# --------------------------------------------------------------------------- shapes


def parse_patch_shape(text: str) -> tuple[int, int, int]:
    """Parse ``HxW`` or ``HxWxC`` (``,`` also separates) into (h, w, c); c defaults to 1."""
    return VISUALIZE["patch_shape"].check(text)


def resolve_patch_shape(
    n_visible: int,
    stored: tuple[int, ...] | None,
    override: tuple[int, ...] | None,
    name: str,
) -> tuple[int, int, int]:
    """The (h, w, c) shape to draw a row of W1 (n,) in, with c 1 (gray) or 3 (RGB).

    ``override`` (the ``patch_shape`` parameter) wins over ``stored`` (the model's attribute);
    with neither, a perfect-square n is drawn as a square gray patch, anything else is
    refused.  ``name`` is the model file named in the messages.
    """
    if override is not None:
        shape = tuple(override) + (1,) * (3 - len(override))
        if math.prod(shape) != n_visible:
            raise UsageError(
                f"{name}: {setting('patch_shape', override, 'x'.join(map(str, override)))} holds "
                f"{math.prod(shape)} values but the model's rows hold {n_visible}; give a shape whose "
                f"product is {n_visible}."
            )
    elif stored is not None:
        shape = tuple(stored) + (1,) * (3 - len(stored))
    else:
        side = math.isqrt(n_visible)
        if side * side != n_visible:
            raise UsageError(
                f"{name}: the model stores no patch shape and its {n_visible} inputs are not a "
                f"square; pass {setting('patch_shape', 'HxW', 'HxW')} or HxWxC."
            )
        shape = (side, side, 1)
    if len(shape) != 3 or shape[2] not in (1, 3):
        raise UsageError(
            f"{name}: patch shape {'x'.join(map(str, shape))} has {shape[-1]} channels; only gray "
            "(1) and RGB (3) patches can be drawn; pass "
            f"{setting('patch_shape', 'HxWxC', 'HxWxC')} to choose another view."
        )
    return (int(shape[0]), int(shape[1]), int(shape[2]))


def grid_shape(n_tiles: int, cols: int | None = None) -> tuple[int, int]:
    """(rows, cols) of the tile grid: near-square (cols = ceil(sqrt(n))) unless given."""
    if n_tiles < 1:
        raise UsageError(f"there are no hidden units to draw (got {n_tiles}).")
    if cols is None:
        cols = math.isqrt(n_tiles)
        if cols * cols < n_tiles:
            cols += 1
    VISUALIZE["cols"].check(cols)
    return (-(-n_tiles // cols), cols)


def image_size(tile_shape: tuple[int, ...], grid: tuple[int, int], scale: int = 1) -> tuple[int, int]:
    """(height, width) in pixels of a grid of (rows, cols) tiles of (h, w, ...) with borders.

    One border pixel before every tile and after the last, in both directions, then
    everything repeated ``scale`` times.
    """
    rows, cols = grid
    h, w = tile_shape[0], tile_shape[1]
    return (
        scale * (BORDER_PIXELS + rows * (h + BORDER_PIXELS)),
        scale * (BORDER_PIXELS + cols * (w + BORDER_PIXELS)),
    )


# --------------------------------------------------------------------------- features


def normalized_features(W1: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """The notes' maximally activating inputs: W1 (s, n) -> (s, h, w, c) float64.

    Row i divided by its Euclidean norm, reshaped in C order to ``shape`` (h, w, c).  A
    row of zeros stays zeros (it has no preferred input).
    """
    W1 = np.asarray(W1, dtype=np.float64)
    norms = np.sqrt(np.sum(W1 * W1, axis=1, keepdims=True))
    safe = np.where(norms > 0.0, norms, 1.0)
    return (W1 / safe).reshape((W1.shape[0],) + tuple(shape))


def contrast_stretch(tile: np.ndarray) -> np.ndarray:
    """Gray levels of one tile (any shape) as uint8, symmetric about 0.

    value -> round(128 + 127 · value / max|tile|): 0 is 128, ±max|tile| are 255 and 1.
    An all-zero tile is uniformly 128.
    """
    tile = np.asarray(tile, dtype=np.float64)
    peak = float(np.max(np.abs(tile))) if tile.size else 0.0
    if peak == 0.0:
        return np.full(tile.shape, MID_GRAY, dtype=np.uint8)
    return np.rint(MID_GRAY + HALF_RANGE * (tile / peak)).astype(np.uint8)


def unit_order(model: Model, sort: str, name: str = "the model") -> np.ndarray:
    """Which unit goes in each tile, row-major: (s,) int64.

    ``none`` keeps the file's order; ``activation`` puts the most active units (largest
    ρ̂ⱼ, from the model's /rho_hat) first; ``norm`` the largest ‖W1[i]‖ first.  Ties keep
    the file's order.
    """
    VISUALIZE["sort"].check(sort)
    if sort == "none":
        return np.arange(model.n_hidden)
    if sort == "activation":
        if model.rho_hat is None:
            raise InputFileError(
                f"{name}: the model file has no /rho_hat to sort by activation; use "
                f"{setting('sort', 'norm')} or {setting('sort', 'none')}."
            )
        key = np.asarray(model.rho_hat, dtype=np.float64)
    else:
        key = np.linalg.norm(np.asarray(model.W1, dtype=np.float64), axis=1)
    return np.argsort(-key, kind="stable")


def tile_grid(
    tiles: np.ndarray, cols: int | None = None, scale: int = 1
) -> tuple[np.ndarray, tuple[int, int]]:
    """Lay tiles (k, h, w, c) out as one uint8 image; returns (image, (rows, cols)).

    The image is (H, W) for c = 1 and (H, W, 3) for c = 3, of the size
    :func:`image_size` gives; tile k sits at grid cell (k // cols, k % cols), cells
    without a tile hold the border value.  Each tile is contrast-stretched on its own.
    """
    VISUALIZE["scale"].check(scale)
    k, h, w, c = tiles.shape
    grid = grid_shape(k, cols)
    height, width = image_size((h, w), grid)
    canvas = np.full((height, width, c), BORDER_VALUE, dtype=np.uint8)
    for index in range(k):
        top, left = tile_origin(index, (h, w), grid)
        canvas[top : top + h, left : left + w] = contrast_stretch(tiles[index])
    if scale > 1:
        canvas = np.repeat(np.repeat(canvas, scale, axis=0), scale, axis=1)
    return (canvas[:, :, 0] if c == 1 else canvas), grid


def tile_origin(
    index: int, tile_shape: tuple[int, ...], grid: tuple[int, int], scale: int = 1
) -> tuple[int, int]:
    """(top, left) pixel of tile ``index`` in an image of ``grid`` (rows, cols) tiles."""
    row, col = divmod(index, grid[1])
    h, w = tile_shape[0], tile_shape[1]
    return (
        scale * (BORDER_PIXELS + row * (h + BORDER_PIXELS)),
        scale * (BORDER_PIXELS + col * (w + BORDER_PIXELS)),
    )


@dataclass(frozen=True)
class FeatureGrid:
    """A rendered feature grid.

    image: (H, W) or (H, W, 3) uint8, already scaled; order: (s,) the unit in each tile,
    row-major; grid: (rows, cols); tile_shape: (h, w, c); scale: pixel repetition.
    """

    image: np.ndarray
    order: np.ndarray
    grid: tuple[int, int]
    tile_shape: tuple[int, int, int]
    scale: int

    def origin(self, tile: int) -> tuple[int, int]:
        """(top, left) pixel of tile ``tile`` in :attr:`image`."""
        return tile_origin(tile, self.tile_shape, self.grid, self.scale)


def features_in_space(model: Model, space: str | None = None) -> np.ndarray:
    """The filters to draw, (s, n): W1 in the space the model sees, or in the input's.

    ``space="input"`` (the default) undoes the training data's normalisation where it is
    linear: W1·ZCAWhite for ZCA-whitened data (the notes' picture), W1·diag(1/σ) for
    z-scored data; otherwise, and with ``space="whitened"``, W1 as trained.
    """
    space = "input" if space is None else space
    if space not in SPACES:
        raise UsageError(f"space must be one of {', '.join(SPACES)}, got {space!r}.", parameter="space")
    W1 = np.asarray(model.W1, dtype=np.float64)
    mode = (model.normalization or {}).get("mode")
    arrays = model.normalization_arrays
    if space == "input" and mode == "zca" and "zca/matrix" in arrays:
        # x_white = ZCAWhite (x − mean), so W1 x_white = (W1 ZCAWhite)(x − mean).
        return W1 @ arrays["zca/matrix"]
    if space == "input" and mode == "zscore" and "zscore/std" in arrays:
        std = arrays["zscore/std"]
        return W1 * np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 1.0)
    return W1


def feature_grid(
    model: Model,
    *,
    cols: int | None = None,
    scale: int = 1,
    sort: str = "none",
    patch_shape: tuple[int, ...] | None = None,
    name: str = "the model",
    space: str | None = None,
) -> FeatureGrid:
    """The notes' picture of the model's W1 (s, n) as a :class:`FeatureGrid` (no file).

    ``space``: see :func:`features_in_space` (default: the input space).
    """
    shape = resolve_patch_shape(model.n_visible, model.patch_shape, patch_shape, name)
    order = unit_order(model, sort, name)
    tiles = normalized_features(features_in_space(model, space), shape)[order]
    image, grid = tile_grid(tiles, cols, scale)
    return FeatureGrid(image=image, order=order, grid=grid, tile_shape=shape, scale=scale)


def render_features(
    model: Model,
    output: str | os.PathLike,
    *,
    cols: int | None = None,
    scale: int = 1,
    sort: str = "none",
    patch_shape: tuple[int, ...] | None = None,
    name: str | None = None,
    force: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
    space: str | None = None,
) -> FeatureGrid:
    """Draw the model's features (see :func:`feature_grid`) into the PNG ``output``.

    The PNG is gray for gray patches and RGB for colour ones; it is written atomically
    and replaces an existing file only with ``force``.  ``inputs`` are paths the output
    must not overwrite; ``name`` is the model file named in messages.
    """
    from PIL import Image

    grid = feature_grid(
        model,
        cols=cols,
        scale=scale,
        sort=sort,
        patch_shape=patch_shape,
        name=name or "the model",
        space=space,
    )
    with atomic_output(output, force=force, inputs=inputs) as temporary:
        # uint8 (H, W) becomes a gray ("L") PNG, uint8 (H, W, 3) an RGB one.
        Image.fromarray(grid.image).save(temporary, format="PNG")
    return grid


# --------------------------------------------------------------------------- plots


CURVE_TERMS = (
    ("cost", "J"),
    ("reconstruction", "reconstruction ½‖a₃ − x‖²/m"),
    ("weight_decay", "weight decay (λ/2)‖W‖²"),
    ("sparsity", "sparsity β Σ KL(ρ‖ρ̂ⱼ)"),
)


@dataclass(frozen=True)
class CurvesPlot:
    """What :func:`plot_curves` drew: iteration (T,) and each history series (T,)."""

    iteration: np.ndarray
    series: dict[str, np.ndarray]
    size: tuple[int, int]
    # Warm start: (first iteration, stage number, sample rows) of every stage; empty
    # for a model trained in one stage (or written before stages were recorded).
    stages: tuple[tuple[int, int, int], ...] = ()


@dataclass(frozen=True)
class ActivationPlot:
    """What :func:`plot_activations` drew: ρ̂ (s,), bin edges (b+1,), counts (b,), target ρ."""

    values: np.ndarray
    edges: np.ndarray
    counts: np.ndarray
    target: float
    size: tuple[int, int]


def training_curves(model: Model, name: str = "the model") -> CurvesPlot:
    """The history series the curves plot draws, without drawing: each (T,) float64."""
    keys = [key for key, _ in CURVE_TERMS] + ["grad_norm"]
    missing = [key for key in keys if key not in model.history]
    if missing:
        raise InputFileError(
            f"{name}: the model file has no /history/{', /history/'.join(missing)}; it was not "
            "written by `streamae train`, so there are no curves to draw."
        )
    series = {key: np.asarray(model.history[key], dtype=np.float64) for key in keys}
    lengths = {len(values) for values in series.values()}
    if lengths != {len(series["cost"])}:
        raise InputFileError(f"{name}: the model's /history series differ in length; the file is damaged.")
    if len(series["cost"]) == 0:
        raise InputFileError(
            f"{name}: the model's history is empty (0 iterations); train it for at least one "
            "iteration to plot curves."
        )
    return CurvesPlot(
        iteration=np.arange(1, len(series["cost"]) + 1),
        series=series,
        size=PLOT_PIXELS,
        stages=_stage_starts(model, len(series["cost"])),
    )


def _stage_starts(model: Model, length: int) -> tuple[tuple[int, int, int], ...]:
    """(first iteration, stage, rows) where each warm-start stage begins; () for one stage."""
    stage = np.asarray(model.history.get("stage", []), dtype=np.float64)
    rows = np.asarray(model.history.get("sample_rows", []), dtype=np.float64)
    if stage.shape != (length,) or rows.shape != (length,) or length == 0:
        return ()
    begins = np.flatnonzero(np.r_[True, stage[1:] != stage[:-1]])
    if begins.size < 2:
        return ()
    return tuple((int(i) + 1, int(stage[i]), int(rows[i])) for i in begins)


def _positive(values: np.ndarray) -> np.ndarray:
    # A log axis cannot show values <= 0; leave gaps instead of letting matplotlib clip.
    return np.where(values > 0.0, values, np.nan)


def _new_figure():
    from matplotlib.figure import Figure

    return Figure(figsize=PLOT_INCHES, dpi=PLOT_DPI, layout="constrained")


def _save_figure(figure, output: str | os.PathLike, force: bool, inputs: Iterable) -> None:
    # The temporary has no .png suffix, so the format is named; no bbox_inches="tight",
    # which would change the pixel size callers rely on.
    with atomic_output(output, force=force, inputs=inputs) as temporary:
        figure.savefig(temporary, format="png", dpi=PLOT_DPI)


def plot_curves(
    model: Model,
    output: str | os.PathLike,
    *,
    name: str = "model",
    force: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
) -> CurvesPlot:
    """PNG of J and its three terms against the iteration (log axis), ‖∇J‖ below.

    The image is ``PLOT_PIXELS`` (width, height); returns the data drawn.  Terms that are
    zero throughout (β = 0, λ = 0) cannot be shown on a log axis and are named as such
    in the legend.
    """
    curves = training_curves(model, name)
    figure = _new_figure()
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    marker = "." if len(curves.iteration) < 30 else None
    for key, label in CURVE_TERMS:
        values = curves.series[key]
        if not np.any(values > 0.0):
            top.plot([], [], label=f"{label}: zero throughout, not shown")
            continue
        width = 2.0 if key == "cost" else 1.2
        top.plot(curves.iteration, _positive(values), label=label, linewidth=width, marker=marker)
    held = model.validation or {}
    if len(held.get("iteration", ())) and np.any(np.asarray(held.get("cost", [])) > 0.0):
        # Held-out J at the iterations it was evaluated (0: the starting point).
        top.plot(
            np.asarray(held["iteration"]),
            _positive(np.asarray(held["cost"], dtype=np.float64)),
            label="held-out J",
            color="black",
            linestyle="--",
            marker="x" if len(held["iteration"]) < 30 else None,
        )
    for first, number, rows in curves.stages:
        # Each stage's J is on its own sample: mark where the data changes.
        for axis in (top, bottom):
            axis.axvline(first - 0.5, color="grey", linestyle="--", linewidth=0.8)
        top.annotate(
            f"stage {number}\n{rows:,} rows",
            xy=(first - 0.5, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -3),
            textcoords="offset points",
            va="top",
            fontsize="x-small",
        )
    top.set_yscale("log")
    top.set_ylabel("objective term (log scale)")
    top.legend(loc="best", fontsize="small")
    top.grid(True, which="both", alpha=0.3)
    top.set_title(f"{Path(name).name}: training objective over {len(curves.iteration)} iterations")
    _elapsed_axis(top, curves.iteration, model.history.get("seconds"))
    gradient = curves.series["grad_norm"]
    if np.any(gradient > 0.0):
        bottom.plot(curves.iteration, _positive(gradient), color="black", marker=marker)
        bottom.set_yscale("log")
    bottom.set_ylabel("‖∇J‖ (log scale)")
    bottom.set_xlabel("L-BFGS iteration")
    bottom.grid(True, which="both", alpha=0.3)
    _save_figure(figure, output, force, inputs)
    return curves


def _elapsed_axis(axes, iteration: np.ndarray, seconds: np.ndarray | None) -> None:
    """A second x axis on top: the wall-clock seconds since training began at each iteration.

    Only when the history's ``seconds`` (cumulative, one per iteration) are there and rise.
    """
    if seconds is None or len(seconds) != len(iteration) or len(iteration) < 2:
        return
    seconds = np.asarray(seconds, dtype=np.float64)
    if not (np.all(np.isfinite(seconds)) and np.all(np.diff(seconds) > 0)):
        return
    secondary = axes.secondary_xaxis(
        "top",
        functions=(lambda x: np.interp(x, iteration, seconds), lambda t: np.interp(t, seconds, iteration)),
    )
    secondary.set_xlabel("elapsed time (s)", fontsize="small")


def activation_histogram(model: Model, name: str = "the model") -> ActivationPlot:
    """The histogram the activations plot draws, without drawing.

    values: the model's ρ̂ (s,) (for tanh units q̂ = (ρ̂ + 1)/2, where ρ applies); edges:
    equal-width bins over [0, max(values, ρ)·1.05];
    counts: units per bin, from :func:`numpy.histogram`.
    """
    if model.rho_hat is None:
        raise InputFileError(
            f"{name}: the model file has no /rho_hat (the final mean activations); train it "
            "with `streamae train` to record them."
        )
    values = np.asarray(model.rho_hat, dtype=np.float64)
    if getattr(model.hyper, "activation", "sigmoid") == "tanh":
        values = (values + 1.0) / 2.0  # tanh: rho applies to q = (a2 + 1)/2, in [0, 1] like sigmoid's
    upper = max(float(np.max(values)), model.hyper.rho) * 1.05
    n_bins = int(min(50, max(10, values.size // 2)))
    counts, edges = np.histogram(values, bins=np.linspace(0.0, upper, n_bins + 1))
    return ActivationPlot(values=values, edges=edges, counts=counts, target=model.hyper.rho, size=PLOT_PIXELS)


def plot_activations(
    model: Model,
    output: str | os.PathLike,
    *,
    name: str = "model",
    force: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
) -> ActivationPlot:
    """PNG histogram of the final ρ̂ⱼ with the target ρ marked; returns the data drawn."""
    histogram = activation_histogram(model, name)
    figure = _new_figure()
    axes = figure.subplots()
    axes.stairs(histogram.counts, histogram.edges, fill=True, alpha=0.7, label="hidden units")
    axes.axvline(histogram.target, color="red", linestyle="--", label=f"target ρ = {histogram.target:g}")
    mean = float(np.mean(histogram.values))
    axes.axvline(mean, color="black", linestyle=":", label=f"mean ρ̂ = {mean:.4g}")
    what = "(a₂ⱼ + 1)/2, tanh units" if model.hyper.activation == "tanh" else "a₂ⱼ"
    axes.set_xlabel(f"mean activation of hidden unit j over the training data, {what} (no unit: a fraction)")
    axes.set_ylabel("number of hidden units")
    axes.set_title(f"{Path(name).name}: final mean activations of {histogram.values.size} hidden units")
    axes.legend(loc="upper right", fontsize="small")
    _save_figure(figure, output, force, inputs)
    return histogram
