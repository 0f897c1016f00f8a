"""Register-tiled Numba products for small layers, and the measured choice against BLAS.

Two of a block's five products reduce over the short visible dimension n and write a
hidden-layer array ``(s, rows)``: the forward ``a2ᵀ = W1 · xᵀ`` and the back-propagated
error ``eᵀ = W2ᵀ · δ3ᵀ``.  Both are ``out = B · Aᵀ`` with A (rows, n) and B (s, n) contiguous
along n, which :func:`tiled_abt` computes as 4 x 4 tiles of dot products: sixteen
accumulators that stay in registers while the loop over n streams four rows of A and four
of B (LLVM vectorises that loop; eight loads feed sixteen FMAs).

Whether that beats OpenBLAS is measured, not assumed: :data:`MEASURED` holds one run of
``python benchmarks/bench_kernels.py`` (one core, 512-row blocks, best of 15 x 50 calls,
float32, the host busy: load average ~6), and :func:`use_tiled` follows it.  On this
machine OpenBLAS won at every shape measured, so BLAS stays the default everywhere; the
tiled path exists, is tested on both sides of the choice, and is re-measured by the
benchmark (``--products tiled`` forces it).  What limits it: the sixteen horizontal sums
at the end of every tile, ~6 instructions each against the 8 FMAs per accumulator that
n = 64 gives with 8-lane vectors (LLVM emits 256-bit vectors here).
"""

from __future__ import annotations

from numba import njit

from streamae.compute.kernels import KERNEL_OPTIONS

PRODUCTS = ("auto", "blas", "tiled")

# bench_kernels.py, 2026-11-30 (busy host): GFLOP/s of out = B·Aᵀ, A (512, n), B (s, n),
# one core, as (n, s): (tiled, OpenBLAS).
MEASURED = {
    (64, 25): (53.5, 72.6),
    (64, 64): (49.5, 108.1),
    (64, 100): (32.6, 120.5),
    (128, 50): (41.0, 103.1),
    (192, 400): (38.4, 82.3),
    (784, 196): (38.1, 77.0),
    (32, 16): (37.6, 59.2),
    (16, 25): (14.6, 43.5),
}


def crossover(measured: dict) -> int:
    """The largest n·s up to which the tiled kernel beat BLAS at every measured shape.

    Shapes are taken in order of n·s and the walk stops at the first BLAS win, so one
    noisy sample among large layers cannot switch small ones over (0: tiled nowhere).
    """
    limit = 0
    for (n, s), (tiled, blas) in sorted(measured.items(), key=lambda item: item[0][0] * item[0][1]):
        if tiled <= blas:
            break
        limit = n * s
    return limit


# The choice of "auto": tiled for layers with n·s up to this (0: BLAS everywhere).
TILED_MAX_NS = crossover(MEASURED)


def use_tiled(n_visible: int, n_hidden: int, products: str = "auto") -> bool:
    """Whether the register-tiled kernels run the n-reducing products of this layer size.

    ``products``: "auto" (the measured crossover, :data:`TILED_MAX_NS`), "blas" or "tiled".
    """
    if products not in PRODUCTS:
        raise ValueError(f"products must be one of {', '.join(PRODUCTS)}, got {products!r}")
    if products != "auto":
        return products == "tiled"
    return n_visible * n_hidden <= TILED_MAX_NS


@njit(**KERNEL_OPTIONS)
def tiled_abt(A, B, out):
    """out (s, rows) <- B (s, k) · A (rows, k)ᵀ, in 4 x 4 register tiles.

    A and B are C-contiguous along k; out is written whole (no accumulation).  Any rows,
    s and k (the edges run as single dot products).  Each output is one dot product over
    k in a fixed order, so the result is a fixed function of the inputs.
    """
    rows, k_len = A.shape
    s = B.shape[0]
    zero = A.dtype.type(0.0)
    row_end = rows - rows % 4
    hidden_end = s - s % 4
    for i in range(0, row_end, 4):
        a0, a1, a2, a3 = A[i], A[i + 1], A[i + 2], A[i + 3]
        for j in range(0, hidden_end, 4):
            b0, b1, b2, b3 = B[j], B[j + 1], B[j + 2], B[j + 3]
            c00 = c01 = c02 = c03 = zero
            c10 = c11 = c12 = c13 = zero
            c20 = c21 = c22 = c23 = zero
            c30 = c31 = c32 = c33 = zero
            for k in range(k_len):
                x0, x1, x2, x3 = a0[k], a1[k], a2[k], a3[k]
                w0, w1, w2, w3 = b0[k], b1[k], b2[k], b3[k]
                c00 += x0 * w0
                c01 += x0 * w1
                c02 += x0 * w2
                c03 += x0 * w3
                c10 += x1 * w0
                c11 += x1 * w1
                c12 += x1 * w2
                c13 += x1 * w3
                c20 += x2 * w0
                c21 += x2 * w1
                c22 += x2 * w2
                c23 += x2 * w3
                c30 += x3 * w0
                c31 += x3 * w1
                c32 += x3 * w2
                c33 += x3 * w3
            out[j, i], out[j + 1, i], out[j + 2, i], out[j + 3, i] = c00, c01, c02, c03
            out[j, i + 1], out[j + 1, i + 1], out[j + 2, i + 1], out[j + 3, i + 1] = c10, c11, c12, c13
            out[j, i + 2], out[j + 1, i + 2], out[j + 2, i + 2], out[j + 3, i + 2] = c20, c21, c22, c23
            out[j, i + 3], out[j + 1, i + 3], out[j + 2, i + 3], out[j + 3, i + 3] = c30, c31, c32, c33
        for j in range(hidden_end, s):
            for r in range(4):
                out[j, i + r] = _dot(A[i + r], B[j])
    for i in range(row_end, rows):
        for j in range(s):
            out[j, i] = _dot(A[i], B[j])


@njit(**KERNEL_OPTIONS)
def _dot(a, b):
    """Σ a[k]·b[k] over two contiguous vectors of equal length."""
    total = a.dtype.type(0.0)
    for k in range(a.shape[0]):
        total += a[k] * b[k]
    return total
