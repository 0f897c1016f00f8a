"""The L-BFGS search direction in compact form: two sweeps over the correction pairs.

With the notes' 100 pairs the pairs outweigh everything else the optimizer holds: for
784 → 196 (p = 308,308) they are 2 × 100 × p float64 = 493 MB, and the direction reads
them at every iteration.  The two-loop recursion, written as NumPy calls, read every
pair three times and wrote the direction 200 times: 140 ms an iteration, a third of an
evaluation of that model.

The compact representation of Byrd, Nocedal and Schnabel (1994; Nocedal & Wright,
eq. 7.24) gives the same H = γI + [S γY] M [S γY]ᵀ from the small Gram matrices of the
pairs.  An iteration then reads the pairs twice and the direction stays in cache:

1. one sweep forms Sᵀ∇J and Yᵀ∇J, and, in the same pass, Sᵀy and Yᵀy of the pair
   stored by the last iteration (the only new entries of the Gram matrices);
2. the small system (at most pairs × pairs) is solved;
3. one sweep forms −γ∇J − S·w₁ + γY·w₂, segment by segment.

Determinism.  Every dot product is a sum of partial sums over fixed segments, added in
segment order, by one compiled loop whatever else the call computes, so each entry is a
fixed function of its two vectors: the direction does not depend on the thread count,
and a state rebuilt from a checkpoint (which projects all its pairs at once) makes the
same Gram matrices, bit for bit, as the run that wrote it.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from streamae.compute.kernels import KERNEL_OPTIONS

# Elements per partial sum: 64 KiB of a float64 row, so a row's segment stays in cache
# while the vectors of the call are multiplied with it.  Fixed: it sets the order of
# the sums, hence their bits.
SEGMENT = 8192
# Elements of the direction built at a time: 256 KiB, which stays in the second-level
# cache while every pair adds into it (measured 16-17 ms for 100 pairs of p = 308,308,
# against 27-35 ms with 32 KiB pieces and 20 ms with 512 KiB).
COMBINE_SEGMENT = 32768
# Vectors projected in one sweep when a restored state projects all its pairs: bounds
# the scratch (segments × rows × vectors) while reading the pairs ~pairs/16 times.
PROJECT_BATCH = 16


@njit(parallel=True, **KERNEL_OPTIONS)
def project(matrix: np.ndarray, rows: np.ndarray, vectors: np.ndarray, out: np.ndarray) -> None:
    """out[a, b] = matrix[rows[a]] · vectors[b], in one sweep over the rows.

    matrix: (memory, p) float64; rows: (r,) int64; vectors: (v, p) float64; out: (r, v).
    Each entry is summed by segments of SEGMENT elements, in segment order.  Vectors go
    two by two through one loop (a row segment is read once for both; an odd last vector
    is paired with itself); every entry, in either place of a pair, is summed by the same
    compiled code, so its bits do not depend on what else the call computes.
    """
    p = matrix.shape[1]
    count = vectors.shape[0]
    segments = (p + SEGMENT - 1) // SEGMENT
    partials = np.empty((segments, rows.shape[0], count))
    for segment in prange(segments):
        start = segment * SEGMENT
        stop = min(start + SEGMENT, p)
        # Views looped from 0: LLVM does not vectorise a loop over range(start, stop).
        for a in range(rows.shape[0]):
            row = matrix[rows[a], start:stop]
            for b in range(0, count, 2):
                first = vectors[b, start:stop]
                second = vectors[min(b + 1, count - 1), start:stop]
                first_total = 0.0
                second_total = 0.0
                for i in range(row.shape[0]):
                    first_total += row[i] * first[i]
                    second_total += row[i] * second[i]
                partials[segment, a, b] = first_total
                if b + 1 < count:
                    partials[segment, a, b + 1] = second_total
    for a in range(rows.shape[0]):
        for b in range(count):
            total = 0.0
            for segment in range(segments):
                total += partials[segment, a, b]
            out[a, b] = total


@njit(parallel=True, **KERNEL_OPTIONS)
def combine(
    gradient: np.ndarray,
    gamma: float,
    s_pairs: np.ndarray,
    s_weights: np.ndarray,
    y_pairs: np.ndarray,
    y_weights: np.ndarray,
    rows: np.ndarray,
) -> np.ndarray:
    """−γ·gradient + Σ_a s_weights[a]·s_pairs[rows[a]] + y_weights[a]·y_pairs[rows[a]]; (p,).

    gradient: (p,); s_pairs, y_pairs: (memory, p); s_weights, y_weights, rows: (r,).
    Piece by piece, so each piece of the result stays in cache while all the rows add
    into it, two pairs at a time.
    """
    p = gradient.shape[0]
    direction = np.empty(p)
    pieces = (p + COMBINE_SEGMENT - 1) // COMBINE_SEGMENT
    count = rows.shape[0]
    for piece in prange(pieces):
        start = piece * COMBINE_SEGMENT
        stop = min(start + COMBINE_SEGMENT, p)
        part = direction[start:stop]
        gradient_part = gradient[start:stop]
        for i in range(part.shape[0]):
            part[i] = -gamma * gradient_part[i]
        for a in range(0, count, 2):
            last = min(a + 1, count - 1)  # an odd last pair adds with weight 0 the second time
            second_weight = 1.0 if a + 1 < count else 0.0
            s_first, s_second = s_pairs[rows[a], start:stop], s_pairs[rows[last], start:stop]
            y_first, y_second = y_pairs[rows[a], start:stop], y_pairs[rows[last], start:stop]
            ws_first, wy_first = s_weights[a], y_weights[a]
            ws_second, wy_second = second_weight * s_weights[last], second_weight * y_weights[last]
            for i in range(part.shape[0]):
                part[i] += (
                    ws_first * s_first[i]
                    + wy_first * y_first[i]
                    + ws_second * s_second[i]
                    + wy_second * y_second[i]
                )
    return direction


@njit(**KERNEL_OPTIONS)
def compact_weights(
    sy: np.ndarray, yy: np.ndarray, s_gradient: np.ndarray, y_gradient: np.ndarray, gamma: float
) -> tuple[np.ndarray, np.ndarray]:
    """The weights of S and Y in −H∇J, from the Gram matrices of the pairs, oldest first.

    sy: (k, k) with sy[i, j] = s_i·y_j (only i <= j is read: R and its diagonal D);
    yy: (k, k) = YᵀY; s_gradient, y_gradient: (k,) Sᵀ∇J and Yᵀ∇J.  With u = R⁻¹Sᵀ∇J
    and t = R⁻ᵀ((D + γYᵀY)u − γYᵀ∇J), −H∇J = −γ∇J − S t + γ Y u.
    Returns (−t, γu).
    """
    k = s_gradient.shape[0]
    u = np.empty(k)
    for i in range(k - 1, -1, -1):  # R u = Sᵀ∇J, R upper triangular
        total = s_gradient[i]
        for j in range(i + 1, k):
            total -= sy[i, j] * u[j]
        u[i] = total / sy[i, i]
    rhs = np.empty(k)
    for i in range(k):
        total = sy[i, i] * u[i] - gamma * y_gradient[i]
        for j in range(k):
            total += gamma * yy[i, j] * u[j]
        rhs[i] = total
    t = np.empty(k)
    for i in range(k):  # Rᵀ t = rhs, Rᵀ lower triangular
        total = rhs[i]
        for j in range(i):
            total -= sy[j, i] * t[j]
        t[i] = total / sy[i, i]
    return -t, gamma * u
