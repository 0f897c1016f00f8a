"""A picture of how well a model reconstructs: some input patches beside their reconstructions.

Rows of a patch file are chosen by seed, run through the model (a3 = the decoder's
output) and drawn in pairs, input then reconstruction, in a grid under a band that labels
each column "in" or "out".  Where the data's normalisation is invertible (ZCA:
x = ZCAWhite⁻¹ y + mean; z-score: x = σ y + μ) both are mapped back to the input's space
for display; ufldl's per-patch mean cannot be restored, so those patches are drawn as
stored.  Each pair shares one gray (or colour) scale computed from the input alone
(:func:`pair_scale`), so a reconstruction is judged against its input: an error shows as
a difference, and a flat input is not stretched until its reconstruction's rounding
noise fills the tile.  Models of 1-D windows are drawn as line plots instead
(:func:`streamae.render_signals.plot_signal_reconstructions`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamae.errors import UsageError
from streamae.io.atomic import atomic_output
from streamae.io.hdf5 import PATCHES_DATASET, open_hdf5
from streamae.io.modelfile import Model
from streamae.io.normalization import read_normalization
from streamae.io.patchfile import inspect_patch_file
from streamae.render import (
    BORDER_PIXELS,
    BORDER_VALUE,
    grid_shape,
    image_size,
    resolve_patch_shape,
    tile_origin,
)

DEFAULT_PAIRS = 16
# A pair whose input spans less than this fraction of the median input's range is "flat".
FLAT_FRACTION = 0.25


@dataclass(frozen=True)
class ReconstructionGrid:
    """image (H, W) or (H, W, 3) uint8, without the label band; rows: the file's row of each
    pair; grid (rows, cols) of tiles; inputs and reconstructions (k, n) as drawn."""

    image: np.ndarray
    rows: np.ndarray
    grid: tuple[int, int]
    inputs: np.ndarray
    reconstructions: np.ndarray
    scales: np.ndarray  # (k, 2): the (low, high) mapped to 0 and 255 in each pair


def denormalize(values: np.ndarray, description: dict | None, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Rows (k, n) mapped back to the input's space where the normalisation allows it."""
    mode = (description or {}).get("mode")
    if mode == "zca" and "zca/matrix" in arrays:
        return np.linalg.solve(arrays["zca/matrix"], values.T).T + arrays["zca/mean"]
    if mode == "zscore" and "zscore/std" in arrays:
        return values * arrays["zscore/std"] + arrays["zscore/mean"]
    return values


def pair_scale(values: np.ndarray, context: tuple[float, float], min_span: float) -> tuple[float, float]:
    """(low, high) of one pair's scale, from its input ``values`` (n,) alone.

    The input's own range, widened to ``min_span`` when it is flatter than that (a flat
    input would otherwise be stretched over the whole gray range), placed so that the
    input keeps its relative place in ``context`` (the (low, high) of all inputs drawn):
    a black patch stays black, a white one white, a mid-gray one mid-gray.
    """
    low, high = float(np.min(values)), float(np.max(values))
    if high - low >= min_span:
        return low, high
    context_low, context_high = context
    where = (
        (0.5 * (low + high) - context_low) / (context_high - context_low)
        if context_high > context_low
        else 0.5
    )
    low = 0.5 * (low + high) - min(max(where, 0.0), 1.0) * min_span
    return low, low + min_span


def chosen_rows(model: Model, data: str | os.PathLike, pairs: int, seed: int, name: str):
    """(rows (k,), inputs (k, n), reconstructions (k, n), layout) of ``pairs`` seeded rows of ``data``."""
    layout = inspect_patch_file(data)
    if layout.n_features != model.n_visible:
        raise UsageError(
            f"{name} takes inputs of {model.n_visible} values but {data} holds patches of "
            f"{layout.n_features}; give patches extracted like the model's training data.",
            parameter="reconstructions",
        )
    if pairs < 1:
        raise UsageError(f"pairs must be at least 1, got {pairs}.", parameter="pairs")
    generator = np.random.default_rng(seed)
    rows = np.sort(generator.choice(layout.n_rows, size=min(pairs, layout.n_rows), replace=False))
    with open_hdf5(Path(data)) as handle:
        stored = np.asarray(handle[PATCHES_DATASET][rows], dtype=np.float64)  # few rows, increasing
    bad = np.flatnonzero(~np.isfinite(stored).all(axis=1))
    if bad.size:
        raise UsageError(
            f"{data}: row {rows[bad[0]]} of its patches holds NaN or Inf; repair or extract the file again.",
            parameter="reconstructions",
        )
    rebuilt = model.reconstruct(stored, dtype=np.float64)
    description, arrays = read_normalization(data, n_features=layout.n_features)
    try:
        inputs, outputs = denormalize(stored, description, arrays), denormalize(rebuilt, description, arrays)
    except np.linalg.LinAlgError:
        raise UsageError(
            f"{data}: its /zca/matrix cannot be inverted to draw the patches in the input's space; "
            "extract the file again.",
            parameter="reconstructions",
        ) from None
    return rows, inputs, outputs, layout


