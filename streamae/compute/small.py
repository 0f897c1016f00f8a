"""Products of one compute block vectorised along its rows, for small layers; the choice against BLAS.

Layout.  The tiled path keeps a block in the hidden kernels' transposed layout end to
end: the block x (rows, n) is transposed once into xᵀ (n, rows), and every product is one
of two forms whose vectors run along the block's rows:

- :func:`rows_product`, ``out (p, rows) = B (p, k) · Aᵀ (k, rows)``: a weight broadcast times
  a vector of rows, FMA'd into the output; four outputs and four k at a time, so four
  loaded vectors feed sixteen FMAs and no output ends in a horizontal sum (what sank the
  earlier 4 x 4 dot-product tiles: 16 horizontal sums per 8 FMAs per accumulator).  It
  runs the gradient pass's forward product a2ᵀ = W1·xᵀ, the decoder z3ᵀ = b2 + W2·a2ᵀ
  (bias folded in) and the back-propagated error eᵀ = W2ᵀ·δ3ᵀ.
- :func:`row_dots`, ``out (p, q) = A (p, rows) · B (q, rows)ᵀ``: the weight gradient
  Σ δ3 a2ᵀ, dot products several hundred rows long (one horizontal sum each, cheap at
  that length).  Σ [e; g] xᵀ stays with OpenBLAS (x is at hand row-major, an ordinary
  GEMM there, and OpenBLAS ran it faster), and so does pass 1's forward product (it
  would need the transpose for itself alone).

The elementwise kernels of :mod:`streamae.compute.kernels` run unchanged between them (the
output kernel is elementwise, so it runs on the transposed z3ᵀ and xᵀ; see
:mod:`streamae.compute.passes`).  Nothing here knows the activation.

Whether that beats OpenBLAS is measured, not assumed: :data:`MEASURED` holds one run of
``python benchmarks/bench_kernels.py`` (2026-11-30 11:45 UTC, one core for both, the
objective's compute blocks, float32, medians in rotation, load average 1.18 at the start)
and :func:`use_tiled` follows it.  In that run the tiled block won only at 16 x 25
(1.04x, within the host's run-to-run spread), so ``auto`` takes it for n·s ≤ 400 and
BLAS above.  What keeps BLAS ahead for case (a): a 512-row block is m·n·k = 819,200 ≤
10⁶, where OpenBLAS (0.3.30, SkylakeX) runs its small-matrix kernels (for the transpose
cases its permit function allows), and with the weights stored as the BLAS path stores
them (see :func:`streamae.compute.passes.gradient_pass`) the forward product ran at 90
against 69 GFLOP/s and the decoder at 167 against 136, where the row-vectorised products
and the transpose of x (20 us a block) do not keep up.  (Three earlier runs the same
morning had BLAS ahead at every shape, but they let OpenBLAS use both cores for the large
shapes: the benchmark loaded SciPy's BLAS only after setting the one-thread limit.)
Two limits found on the way: Numba's LLVM tunes this CPU for 256-bit vectors (a
per-function ``"prefer-vector-width"="512"`` made rows_product use zmm and ~10% faster,
not adopted: it needs an llvmlite attribute hack), and the loop vectoriser keeps each
output's four FMAs a dependent chain (the 4 x 4 tile was the fastest of those tried, see
:func:`_four_rows`).
"""

from __future__ import annotations

from numba import njit

from streamae.compute.kernels import KERNEL_OPTIONS, STRICT_OPTIONS

PRODUCTS = ("auto", "blas", "tiled")

# bench_kernels.py, 2026-11-30 11:45 UTC (load average 1.18 at the start): GFLOP/s
# (10·rows·n·s) of one single-pass gradient pass over 8 blocks of the objective's rows
# (1024 for 16 x 25 and 32 x 16, 512 for the others), one core, float32, as (n, s):
# (tiled, OpenBLAS).  The whole block, not one product: that is what the choice switches.
MEASURED = {
    (16, 25): (33.1, 31.9),
    (32, 16): (37.3, 56.3),
    (64, 25): (38.1, 63.0),
    (64, 64): (46.0, 58.9),
    (64, 100): (45.5, 59.4),
    (128, 50): (69.9, 81.9),
    (192, 400): (63.7, 107.9),
    (784, 196): (72.5, 108.2),
}


