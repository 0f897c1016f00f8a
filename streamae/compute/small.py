"""Products of one compute block vectorised along its rows, for small layers; the choice against BLAS.

Layout.  The tiled path keeps a block in the hidden kernels' transposed layout end to
end: the block x (rows, n) is transposed once into xᵀ (n, rows), and every product is one
of two forms whose vectors run along the block's rows:

- :func:`rows_product`, ``out (p, rows) = B (p, k) · Aᵀ (k, rows)``: a weight broadcast times
  a vector of rows, FMA'd into the output; tiles of eight outputs by two vectors of rows,
  so two loaded vectors feed sixteen FMAs and no output ends in a horizontal sum.  It
  runs the gradient pass's forward product a2ᵀ = W1·xᵀ, the decoder z3ᵀ = b2 + W2·a2ᵀ
  (bias folded in) and the back-propagated error eᵀ = W2ᵀ·δ3ᵀ.
- :func:`row_dots`, ``out (p, q) = A (p, rows) · B (q, rows)ᵀ``: the weight gradient
  Σ δ3 a2ᵀ, dot products several hundred rows long, in tiles of 4 x 4 outputs whose
  vectors of partial sums share one horizontal-sum tree.

Σ [e; g] xᵀ takes x row-major as it comes, in either path: :func:`rows_product` with the
block's rows as its k (x's rows are the vectors), or OpenBLAS, by its own measured
choice; pass 1's forward product stays with OpenBLAS (it would need the transpose for
itself alone).

The elementwise kernels of :mod:`streamae.compute.kernels` run unchanged between them (the
output kernel is elementwise, so it runs on the transposed z3ᵀ and xᵀ; see
:mod:`streamae.compute.passes`).  Nothing here knows the activation.

The products and the transpose run as register tiles (:mod:`streamae.compute.simd`):
explicit 512-bit vector code, since the loops Numba vectorised on its own ran the products
slower than OpenBLAS.  What each product gains or loses against OpenBLAS is measured by
``benchmarks/bench_kernels.py``; the figures are in ``benchmarks/README.md`` ("Figures
that left the compute docstrings").

Whether the tiles beat OpenBLAS is measured, not assumed, for two switches (the tiled
block, and single-pass's input-layer sums Σ [e; g] xᵀ as tiles with the block's rows as
their k), on the host that runs them: :mod:`streamae.compute.calibration` times the
objective a run needs both ways on first use and keeps the result.  Which one wins
depends on the CPU and the layer's shape, by margins of a few percent, smaller than a
shared host's drift (``benchmarks/README.md`` keeps the tables from two hosts), which is
why the choice needs a margin over the noise.
OpenBLAS (0.3.30, SkylakeX) runs a block of m·n·k ≤ 10⁶ in small-matrix kernels that skip packing (see
:func:`streamae.compute.passes.gradient_pass` for the weights' storage chosen for
them); the decoder's is the one the tiles come nowhere near.
"""

from __future__ import annotations

from numba import njit

from streamae.compute.kernels import KERNEL_OPTIONS, STRICT_OPTIONS
from streamae.compute.simd import VECTOR_BYTES, dot_tile, fma_tile, fma_tile_masked, transpose_tile

# The product paths a caller may ask for: "auto" (as calibrated, see
# streamae.compute.calibration), "blas" or "tiled".
PRODUCTS = ("auto", "blas", "tiled")

# Product-only kernels: no activation here (the elementwise kernels own those).  The
# tiles and the scalar edges alike sum each output over k (or over rows) in one fixed
# order, one FMA per term ("contract" lets LLVM fuse the edges' a·b + c): the result is a
# fixed function of the inputs (bitwise repeatable), and an FMA rounds once where a
# multiply and an add round twice.
PRODUCT_OPTIONS = {"cache": True, "nogil": True, "error_model": "numpy", "fastmath": {"contract"}}


@njit(**STRICT_OPTIONS)
def rows_are_contiguous(array):
    """Whether the values along each row of a 2-D array are adjacent (what the tiles load)."""
    return array.shape[1] <= 1 or array.strides[1] == array.itemsize


@njit(**PRODUCT_OPTIONS)
def rows_product(B, AT, bias, out):
    """out (p, rows) <- bias[:, None] + B (p, k) · AT (k, rows), vectorised along rows.

    AT is the other factor stored transposed, one contiguous row per k; bias is (p,) or
    (0,) for none.  Any p, k and rows.  Output rows go in tiles of 8, 4, 2 and 1
    (:func:`_output_tiles`), each swept along the rows by register tiles of two vectors,
    then one, then one masked for the last rows (:func:`_row_tiles`).  Each output is summed over k in
    increasing order, one FMA per term, starting from its bias.
    """
    if not (rows_are_contiguous(B) and rows_are_contiguous(AT) and rows_are_contiguous(out)):
        raise ValueError("rows_product needs arrays whose rows are contiguous")
    p = B.shape[0]
    rows = AT.shape[1]
    with_bias = bias.shape[0] == p
    for j in range(p):
        start = bias[j] if with_bias else out.dtype.type(0.0)
        target = out[j]
        for r in range(rows):
            target[r] = start
    _output_tiles(B, AT, out)


