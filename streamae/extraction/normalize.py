"""Patch normalisations, streamed: statistics gathered block by block in pass 1, applied in pass 2.

Modes (values are taken in units of full intensity, i.e. pixel / 255 for 8-bit data,
except for ``none``):

- ``ufldl``: the notes' normalizeData: subtract each patch's own mean; σ is the standard
  deviation of all mean-removed values (MATLAB's ``std``, divisor N − 1); clip to ±3σ;
  map [−3σ, 3σ] linearly onto [0.1, 0.9].
- ``zscore``: per-pixel mean and standard deviation over the patches (divisor N).
- ``zca``: ZCA whitening as in the later UFLDL notes: per-pixel mean removed,
  Σ = (1/m) Σ xxᵀ = U S Uᵀ, W = U diag(1/√(S + ε)) Uᵀ, x ← W (x − mean).
- ``unit``: pixel / full intensity (255 for 8-bit data).
- ``none``: raw pixel values as float32.

``"scale": "unit"`` in a mode's description records that pixels were divided by their
full intensity before the mode was applied (so /zca/mean is in [0, 1] units).

Kernels convert each value to float64 before any arithmetic (explicitly, so the result
is the same with ``NUMBA_DISABLE_JIT=1``).  Every sum over patches is accumulated per
block (in fixed row segments, in float64) and added into float64 totals, so the
statistics do not depend on the number of threads and barely on the block size.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from streamae.compute.kernels import JIT_OPTIONS, SEGMENT_ROWS, segment_count
from streamae.errors import DataError
from streamae.options import DEFAULT_ZCA_EPSILON, NORMALIZATIONS, setting

MODES = NORMALIZATIONS  # declared once, in streamae.options
# The notes' target range of ufldl, and the clip in standard deviations.
UFLDL_LOW, UFLDL_HIGH, UFLDL_CLIP = 0.1, 0.9, 3.0
# The notes' linear-decoder exercise, for values in [0, 1] (declared in streamae.options).


# --- kernels ------------------------------------------------------------------------------


@njit(parallel=True, **JIT_OPTIONS)
def ufldl_moments(x, partial):
    """Return (Σv, Σv²) over all values v = x[i, j] − mean(x[i, :]), in float64.

    x: (rows, n).  partial: (>= segments, >= 2) float64 scratch.
    """
    rows, n = x.shape
    n_segments = segment_count(rows)
    for seg in prange(n_segments):
        total = 0.0
        squares = 0.0
        for i in range(seg * SEGMENT_ROWS, min(rows, (seg + 1) * SEGMENT_ROWS)):
            mean = 0.0
            for j in range(n):
                mean += np.float64(x[i, j])
            mean /= n
            for j in range(n):
                v = np.float64(x[i, j]) - mean
                total += v
                squares += v * v
        partial[seg, 0] = total
        partial[seg, 1] = squares
    total = 0.0
    squares = 0.0
    for seg in range(n_segments):
        total += partial[seg, 0]
        squares += partial[seg, 1]
    return total, squares


@njit(parallel=True, **JIT_OPTIONS)
def ufldl_apply(x, limit):
    """In place: x[i, j] ← ((clip(v, ±limit) / limit) + 1) · 0.4 + 0.1, v = x[i, j] − mean(x[i, :]).

    x: (rows, n) float32.  limit: 3σ (float64).  Arithmetic in float64, stored as x's type.
    """
    rows, n = x.shape
    for i in prange(rows):
        mean = 0.0
        for j in range(n):
            mean += np.float64(x[i, j])
        mean /= n
        for j in range(n):
            v = min(max(np.float64(x[i, j]) - mean, -limit), limit)
            x[i, j] = (v / limit + 1.0) * 0.4 + 0.1


@njit(parallel=True, **JIT_OPTIONS)
def column_moments(x, shift, partial, sums, squares):
    """Add Σᵢ (x[i, j] − shift[j]) into sums[j] and Σᵢ (x[i, j] − shift[j])² into squares[j].

    x: (rows, n).  shift: (n,) float64.  partial: (>= segments, >= 2n) float64 scratch.
    sums, squares: (n,) float64 running totals.
    """
    rows, n = x.shape
    n_segments = segment_count(rows)
    for seg in prange(n_segments):
        for j in range(2 * n):
            partial[seg, j] = 0.0
        for i in range(seg * SEGMENT_ROWS, min(rows, (seg + 1) * SEGMENT_ROWS)):
            for j in range(n):
                v = np.float64(x[i, j]) - shift[j]
                partial[seg, j] += v
                partial[seg, n + j] += v * v
    for seg in range(n_segments):
        for j in range(n):
            sums[j] += partial[seg, j]
            squares[j] += partial[seg, n + j]


@njit(parallel=True, **JIT_OPTIONS)
def affine_columns(x, shift, factor):
    """In place: x[i, j] ← (x[i, j] − shift[j]) · factor[j].  x: (rows, n); shift, factor: (n,) float64."""
    rows, n = x.shape
    for i in prange(rows):
        for j in range(n):
            x[i, j] = (np.float64(x[i, j]) - shift[j]) * factor[j]


@njit(parallel=True, **JIT_OPTIONS)
def centered(x, shift, out):
    """out[i, j] = x[i, j] − shift[j] in float64.  x: (rows, n); shift: (n,); out: (>= rows, n) float64."""
    rows, n = x.shape
    for i in prange(rows):
        for j in range(n):
            out[i, j] = np.float64(x[i, j]) - shift[j]


# --- pass 1: statistics -------------------------------------------------------------------


class Statistics:
    """What pass 1 gathers for one mode; ``add`` every block, then ``finish``."""

    def __init__(self, mode: str, n: int, block_rows: int) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown normalization {mode!r}")
        self.mode = mode
        self.n = n
        self.count = 0
        self.partial = np.empty((segment_count(block_rows), 2 * n), dtype=np.float64)
        self.sums = np.zeros(n, dtype=np.float64)
        self.squares = np.zeros(n, dtype=np.float64)
        self.total = 0.0
        self.total_squares = 0.0
        self.shift: np.ndarray | None = None
        if mode == "zca":
            self.cross = np.zeros((n, n), dtype=np.float64)
            self.work = np.empty((block_rows, n), dtype=np.float64)

    @property
    def needed(self) -> bool:
        """False for the modes that need no pass 1 (unit, none)."""
        return self.mode in ("ufldl", "zscore", "zca")

    def add(self, block: np.ndarray) -> None:
        """Accumulate one (rows, n) block of cut patches."""
        rows = block.shape[0]
        if self.mode == "ufldl":
            total, squares = ufldl_moments(block, self.partial)
            self.total += total
            self.total_squares += squares
        elif self.mode in ("zscore", "zca"):
            if self.shift is None:
                # Sums of squares are taken around the first block's mean, so that
                # subtracting the squared mean at the end cancels little.
                self.shift = block.mean(axis=0, dtype=np.float64)
            column_moments(block, self.shift, self.partial, self.sums, self.squares)
            if self.mode == "zca":
                work = self.work[:rows]
                centered(block, self.shift, work)
                self.cross += work.T @ work
        self.count += rows

    def finish(self, *, epsilon: float = DEFAULT_ZCA_EPSILON) -> Normalizer:
        """The normalizer for pass 2, built from the totals."""
        m = self.count
        if self.mode == "ufldl":
            values = m * self.n
            variance = (self.total_squares - self.total**2 / values) / max(values - 1, 1)
            return Normalizer("ufldl", sigma=float(np.sqrt(max(variance, 0.0))))
        if self.mode in ("zscore", "zca"):
            offset = self.sums / m
            mean = self.shift + offset
            if self.mode == "zscore":
                variance = np.maximum(self.squares / m - offset**2, 0.0)
                return Normalizer("zscore", mean=mean, std=np.sqrt(variance))
            covariance = self.cross / m - np.outer(offset, offset)
            return Normalizer("zca", mean=mean, matrix=zca_matrix(covariance, epsilon), epsilon=epsilon)
        return Normalizer(self.mode)


def check_finite_rows(block: np.ndarray, first: int, normalizer: Normalizer) -> None:
    """Refuse a normalised (rows, n) block holding NaN or Inf, naming the first such row."""
    finite = np.isfinite(block).all(axis=1)
    if finite.all():
        return
    row = first + int(np.flatnonzero(~finite)[0])
    if normalizer.mode == "zca":
        raise DataError(
            f"patch {row} normalised to NaN or Inf: the data's smallest variances are too small for "
            f"{setting('zca_epsilon', normalizer.epsilon, f'{normalizer.epsilon:g}')}; choose a larger "
            "one, or another normalize mode."
        )
    raise DataError(
        f"patch {row} normalised to NaN or Inf ({normalizer.mode}): the values are too large for "
        "float32; scale the data or choose another normalize mode."
    )


def zca_matrix(covariance: np.ndarray, epsilon: float) -> np.ndarray:
    """W = U diag(1/√(S + ε)) Uᵀ for the (n, n) covariance U S Uᵀ; returns (n, n) float64."""
    covariance = (covariance + covariance.T) / 2  # exact symmetry for eigh
    values, vectors = np.linalg.eigh(covariance)
    values = np.maximum(values, 0.0)  # rounding can leave tiny negative eigenvalues
    return (vectors / np.sqrt(values + epsilon)) @ vectors.T


# --- pass 2: application ------------------------------------------------------------------


class Normalizer:
    """Applies one mode to blocks of patches in place, and describes itself for the file."""

    def __init__(
        self,
        mode: str,
        *,
        sigma: float = 0.0,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        matrix: np.ndarray | None = None,
        epsilon: float | None = None,
    ) -> None:
        self.mode = mode
        self.sigma = sigma
        self.mean = mean
        self.std = std
        self.matrix = matrix
        self.epsilon = epsilon
        if mode == "zscore":
            # A constant pixel (σ = 0) is only centred, not divided by zero.
            self.factor = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 1.0)
        self._work: np.ndarray | None = None
        self._product: np.ndarray | None = None

    @classmethod
    def from_stored(cls, description: dict, arrays: dict[str, np.ndarray]) -> Normalizer:
        """The normalizer a patch file recorded (its ``normalization`` attribute and arrays).

        Raises KeyError or ValueError when the description is incomplete; the caller names the file.
        """
        mode = description["mode"]
        if mode == "ufldl":
            return cls("ufldl", sigma=float(description["sigma"]))
        if mode == "zscore":
            return cls("zscore", mean=arrays["zscore/mean"], std=arrays["zscore/std"])
        if mode == "zca":
            epsilon = description.get("epsilon")
            return cls(
                "zca",
                mean=arrays["zca/mean"],
                matrix=arrays["zca/matrix"],
                epsilon=None if epsilon is None else float(epsilon),
            )
        if mode in ("unit", "none"):
            return cls(mode)
        raise ValueError(f"unknown mode {mode!r}")

    def apply(self, block: np.ndarray) -> None:
        """Normalise one (rows, n) float32 block in place.

        Overflow gives Inf or NaN silently here: the writers check every block with
        :func:`check_finite_rows` and say why in one sentence (no raw NumPy warning).
        """
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            self._apply(block)

    def _apply(self, block: np.ndarray) -> None:
        if self.mode == "ufldl":
            # All patches constant: σ = 0, every value is the mean, which maps to 0.5.
            ufldl_apply(block, UFLDL_CLIP * self.sigma if self.sigma > 0 else np.inf)
        elif self.mode == "zscore":
            affine_columns(block, self.mean, self.factor)
        elif self.mode == "zca":
            rows, n = block.shape
            if self._work is None or self._work.shape[0] < rows:
                self._work = np.empty((rows, n), dtype=np.float64)
                self._product = np.empty((rows, n), dtype=np.float64)
            work, product = self._work[:rows], self._product[:rows]
            centered(block, self.mean, work)
            np.matmul(work, self.matrix, out=product)  # W is symmetric: rows of x Wᵀ = x W
            block[...] = product

    def describe(self) -> dict:
        """The ``normalization`` attribute: the mode and its parameters (JSON-ready)."""
        if self.mode == "ufldl":
            return {
                "mode": "ufldl",
                "sigma": self.sigma,
                "clip": UFLDL_CLIP,
                "range": [UFLDL_LOW, UFLDL_HIGH],
                "per_patch_mean": True,
                "scale": "unit",
            }
        if self.mode == "zscore":
            return {"mode": "zscore", "mean": "/zscore/mean", "std": "/zscore/std", "scale": "unit"}
        if self.mode == "zca":
            return {
                "mode": "zca",
                "epsilon": self.epsilon,
                "mean": "/zca/mean",
                "matrix": "/zca/matrix",
                "scale": "unit",
            }
        if self.mode == "unit":
            return {"mode": "unit", "scale": "unit"}
        return {"mode": "none"}

    def datasets(self) -> dict[str, np.ndarray]:
        """Arrays stored beside the patches so new data can be transformed alike."""
        if self.mode == "zscore":
            return {"zscore/mean": self.mean, "zscore/std": self.std}
        if self.mode == "zca":
            return {"zca/mean": self.mean, "zca/matrix": self.matrix}
        return {}