def crossover(measured: dict) -> int:
    """The largest n·s up to which the tiled block beat BLAS at every measured shape.

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
    """Whether the row-vectorised block (the passes' tiled path) runs this layer size.

    ``products``: "auto" (the measured crossover, :data:`TILED_MAX_NS`), "blas" or "tiled".
    """
    if products not in PRODUCTS:
        raise ValueError(f"products must be one of {', '.join(PRODUCTS)}, got {products!r}")
    if products != "auto":
        return products == "tiled"
    return n_visible * n_hidden <= TILED_MAX_NS


# Product-only kernels: no activation here (the elementwise kernels own those).
# rows_product keeps Numba's strict float order per output, only contracting a·b + c into
# one FMA ("contract"): each output is still summed over k in one fixed order, so the
# result is a fixed function of the inputs (bitwise repeatable), and an FMA rounds once
# where a multiply and an add round twice, so it is never less accurate than the float64
# twin's tolerance (1e-12) allows.
PRODUCT_OPTIONS = {"cache": True, "nogil": True, "error_model": "numpy", "fastmath": {"contract"}}


@njit(**PRODUCT_OPTIONS)
def rows_product(B, AT, bias, out):
    """out (p, rows) <- bias[:, None] + B (p, k) · AT (k, rows), vectorised along rows.

    AT is the other factor stored transposed, one contiguous row per k; bias is (p,) or
    (0,) for none.  Any p, k and rows.  Four output rows are updated together, four k at
    a time (:func:`_four_rows`); the last p mod 4 rows one at a time, four k at a time
    (:func:`_one_row`: a quarter of a tile's FMAs for each loaded vector, but a third of
    its time, where an overlapping fourth tile measured 1/6 slower at p = 25).  Each
    output is summed over k in increasing order.
    """
    p = B.shape[0]
    for j in range(0, p - 3, 4):
        _four_rows(B, AT, bias, out, j)
    for j in range(p - p % 4, p):
        _one_row(B, AT, bias, out, j)


@njit(**PRODUCT_OPTIONS)
def _four_rows(B, AT, bias, out, j):
    """out[j:j+4] <- bias[j:j+4] + B[j:j+4] · AT, four k at a time.

    Each vector of AT loaded feeds four FMAs (a broadcast weight times a vector of rows),
    each output vector is loaded and stored once per four k, and no output needs a
    horizontal sum.  Measured against 2x8, 4x2, 4x8, 6x4, 8x2, 8x4 and 12x2 tiles (outputs
    x k) and a tree-ordered sum, 4x4 was the fastest here: longer chains of dependent
    FMAs per output cost more than the loads and stores they save.
    """
    k_len = B.shape[1]
    rows = AT.shape[1]
    with_bias = bias.shape[0] == B.shape[0]
    o0, o1, o2, o3 = out[j], out[j + 1], out[j + 2], out[j + 3]
    zero = out.dtype.type(0.0)
    s0 = bias[j] if with_bias else zero
    s1 = bias[j + 1] if with_bias else zero
    s2 = bias[j + 2] if with_bias else zero
    s3 = bias[j + 3] if with_bias else zero
    for r in range(rows):
        o0[r], o1[r], o2[r], o3[r] = s0, s1, s2, s3
    k = 0
    while k + 4 <= k_len:
        x0, x1, x2, x3 = AT[k], AT[k + 1], AT[k + 2], AT[k + 3]
        w00, w01, w02, w03 = B[j, k], B[j, k + 1], B[j, k + 2], B[j, k + 3]
        w10, w11, w12, w13 = B[j + 1, k], B[j + 1, k + 1], B[j + 1, k + 2], B[j + 1, k + 3]
        w20, w21, w22, w23 = B[j + 2, k], B[j + 2, k + 1], B[j + 2, k + 2], B[j + 2, k + 3]
        w30, w31, w32, w33 = B[j + 3, k], B[j + 3, k + 1], B[j + 3, k + 2], B[j + 3, k + 3]
        for r in range(rows):
            a0, a1, a2, a3 = x0[r], x1[r], x2[r], x3[r]
            o0[r] = o0[r] + w00 * a0 + w01 * a1 + w02 * a2 + w03 * a3
            o1[r] = o1[r] + w10 * a0 + w11 * a1 + w12 * a2 + w13 * a3
            o2[r] = o2[r] + w20 * a0 + w21 * a1 + w22 * a2 + w23 * a3
            o3[r] = o3[r] + w30 * a0 + w31 * a1 + w32 * a2 + w33 * a3
        k += 4
    while k < k_len:
        x0 = AT[k]
        w0, w1, w2, w3 = B[j, k], B[j + 1, k], B[j + 2, k], B[j + 3, k]
        for r in range(rows):
            a0 = x0[r]
            o0[r] = o0[r] + w0 * a0
            o1[r] = o1[r] + w1 * a0
            o2[r] = o2[r] + w2 * a0
            o3[r] = o3[r] + w3 * a0
        k += 1


@njit(**PRODUCT_OPTIONS)
def _one_row(B, AT, bias, out, j):
    """out[j] <- bias[j] + B[j] · AT, four k at a time, k in increasing order."""
    k_len = B.shape[1]
    rows = AT.shape[1]
    o0 = out[j]
    start = bias[j] if bias.shape[0] == B.shape[0] else out.dtype.type(0.0)
    for r in range(rows):
        o0[r] = start
    k = 0
    while k + 4 <= k_len:
        x0, x1, x2, x3 = AT[k], AT[k + 1], AT[k + 2], AT[k + 3]
        w0, w1, w2, w3 = B[j, k], B[j, k + 1], B[j, k + 2], B[j, k + 3]
        for r in range(rows):
            o0[r] = o0[r] + w0 * x0[r] + w1 * x1[r] + w2 * x2[r] + w3 * x3[r]
        k += 4
    while k < k_len:
        x0 = AT[k]
        w0 = B[j, k]
        for r in range(rows):
            o0[r] = o0[r] + w0 * x0[r]
        k += 1


@njit(**KERNEL_OPTIONS)
def row_dots(A, B, out):
    """out (p, q) <- A (p, rows) · B (q, rows)ᵀ: dot products along the long rows.

    The weight gradients of a block (Σ over its rows) in the transposed layout: each
    output is one dot product over the rows, vectorised with ``reassoc`` (one horizontal
    sum per output, per several hundred rows), four outputs of A by four of B per sweep
    so eight loaded vectors feed sixteen FMAs.  The summation order is fixed by the
    compiled loop, so the result is bitwise repeatable.
    """
    p, rows = A.shape
    q = B.shape[0]
    zero = out.dtype.type(0.0)
    if p < 4 or q < 4:
        for i in range(p):
            for j in range(q):
                out[i, j] = _dot(A[i], B[j])
        return
    # Tiles of 4 x 4; the last tile of each axis overlaps the one before when p or q is
    # not a multiple of four (outputs written twice get the same value: one dot product
    # by the same code).
    for ti in range((p + 3) // 4):
        i = min(4 * ti, p - 4)
        a0, a1, a2, a3 = A[i], A[i + 1], A[i + 2], A[i + 3]
        for tj in range((q + 3) // 4):
            j = min(4 * tj, q - 4)
            b0, b1, b2, b3 = B[j], B[j + 1], B[j + 2], B[j + 3]
            c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = zero
            c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = zero
            for r in range(rows):
                x0, x1, x2, x3 = a0[r], a1[r], a2[r], a3[r]
                y0, y1, y2, y3 = b0[r], b1[r], b2[r], b3[r]
                c00 += x0 * y0
                c01 += x0 * y1
                c02 += x0 * y2
                c03 += x0 * y3
                c10 += x1 * y0
                c11 += x1 * y1
                c12 += x1 * y2
                c13 += x1 * y3
                c20 += x2 * y0
                c21 += x2 * y1
                c22 += x2 * y2
                c23 += x2 * y3
                c30 += x3 * y0
                c31 += x3 * y1
                c32 += x3 * y2
                c33 += x3 * y3
            out[i, j], out[i, j + 1], out[i, j + 2], out[i, j + 3] = c00, c01, c02, c03
            out[i + 1, j], out[i + 1, j + 1], out[i + 1, j + 2], out[i + 1, j + 3] = c10, c11, c12, c13
            out[i + 2, j], out[i + 2, j + 1], out[i + 2, j + 2], out[i + 2, j + 3] = c20, c21, c22, c23
            out[i + 3, j], out[i + 3, j + 1], out[i + 3, j + 2], out[i + 3, j + 3] = c30, c31, c32, c33


@njit(**KERNEL_OPTIONS)
def _dot(a, b):
    """Σ a[k]·b[k] over two contiguous vectors of equal length."""
    total = a.dtype.type(0.0)
    for k in range(a.shape[0]):
        total += a[k] * b[k]
    return total


@njit(**KERNEL_OPTIONS)
def add_row_sums(block, total):
    """total (p,) float64 += the row sums of block (p, rows), each summed in float64."""
    for i in range(block.shape[0]):
        row = block[i]
        t = 0.0
        for r in range(row.shape[0]):
            t += row[r]
        total[i] += t


@njit(**STRICT_OPTIONS)
def transpose_into(x, xt):
    """xt (n, rows) <- x (rows, n)ᵀ, eight rows of x at a time.

    Eight rows of x are read along n while each row of xᵀ receives eight consecutive
    values: 2.5x faster here than a loop over single rows or columns (12 against 29 us
    for 640 x 64 float32, measured).
    """
    rows, n = x.shape
    end = rows - rows % 8
    for r in range(0, end, 8):
        s0, s1, s2, s3, s4, s5, s6, s7 = (
            x[r],
            x[r + 1],
            x[r + 2],
            x[r + 3],
            x[r + 4],
            x[r + 5],
            x[r + 6],
            x[r + 7],
        )
        for k in range(n):
            target = xt[k]
            target[r], target[r + 1], target[r + 2], target[r + 3] = s0[k], s1[k], s2[k], s3[k]
            target[r + 4], target[r + 5], target[r + 6], target[r + 7] = s4[k], s5[k], s6[k], s7[k]
    for r in range(end, rows):
        for k in range(n):
            xt[k, r] = x[r, k]