@njit(**PRODUCT_OPTIONS)
def _output_tiles(B, AT, out):
    """out += B · AT over output rows in tiles of 8, then the rest as 4, 2 and 1."""
    p = B.shape[0]
    j = 0
    while j + 8 <= p:
        _row_tiles(B, AT, out, j, 8)
        j += 8
    for count in (4, 2, 1):
        if j + count <= p:
            _row_tiles(B, AT, out, j, count)
            j += count


@njit(**PRODUCT_OPTIONS)
def _row_tiles(B, AT, out, j, count):
    """out[j:j+count] += B[j:j+count] · AT along all rows: tiles of two vectors, then one,
    then one masked vector for the rows past the last whole one."""
    rows = AT.shape[1]
    lanes = VECTOR_BYTES // out.itemsize
    r = 0
    while r + 2 * lanes <= rows:
        _tile(B, AT, out, j, r, count, 2, lanes)
        r += 2 * lanes
    if r + lanes <= rows:
        _tile(B, AT, out, j, r, count, 1, lanes)
        r += lanes
    if r < rows:
        _tile(B, AT, out, j, r, count, 0, rows - r)


@njit(inline="always", **PRODUCT_OPTIONS)
def _tile(B, AT, out, j, r, count, vectors, valid):
    """One register tile of ``count`` (8, 4, 2 or 1) outputs by ``vectors`` vectors of
    rows, or (``vectors`` 0) by one vector of which ``valid`` lanes exist.

    Inlined, so ``vectors`` stays the literal constant of the call site that
    :func:`streamae.compute.simd.fma_tile` needs.
    """
    if count == 8:
        _sized_tile(B, AT, out, j, r, 8, vectors, valid)
    elif count == 4:
        _sized_tile(B, AT, out, j, r, 4, vectors, valid)
    elif count == 2:
        _sized_tile(B, AT, out, j, r, 2, vectors, valid)
    else:
        _sized_tile(B, AT, out, j, r, 1, vectors, valid)


@njit(inline="always", **PRODUCT_OPTIONS)
def _sized_tile(B, AT, out, j, r, outputs, vectors, valid):
    if vectors == 0:
        fma_tile_masked(B, AT, out, j, r, valid, outputs)
    else:
        fma_tile(B, AT, out, j, r, outputs, vectors)


@njit(**PRODUCT_OPTIONS)
def row_dots(A, B, out):
    """out (p, q) <- A (p, rows) · B (q, rows)ᵀ: dot products along the long rows.

    The weight gradients of a block (Σ over its rows) in the transposed layout.  Tiles of
    4 x 4 outputs (:func:`streamae.compute.simd.dot_tile`) sum the rows up to the last
    whole vector; the last tile of each axis overlaps the one before when p or q is not a
    multiple of four (outputs written twice get the same value), and p or q below four
    go one output at a time.  The rows past the last whole vector are then added in
    order.  Every sum's order is fixed, so the result is bitwise repeatable.
    """
    if not (rows_are_contiguous(A) and rows_are_contiguous(B) and rows_are_contiguous(out)):
        raise ValueError("row_dots needs arrays whose rows are contiguous")
    p, rows = A.shape
    q = B.shape[0]
    lanes = VECTOR_BYTES // out.itemsize
    vector_rows = rows - rows % lanes
    if p < 4 or q < 4:
        for i in range(p):
            for j in range(q):
                dot_tile(A, B, out, i, j, vector_rows, 1, 1)
    else:
        for ti in range((p + 3) // 4):
            i = min(4 * ti, p - 4)
            for tj in range((q + 3) // 4):
                dot_tile(A, B, out, i, min(4 * tj, q - 4), vector_rows, 4, 4)
    for i in range(p):
        for j in range(q):
            total = out[i, j]
            for r in range(vector_rows, rows):
                total = total + A[i, r] * B[j, r]
            out[i, j] = total


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
    """xt (n, rows) <- x (rows, n)ᵀ: register tiles of L x L values, then the edges.

    L is the tile vectors' length (:func:`streamae.compute.simd.transpose_tile`).  About
    half the time of the loop it replaced, which moved eight rows' values one at a time
    (``benchmarks/bench_kernels.py``; figures in ``benchmarks/README.md``).
    """
    if not (rows_are_contiguous(x) and rows_are_contiguous(xt)):
        raise ValueError("transpose_into needs arrays whose rows are contiguous")
    rows, n = x.shape
    lanes = VECTOR_BYTES // x.itemsize
    row_end = rows - rows % lanes
    column_end = n - n % lanes
    for r in range(0, row_end, lanes):
        for c in range(0, column_end, lanes):
            transpose_tile(x, xt, r, c)
        for c in range(column_end, n):
            for i in range(r, r + lanes):
                xt[c, i] = x[i, c]
    for r in range(row_end, rows):
        for c in range(n):
            xt[c, r] = x[r, c]