def reconstruction_grid(
    model: Model,
    data: str | os.PathLike,
    *,
    pairs: int = DEFAULT_PAIRS,
    seed: int = 0,
    cols: int | None = None,
    scale: int = 1,
    patch_shape: tuple[int, ...] | None = None,
    name: str = "the model",
) -> ReconstructionGrid:
    """Pairs (input, reconstruction) of ``pairs`` rows of the patch file ``data``, chosen by ``seed``.

    ``cols`` counts pairs per row of the grid (default near-square).
    """
    rows, inputs, outputs, layout = chosen_rows(model, data, pairs, seed, name)
    shape = resolve_patch_shape(model.n_visible, model.patch_shape or layout.patch_shape, patch_shape, name)
    k = rows.size
    pair_rows, pair_cols = grid_shape(k, cols)
    grid = (pair_rows, 2 * pair_cols)
    h, w, c = shape
    height, width = image_size((h, w), grid)
    canvas = np.full((height, width, c), BORDER_VALUE, dtype=np.uint8)
    spans = np.ptp(inputs, axis=1)
    context = (float(inputs.min()), float(inputs.max()))
    # An input flatter than a quarter of the typical input's contrast is shown at that contrast
    # (with every input flat: over the range of all of them, or 1).
    typical = float(np.median(spans)) if np.median(spans) > 0 else max(context[1] - context[0], 1.0)
    min_span = FLAT_FRACTION * typical
    scales = np.array([pair_scale(inputs[index], context, min_span) for index in range(k)])
    for index in range(k):
        low, high = scales[index]
        row, col = divmod(index, pair_cols)
        for offset, values in enumerate((inputs[index], outputs[index])):
            top, left = tile_origin(row * grid[1] + 2 * col + offset, (h, w), grid)
            tile = np.rint(255.0 * (values - low) / (high - low)).clip(0, 255).astype(np.uint8)
            canvas[top : top + h, left : left + w] = tile.reshape(shape)
    if scale > 1:
        canvas = np.repeat(np.repeat(canvas, scale, axis=0), scale, axis=1)
    image = canvas[:, :, 0] if c == 1 else canvas
    return ReconstructionGrid(image, rows, grid, inputs, outputs, scales)


LABEL_BAND = 12  # pixels above the grid for the column labels


def labelled(grid: ReconstructionGrid, scale: int = 1) -> np.ndarray:
    """The grid's image under a white band naming each column: "in" (input) or "out" (its reconstruction).

    ``scale`` is the pixel repetition the grid was drawn with; tiles narrower than the
    words get "i" and "o".  The grid itself is unchanged below the band.
    """
    from PIL import Image, ImageDraw

    image = grid.image
    columns = grid.grid[1]
    tile = (image.shape[1] // scale - BORDER_PIXELS) // columns - BORDER_PIXELS  # unscaled width
    band = np.full((LABEL_BAND, *image.shape[1:]), 255, dtype=np.uint8)
    picture = Image.fromarray(np.concatenate([band, image], axis=0))
    draw = ImageDraw.Draw(picture)
    words = ("in", "out") if tile * scale >= draw.textlength("out") + 2 else ("i", "o")
    for column in range(columns):
        text = words[column % 2]
        left = (
            scale * (BORDER_PIXELS + column * (tile + BORDER_PIXELS))
            + (tile * scale - draw.textlength(text)) / 2
        )
        draw.text((max(0.0, left), 0), text, fill=0 if image.ndim == 2 else (0, 0, 0))
    return np.asarray(picture)


def render_reconstructions(
    model: Model,
    data: str | os.PathLike,
    output: str | os.PathLike,
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
    **options: object,
) -> ReconstructionGrid:
    """Draw :func:`reconstruction_grid` under its labels into the PNG ``output`` (atomically).

    A model of 1-D windows (patch shape 1 × samples × 1) is drawn as line plots instead, the
    input and its reconstruction over each other, and a :class:`SignalPlot` is returned.
    """
    from PIL import Image

    if is_one_dimensional(model.patch_shape) and options.get("patch_shape") is None:
        from streamae.render_signals import plot_signal_reconstructions, sample_rate

        rows, originals, rebuilt, _ = chosen_rows(
            model, data, options.get("pairs", DEFAULT_PAIRS), options.get("seed", 0), options.get("name", "")
        )
        return plot_signal_reconstructions(
            originals, rebuilt, rows, output, rate=sample_rate(data), name=str(data), force=force,
            inputs=(*inputs, data),
        )  # fmt: skip
    grid = reconstruction_grid(model, data, **options)
    with atomic_output(output, force=force, inputs=(*inputs, data)) as temporary:
        Image.fromarray(labelled(grid, options.get("scale", 1))).save(temporary, format="PNG")
    return grid


def is_one_dimensional(patch_shape: tuple[int, ...] | None) -> bool:
    """True for windows of a 1-D signal: patch shape (1, samples, channels)."""
    return patch_shape is not None and len(patch_shape) == 3 and patch_shape[0] == 1
