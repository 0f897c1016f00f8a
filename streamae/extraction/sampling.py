"""Where patches come from: the sampling plan, its reproducible positions, and the cutting kernel.

Random sampling follows the notes' sampleIMAGES: for each patch an image is chosen
uniformly, then a position uniformly inside it.  Positions are drawn in fixed blocks of
``SAMPLE_BLOCK_ROWS`` rows, each from its own generator seeded by ``(seed, group, block)``,
so any row range can be produced on demand, in any read-block size, and the same seed
always gives the same patches.  Grid sampling (``stride``) takes every patch of a regular
grid, image after image, row-major; it draws nothing.

When the decoded images do not all fit the memory budget they are split into consecutive
*groups* that do (see :func:`streamae.extraction.cache.group_by_budget`); the number of patches of
each group is drawn from the multinomial with probabilities proportional to the group's
image count (so each patch's image is still uniform over all images), and the rows are
ordered group after group, so each pass decodes every image once.  With one group (the
usual case) this is exactly the notes' scheme.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange

from streamae.compute.kernels import JIT_OPTIONS

# Rows of positions drawn from one generator.  Fixed (never derived from the block
# size of a pass), so the positions do not depend on --chunk-rows.
SAMPLE_BLOCK_ROWS = 1 << 16


@dataclass(frozen=True)
class Group:
    """A run of images [first_image, stop_image) and the output rows [start_row, stop_row) cut from it."""

    first_image: int
    stop_image: int
    start_row: int
    stop_row: int


@dataclass(frozen=True)
class SamplingPlan:
    """Which patch goes into which output row: random (``num_patches``) or a grid (``stride``).

    heights, widths: (images,) int64 sizes of the images.  patch: (height, width).
    """

    heights: np.ndarray
    widths: np.ndarray
    patch: tuple[int, int]
    seed: int
    groups: tuple[Group, ...]
    stride: tuple[int, int] | None = None
    # The last drawn sample block: read blocks smaller than a sample block ask for it again.
    _last_block: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def total_rows(self) -> int:
        """Number of patches the plan yields."""
        return self.groups[-1].stop_row if self.groups else 0

    def grid_counts(self, first: int, stop: int) -> np.ndarray:
        """(stop - first,) patches on the grid of each image [first, stop)."""
        ph, pw = self.patch
        sy, sx = self.stride
        rows = (self.heights[first:stop] - ph) // sy + 1
        cols = (self.widths[first:stop] - pw) // sx + 1
        return rows * cols

    def positions(self, group: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions of the group's rows [start, stop) (counted from the group's first row).

        Returns ``(image, top, left)``, each (stop - start,) int64; image counts from the
        group's first image.
        """
        g = self.groups[group]
        if self.stride is not None:
            return self._grid_positions(g, start, stop)
        pieces = []
        first_block, last_block = start // SAMPLE_BLOCK_ROWS, (stop - 1) // SAMPLE_BLOCK_ROWS
        for block in range(first_block, last_block + 1):
            lo = block * SAMPLE_BLOCK_ROWS
            hi = min(lo + SAMPLE_BLOCK_ROWS, g.stop_row - g.start_row)
            key = (group, block)
            if key not in self._last_block:
                self._last_block.clear()
                self._last_block[key] = self._random_block(group, block, hi - lo)
            drawn = self._last_block[key]
            pieces.append(tuple(a[max(start, lo) - lo : min(stop, hi) - lo] for a in drawn))
        return tuple(np.concatenate(parts) for parts in zip(*pieces, strict=True))

    def _random_block(self, group: int, block: int, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        g = self.groups[group]
        generator = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(self.seed, spawn_key=(1, group, block)))
        )
        image = generator.integers(0, g.stop_image - g.first_image, size=rows)
        ph, pw = self.patch
        top = generator.integers(0, self.heights[g.first_image + image] - ph + 1)
        left = generator.integers(0, self.widths[g.first_image + image] - pw + 1)
        return image.astype(np.int64), top.astype(np.int64), left.astype(np.int64)

    def _grid_positions(self, g: Group, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        counts = self.grid_counts(g.first_image, g.stop_image)
        ends = np.cumsum(counts)
        rows = np.arange(start, stop, dtype=np.int64)
        image = np.searchsorted(ends, rows, side="right")
        k = rows - (ends[image] - counts[image])
        cols = (self.widths[g.first_image + image] - self.patch[1]) // self.stride[1] + 1
        return image.astype(np.int64), (k // cols) * self.stride[0], (k % cols) * self.stride[1]


def plan_sampling(
    heights: Sequence[int],
    widths: Sequence[int],
    patch: tuple[int, int],
    groups: Sequence[tuple[int, int]],
    *,
    num_patches: int | None = None,
    stride: tuple[int, int] | None = None,
    seed: int = 0,
) -> SamplingPlan:
    """Make the plan: ``num_patches`` random patches, or every patch on a ``stride`` grid.

    heights, widths: per image.  groups: consecutive image runs ``[first, stop)`` that are
    decoded together.  The images must all be at least as large as the patch.
    """
    heights = np.asarray(heights, dtype=np.int64)
    widths = np.asarray(widths, dtype=np.int64)
    if (num_patches is None) == (stride is None):
        raise ValueError("give exactly one of num_patches and stride")
    if stride is not None:
        plan = SamplingPlan(heights, widths, patch, seed, (), stride)
        counts = [int(plan.grid_counts(a, b).sum()) for a, b in groups]
    else:
        sizes = np.array([b - a for a, b in groups], dtype=np.float64)
        generator = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(0,))))
        counts = (
            generator.multinomial(num_patches, sizes / sizes.sum()).tolist()
            if len(groups) > 1
            else [num_patches]
        )
    bounds = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    built = tuple(Group(a, b, int(bounds[i]), int(bounds[i + 1])) for i, (a, b) in enumerate(groups))
    return SamplingPlan(heights, widths, patch, seed, built, stride)


@njit(parallel=True, **JIT_OPTIONS)
def cut_patches(pixels, offsets, widths, channels, image, top, left, height, width, out):
    """Copy patches out of packed images into ``out``; each row is one patch flattened (h, w, c).

    pixels: flat float32, image k stored as (H_k, W_k, channels) from ``offsets[k]``.
    widths: (images,) int64.  image, top, left: (rows,) int64 positions.
    out: (rows, height * width * channels) float32.  Rows are independent, so the result
    does not depend on the number of threads.
    """
    rows = out.shape[0]
    span = width * channels
    for i in prange(rows):
        k = image[i]
        row_stride = widths[k] * channels
        start = offsets[k] + top[i] * row_stride + left[i] * channels
        for y in range(height):
            source = start + y * row_stride
            target = y * span
            for t in range(span):
                out[i, target + t] = pixels[source + t]
