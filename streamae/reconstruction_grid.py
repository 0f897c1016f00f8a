"""A picture of how well a model reconstructs: some input patches beside their reconstructions.

Rows of a patch file are chosen by seed, run through the model (a3 = the decoder's
output) and drawn in pairs, input then reconstruction, in a grid.  Where the data's
normalisation is invertible (ZCA: x = ZCAWhite⁻¹ y + mean; z-score: x = σ y + μ) both
are mapped back to the input's space for display; ufldl's per-patch mean cannot be
restored, so those patches are drawn as stored.  Each pair shares one gray (or colour)
scale, stretched from its minimum to its maximum, so the two compare directly.
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
from streamae.render import BORDER_VALUE, grid_shape, image_size, resolve_patch_shape, tile_origin

DEFAULT_PAIRS = 16


@dataclass(frozen=True)
class ReconstructionGrid:
    """image (H, W) or (H, W, 3) uint8; rows: the file's row of each pair; grid (rows, cols) of tiles."""

    image: np.ndarray
    rows: np.ndarray
    grid: tuple[int, int]
    inputs: np.ndarray
    reconstructions: np.ndarray


def denormalize(values: np.ndarray, description: dict | None, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Rows (k, n) mapped back to the input's space where the normalisation allows it."""
    mode = (description or {}).get("mode")
    if mode == "zca" and "zca/matrix" in arrays:
        return np.linalg.solve(arrays["zca/matrix"], values.T).T + arrays["zca/mean"]
    if mode == "zscore" and "zscore/std" in arrays:
        return values * arrays["zscore/std"] + arrays["zscore/mean"]
    return values


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
    layout = inspect_patch_file(data)
    if layout.n_features != model.n_visible:
        raise UsageError(
            f"{name} takes inputs of {model.n_visible} values but {data} holds patches of "
            f"{layout.n_features}; give patches extracted like the model's training data.",
            parameter="reconstructions",
        )
    if pairs < 1:
        raise UsageError(f"pairs must be at least 1, got {pairs}.", parameter="pairs")
    shape = resolve_patch_shape(model.n_visible, model.patch_shape or layout.patch_shape, patch_shape, name)
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
    k = rows.size
    pair_rows, pair_cols = grid_shape(k, cols)
    grid = (pair_rows, 2 * pair_cols)
    h, w, c = shape
    height, width = image_size((h, w), grid)
    canvas = np.full((height, width, c), BORDER_VALUE, dtype=np.uint8)
    for index in range(k):
        low = min(inputs[index].min(), outputs[index].min())
        high = max(inputs[index].max(), outputs[index].max())
        span = high - low if high > low else 1.0
        row, col = divmod(index, pair_cols)
        for offset, values in enumerate((inputs[index], outputs[index])):
            top, left = tile_origin(row * grid[1] + 2 * col + offset, (h, w), grid)
            tile = np.rint(255.0 * (values - low) / span).clip(0, 255).astype(np.uint8)
            canvas[top : top + h, left : left + w] = tile.reshape(shape)
    if scale > 1:
        canvas = np.repeat(np.repeat(canvas, scale, axis=0), scale, axis=1)
    image = canvas[:, :, 0] if c == 1 else canvas
    return ReconstructionGrid(image=image, rows=rows, grid=grid, inputs=inputs, reconstructions=outputs)


def render_reconstructions(
    model: Model,
    data: str | os.PathLike,
    output: str | os.PathLike,
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
    **options: object,
) -> ReconstructionGrid:
    """Draw :func:`reconstruction_grid` into the PNG ``output`` (atomically)."""
    from PIL import Image

    grid = reconstruction_grid(model, data, **options)
    with atomic_output(output, force=force, inputs=(*inputs, data)) as temporary:
        Image.fromarray(grid.image).save(temporary, format="PNG")
    return grid
