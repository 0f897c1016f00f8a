"""Pictures of models of 1-D inputs (audio windows): one small line plot per hidden unit.

Each unit's W1 row is drawn over its norm (the same norm-bounded rule as image features:
the input of unit norm that excites it most), so every value lies in [−1, 1].  A tile is
``TILE_HEIGHT`` pixels high and one pixel per sample wide: white background, the
waveform in black, sample k at column k and value v at row round((1 − v)/2 · (H − 1)),
neighbouring samples joined by vertical runs.  With ``spectra`` a second band under
each waveform shows the magnitude spectrum |rfft(row)| over its maximum, as a bar per
frequency bin (bin f at column f; height proportional to the magnitude).  Tiles sit in
a grid with a one-pixel grey border.  Everything is NumPy; a PNG is written atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import numpy as np

from streamae.io.atomic import atomic_output

TILE_HEIGHT = 32
BACKGROUND = 255
INK = 0
BORDER = 128


def unit_rows(W1: np.ndarray) -> np.ndarray:
    """Each W1 row (s, n) over its norm (rows of norm 0 stay 0)."""
    norms = np.linalg.norm(W1, axis=1, keepdims=True)
    return np.divide(W1, norms, out=np.zeros_like(W1, dtype=np.float64), where=norms > 0)


def waveform_tile(values: np.ndarray, height: int = TILE_HEIGHT) -> np.ndarray:
    """(height, n) uint8: the samples ``values`` (n,) in [−1, 1] as a joined line."""
    n = values.shape[0]
    tile = np.full((height, n), BACKGROUND, dtype=np.uint8)
    rows = np.rint((1.0 - np.clip(values, -1.0, 1.0)) / 2.0 * (height - 1)).astype(int)
    for k in range(n):
        low, high = rows[k], rows[k]
        if k > 0:  # join to the previous sample
            low, high = min(low, rows[k - 1]), max(high, rows[k - 1])
        tile[low : high + 1, k] = INK
    return tile


def spectrum_tile(values: np.ndarray, height: int = TILE_HEIGHT) -> np.ndarray:
    """(height, n) uint8: |rfft(values)| over its maximum as bars from the bottom (bin f at column f)."""
    n = values.shape[0]
    magnitude = np.abs(np.fft.rfft(values))
    top = magnitude.max()
    scaled = magnitude / top if top > 0 else magnitude
    tile = np.full((height, n), BACKGROUND, dtype=np.uint8)
    bars = np.rint(scaled * (height - 1)).astype(int)
    for f, bar in enumerate(bars):
        tile[height - 1 - bar :, f] = INK
    return tile


def spectrum_peaks(W1: np.ndarray) -> np.ndarray:
    """The frequency bin of each unit's largest magnitude (the DC bin excluded); (s,) int."""
    magnitude = np.abs(np.fft.rfft(np.asarray(W1, dtype=np.float64), axis=1))
    return 1 + np.argmax(magnitude[:, 1:], axis=1)


def signal_grid(W1: np.ndarray, *, spectra: bool = False, columns: int | None = None) -> np.ndarray:
    """The picture (rows·(h+1)+1, cols·(n+1)+1) uint8 of every unit of W1 (s, n)."""
    rows_of_units = unit_rows(np.asarray(W1, dtype=np.float64))
    s, n = rows_of_units.shape
    columns = columns or max(1, math.ceil(math.sqrt(s)))
    grid_rows = math.ceil(s / columns)
    height = TILE_HEIGHT * (2 if spectra else 1)
    image = np.full((grid_rows * (height + 1) + 1, columns * (n + 1) + 1), BORDER, dtype=np.uint8)
    for unit in range(s):
        r, c = divmod(unit, columns)
        tile = waveform_tile(rows_of_units[unit])
        if spectra:
            tile = np.vstack([tile, spectrum_tile(rows_of_units[unit])])
        top, left = 1 + r * (height + 1), 1 + c * (n + 1)
        image[top : top + height, left : left + n] = tile
    return image


def render_signal_features(
    W1: np.ndarray,
    output: str | os.PathLike,
    *,
    spectra: bool = False,
    force: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
) -> np.ndarray:
    """Write :func:`signal_grid` as a grey PNG to ``output`` (atomically); returns the picture."""
    from PIL import Image

    picture = signal_grid(W1, spectra=spectra)
    with atomic_output(output, force=force, inputs=inputs) as temporary:
        Image.fromarray(picture, mode="L").save(temporary, format="PNG")
    return picture
