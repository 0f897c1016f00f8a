"""Numba kernels for one block of examples: the elementwise work of the objective, fused.

The matrix products go to BLAS (the callers use ``np.matmul(..., out=...)``); these
kernels do everything between them in one sweep each: add the bias, apply the
nonlinearity, form the deltas, and add the column sums into float64 partials.  They are
pure functions over arrays: no I/O, no objects, no globals; every output is passed in.

Column sums are made deterministic and thread-safe by splitting the rows into fixed
segments of ``SEGMENT_ROWS``: each parallel iteration owns one segment and one row of the
``partial`` scratch array (float64), and the partials are added in segment order
afterwards.  The result does not depend on the number of threads.
"""

from __future__ import annotations

import os

# Numba's OpenMP threads and OpenBLAS's threads both spin while waiting for work; on a
# 2-core node they take turns with each other's spinning and one evaluation runs ~30x
# slower (measured: 250 ms against 8.6 ms).  Passive waiting avoids it; a user's own
# setting wins.  It must be set before the OpenMP runtime starts, hence at import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

# Rows per parallel work item.  Large enough that the per-segment overhead is small,
# small enough that a block of a few thousand rows still splits across the cores.
SEGMENT_ROWS = 128

JIT_OPTIONS = {"cache": True, "nogil": True}


@njit(**JIT_OPTIONS)
def segment_count(rows: int) -> int:
    """How many ``SEGMENT_ROWS`` segments cover ``rows`` rows (rows of ``partial``)."""
    return max(1, (rows + SEGMENT_ROWS - 1) // SEGMENT_ROWS)


@njit(**JIT_OPTIONS)
def _sum_segments(partial, n_segments, width, total):
    """total[j] += sum over segments of partial[seg, j], in segment order."""
    for seg in range(n_segments):
        for j in range(width):
            total[j] += partial[seg, j]


@njit(parallel=True, **JIT_OPTIONS)
def hidden_activation(z2, b1, partial, sum_a2):
    """Hidden layer in place: ``z2 <- sigmoid(z2 + b1)``; ``sum_a2 += column sums``.

    z2: (rows, s) pre-activations ``x @ W1.T`` (without bias), overwritten with a2.
    b1: (s,) bias.  partial: (>= segments, >= s) float64 scratch.
    sum_a2: (s,) float64 running total of the hidden activations.
    """
    rows, hidden = z2.shape
    n_segments = segment_count(rows)
    one = z2.dtype.type(1.0)
    for seg in prange(n_segments):
        for j in range(hidden):
            partial[seg, j] = 0.0
        for i in range(seg * SEGMENT_ROWS, min(rows, (seg + 1) * SEGMENT_ROWS)):
            for j in range(hidden):
                a = one / (one + np.exp(-(z2[i, j] + b1[j])))
                z2[i, j] = a
                partial[seg, j] += a
    _sum_segments(partial, n_segments, hidden, sum_a2)


@njit(parallel=True, **JIT_OPTIONS)
def output_delta(z3, b2, x, linear, partial, sum_delta3):
    """Output layer and its delta in place; returns the block's ``sum ½‖a3 − x‖²``.

    z3: (rows, n) ``a2 @ W2.T`` (without bias), overwritten with
    delta3 = (a3 − x) ⊙ f′(z3), or a3 − x when ``linear`` (the linear decoder).
    b2: (n,) bias.  x: (rows, n) the input block.  partial: (>= segments, >= n + 1)
    float64 scratch.  sum_delta3: (n,) float64 running total of delta3.
    """
    rows, n = z3.shape
    n_segments = segment_count(rows)
    one = z3.dtype.type(1.0)
    for seg in prange(n_segments):
        for j in range(n + 1):
            partial[seg, j] = 0.0
        for i in range(seg * SEGMENT_ROWS, min(rows, (seg + 1) * SEGMENT_ROWS)):
            squared = 0.0
            for j in range(n):
                if linear:
                    difference = z3[i, j] + b2[j] - x[i, j]
                    delta = difference
                else:
                    a3 = one / (one + np.exp(-(z3[i, j] + b2[j])))
                    difference = a3 - x[i, j]
                    delta = difference * a3 * (one - a3)
                squared += difference * difference
                z3[i, j] = delta
                partial[seg, j] += delta
            partial[seg, n] += squared
    reconstruction = 0.0
    for seg in range(n_segments):
        reconstruction += partial[seg, n]
    _sum_segments(partial, n_segments, n, sum_delta3)
    return 0.5 * reconstruction


@njit(parallel=True, **JIT_OPTIONS)
def hidden_delta(e2, a2, sparsity, partial, sum_delta2):
    """Hidden delta in place: ``e2 <- (e2 + sparsity) ⊙ a2 ⊙ (1 − a2)``; sums added.

    e2: (rows, s) back-propagated error ``delta3 @ W2``, overwritten with delta2.
    a2: (rows, s) hidden activations.  sparsity: (s,) β·(−ρ/ρ̂ + (1−ρ)/(1−ρ̂)) in the
    block's dtype.  partial: (>= segments, >= s) float64 scratch.
    sum_delta2: (s,) float64 running total of delta2.
    """
    rows, hidden = e2.shape
    n_segments = segment_count(rows)
    one = e2.dtype.type(1.0)
    for seg in prange(n_segments):
        for j in range(hidden):
            partial[seg, j] = 0.0
        for i in range(seg * SEGMENT_ROWS, min(rows, (seg + 1) * SEGMENT_ROWS)):
            for j in range(hidden):
                a = a2[i, j]
                delta = (e2[i, j] + sparsity[j]) * a * (one - a)
                e2[i, j] = delta
                partial[seg, j] += delta
    _sum_segments(partial, n_segments, hidden, sum_delta2)


@njit(parallel=True, **JIT_OPTIONS)
def scan_values(x, partial):
    """Check a block: returns (first non-finite row or −1, minimum, maximum).

    x: (rows, n).  partial: (>= segments, >= 3) float64 scratch.  The minimum and
    maximum are over the finite values only.
    """
    rows, n = x.shape
    n_segments = segment_count(rows)
    for seg in prange(n_segments):
        first_bad = -1.0
        low = np.inf
        high = -np.inf
        for i in range(seg * SEGMENT_ROWS, min(rows, (seg + 1) * SEGMENT_ROWS)):
            for j in range(n):
                value = x[i, j]
                if np.isfinite(value):
                    low = min(low, value)
                    high = max(high, value)
                elif first_bad < 0:
                    first_bad = i
        partial[seg, 0] = first_bad
        partial[seg, 1] = low
        partial[seg, 2] = high
    first_bad_row = -1
    low = np.inf
    high = -np.inf
    for seg in range(n_segments):
        if first_bad_row < 0 and partial[seg, 0] >= 0:
            first_bad_row = int(partial[seg, 0])
        low = min(low, partial[seg, 1])
        high = max(high, partial[seg, 2])
    return first_bad_row, low, high
