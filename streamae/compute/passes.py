"""One pass of a scheme over a run of rows, compiled: BLAS products plus the fused kernels.

Each function walks its rows ``x`` (rows, n) in compute blocks of ``block_rows`` and does
all of a block's work inside Numba, GEMMs included (``np.dot(a, b, out)`` calls the BLAS
that SciPy ships, with no temporary and without the GIL), so a thread that calls one of
these runs a whole share of the data without coming back to Python.  Every buffer comes
in; nothing is allocated per block.

Totals are added into one flat float64 array ``acc`` per thread, laid out by
:func:`accumulator_layout`: entry 0 and the next p entries are laid out like the
objective's ``[J-term, theta]`` buffer, followed by the single-pass extras.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from streamae.compute.kernels import (
    STRICT_OPTIONS,
    add_into,
    hidden_backward,
    hidden_forward,
    output_backward,
    slope_of,
)
from streamae.compute.small import add_row_sums, row_dots, rows_product, transpose_into

# OpenBLAS (0.3.30, SkylakeX kernels) runs a single-precision product of m·n·k up to
# this in its small-matrix kernels (kernel/x86_64/sgemm_small_kernel_permit_skylakex.c),
# which skip the packing of both operands.
SMALL_GEMM_VOLUME = 1_000_000


@njit(**STRICT_OPTIONS)
def accumulator_layout(n, s):
    """Offsets in ``acc``: (dW1, dW2, db1, db2, gx, g, a2, size).

    acc[0] = Σ ½‖a3 − x‖²; acc[dW1:dW1+s·n] = Σ δ2 xᵀ (single-pass: Σ e xᵀ);
    acc[dW2:...] = Σ δ3 a2ᵀ (n·s); acc[db1:...] = Σ δ2 (s); acc[db2:...] = Σ δ3 (n);
    single-pass extras: acc[gx:...] = Σ g xᵀ (s·n), acc[g:...] = Σ g (s),
    acc[a2:...] = Σ a2 (s).
    """
    dW1 = 1
    dW2 = dW1 + s * n
    db1 = dW2 + n * s
    db2 = db1 + s
    gx = db2 + n
    g = gx + s * n
    a2 = g + s
    return dW1, dW2, db1, db2, gx, g, a2, a2 + s


@njit(**STRICT_OPTIONS)
def forward_pass(x, W1T, b1, activation, block_rows, hidden_buffer, sum_a2, cache):
    """Pass 1: Σ a2 over the rows x (rows, n) into sum_a2 (s,) float64.

    W1T: (n, s) W1ᵀ made contiguous (see :func:`gradient_pass` for why).
    activation: the hidden nonlinearity's flag (``kernels.SIGMOID`` or ``kernels.TANH``).
    hidden_buffer: (>= s·block_rows,) scratch.  cache: (s·rows,) to keep every block's
    a2 (transposed, block after block) for the in-core scheme, or (0,) to keep nothing.
    The product is OpenBLAS's for every layer size: the row-vectorised one needs the
    block transposed first, and with that transpose it lost at every shape measured
    (benchmarks/bench_kernels.py, "same + transpose"); the gradient pass's tiled path
    transposes x anyway, for the output layer.
    """
    rows = x.shape[0]
    s = W1T.shape[1]
    keep = cache.shape[0] > 0
    no_slope = np.empty((0, 1), dtype=x.dtype)
    for first in range(0, rows, block_rows):
        count = min(block_rows, rows - first)
        xb = x[first : first + count]
        if keep:
            a2t = cache[s * first : s * (first + count)].reshape(s, count)
        else:
            a2t = hidden_buffer[: s * count].reshape(s, count)
        np.dot(W1T.T, xb.T, a2t)
        hidden_forward(a2t, b1, activation, no_slope, sum_a2, sum_a2)


@njit(**STRICT_OPTIONS)
def gradient_pass(
    x,
    W1,
    W1T,
    W2,
    W2T,
    b1,
    b2,
    activation,
    linear,
    sparsity,
    single,
    tiled,
    tiled_sums,
    block_rows,
    cache,
    hidden_buffer,
    eg_buffer,
    output_buffer,
    block_dW1,
    block_dW2,
    discard,
    column,
    transposed,
    row_buffer,
    row_sink,
    acc,
):
    """The gradient pass over rows x (rows, n): J's reconstruction term and ∇J's sums.

    ``activation`` flags the hidden nonlinearity (``kernels.SIGMOID``, ``kernels.TANH``);
    ``linear`` the linear decoder.  Two-pass (``single`` false): δ2 = (W2ᵀδ3 + sparsity) ⊙
    f′(z2) with the known ``sparsity`` (s,) (β·s, or (β/2)·s(q̂) for tanh: see
    :func:`streamae.compute.objective.sparsity_delta`).  Single-pass (``single`` true,
    ``sparsity`` zeros): e = W2ᵀδ3 ⊙ f′(z2) and the extras Σ g xᵀ, Σ g, Σ a2 are
    accumulated so the sparsity term can be added after the pass.  ``W1T`` (n, s) and
    ``W2T`` (s, n) are W1ᵀ and W2ᵀ made contiguous: with those operands OpenBLAS runs
    a2ᵀ = W1·xᵀ and z3 = a2·W2ᵀ faster for small layers, whose blocks (m·n·k ≤ 10⁶)
    fall in its small-matrix kernels, which differ by transpose case (at n = 64,
    s = 25, 512-row blocks, one core: 90 against 69 and 167 against 136 GFLOP/s,
    benchmarks/bench_kernels.py's layouts table, 2026-11-30 11:45).  For the large
    layers the two ways ran within 4% of each other there, and whole evaluations of (b)
    and (c) ran level either way (in rotation).
    ``tiled`` runs each block by :func:`_tiled_block` (every product vectorised along
    the rows, see :mod:`streamae.compute.small`) instead of BLAS; ``tiled_sums`` runs the
    input layer's sums Σ [e; g] xᵀ as register tiles instead of BLAS (either path).
    ``cache`` (s·rows,) holds pass 1's activations (in-core) or is (0,).
    Scratch: hidden_buffer (>= s·block_rows,), eg_buffer (>= 2·s·block_rows,),
    output_buffer (>= block_rows·n,), block_dW1 (2s, n), block_dW2 (n, s), discard (s,)
    float64, column (n,); for the tiled path transposed (>= n·block_rows,), row_buffer
    (>= 2·block_rows,) in x's dtype and row_sink (>= block_rows,) float64.
    acc: float64 totals laid out by :func:`accumulator_layout`.
    """
    rows, n = x.shape
    s = W1.shape[0]
    dW1, dW2, db1, db2, gx, g, a2, _ = accumulator_layout(n, s)
    sum_a2 = acc[a2 : a2 + s] if single else discard
    sum_g = acc[g : g + s] if single else discard
    for first in range(0, rows, block_rows):
        count = min(block_rows, rows - first)
        xb = x[first : first + count]
        eg = eg_buffer[: 2 * s * count].reshape(2 * s, count)
        if tiled:
            block_cache = cache[s * first : s * (first + count)] if cache.shape[0] > 0 else cache
            _tiled_block(
                xb,
                W1,
                W2,
                W2T,
                b1,
                b2,
                activation,
                linear,
                sparsity,
                single,
                tiled_sums,
                block_cache,
                hidden_buffer,
                eg,
                output_buffer,
                block_dW1,
                block_dW2,
                transposed,
                row_buffer,
                row_sink,
                sum_a2,
                sum_g,
                acc,
            )
            continue
        e2t = eg[:s]
        slope = eg[s:]
        if cache.shape[0] > 0:
            a2t = cache[s * first : s * (first + count)].reshape(s, count)
            slope_of(a2t, activation, slope)
        else:
            a2t = hidden_buffer[: s * count].reshape(s, count)
            np.dot(W1T.T, xb.T, a2t)
            hidden_forward(a2t, b1, activation, slope, sum_a2, sum_g)
        z3 = output_buffer[: count * n].reshape(count, n)
        np.dot(a2t.T, W2T, z3)
        acc[0] += output_backward(z3, b2, xb, linear, acc[db2 : db2 + n], column)
        np.dot(z3.T, a2t.T, block_dW2)
        add_into(acc[dW2 : dW2 + n * s], block_dW2)
        np.dot(W2.T, z3.T, e2t)
        hidden_backward(e2t, slope, sparsity, acc[db1 : db1 + s])
        _input_layer_sums(eg, xb, single, tiled_sums, block_dW1, acc[dW1 : dW1 + s * n], acc[gx : gx + s * n])


@njit(**STRICT_OPTIONS)
def _tiled_block(
    xb,
    W1,
    W2,
    W2T,
    b1,
    b2,
    activation,
    linear,
    sparsity,
    single,
    tiled_sums,
    cache,
    hidden_buffer,
    eg,
    output_buffer,
    block_dW1,
    block_dW2,
    transposed,
    row_buffer,
    row_sink,
    sum_a2,
    sum_g,
    acc,
):
    """One block of :func:`gradient_pass` with every array along the rows (the tiled path).

    xb (count, n) is transposed once into xᵀ; the decoder runs as z3ᵀ = b2 + W2·a2ᵀ (n, count)
    and the output kernel, elementwise, runs on z3ᵀ and xᵀ as if they were (rows, n) arrays
    with a zero bias: its column sums then fall along the block's rows, into the sink,
    and Σ δ3 is taken as z3ᵀ's row sums instead.  cache: this block's (s·count,) cached
    activations, or (0,).  eg (2s, count): [e; g] as in the BLAS path.
    """
    count, n = xb.shape
    s = W1.shape[0]
    dW1, dW2, db1, db2, gx, _, _, _ = accumulator_layout(n, s)
    no_bias = xb[0, :0]  # a zero-length view: no bias, and no allocation per block
    e2t = eg[:s]
    slope = eg[s:]
    xt = transposed[: n * count].reshape(n, count)
    transpose_into(xb, xt)
    if cache.shape[0] > 0:
        a2t = cache.reshape(s, count)
        slope_of(a2t, activation, slope)
    else:
        a2t = hidden_buffer[: s * count].reshape(s, count)
        rows_product(W1, xt, no_bias, a2t)
        hidden_forward(a2t, b1, activation, slope, sum_a2, sum_g)
    z3t = output_buffer[: n * count].reshape(n, count)
    rows_product(W2, a2t, b2, z3t)
    zeros = row_buffer[:count]
    zeros[:] = 0.0
    sink = row_sink[:count]
    acc[0] += output_backward(z3t, zeros, xt, linear, sink, row_buffer[count : 2 * count])
    add_row_sums(z3t, acc[db2 : db2 + n])
    row_dots(z3t, a2t, block_dW2)
    add_into(acc[dW2 : dW2 + n * s], block_dW2)
    rows_product(W2T, z3t, no_bias, e2t)
    hidden_backward(e2t, slope, sparsity, acc[db1 : db1 + s])
    # Σ [e; g] xᵀ takes x row-major as it is: an ordinary GEMM (K = rows) for BLAS, or the
    # broadcast tiles with the block's rows as their k (see _input_layer_sums).
    _input_layer_sums(eg, xb, single, tiled_sums, block_dW1, acc[dW1 : dW1 + s * n], acc[gx : gx + s * n])


@njit(**STRICT_OPTIONS)
def splits_input_sums(s, n, rows):
    """Whether single-pass's [e; g]·x (2s x rows times rows x n) runs as two products.

    Two when each half falls within :data:`SMALL_GEMM_VOLUME` and the whole does not:
    each half in OpenBLAS's small-matrix kernels beats the stacked product outside them
    (109 against 91 GFLOP/s at n = 64, s = 25, 512 rows; 111 against 73 at 32 x 16,
    1024 rows; one core), and stacking won at every other shape measured
    (benchmarks/bench_kernels.py's layouts table, 2026-11-30 11:45).
    """
    volume = s * n * rows
    return volume <= SMALL_GEMM_VOLUME < 2 * volume


@njit(**STRICT_OPTIONS)
def _input_layer_sums(eg, xb, single, tiles, block_dW1, sum_ex, sum_gx):
    """Add Σ e xᵀ of a block into sum_ex (s·n,), and with ``single`` Σ g xᵀ into sum_gx.

    eg (2s, count) is [e; g], xb (count, n) the block's rows; block_dW1 (2s, n) scratch.
    ``tiles``: by :func:`streamae.compute.small.rows_product` with the block's rows as
    its k (each output a weight-broadcast FMA chain over the rows, x's rows loaded as
    vectors).  Otherwise BLAS: single-pass stacks [e; g] so both sums are one product
    (K = count rows), or runs two where :func:`splits_input_sums` says.
    """
    s = eg.shape[0] // 2
    if tiles:
        used = 2 * s if single else s
        no_bias = xb[0, :0]  # a zero-length view: no bias, and no allocation per block
        rows_product(eg[:used], xb, no_bias, block_dW1[:used])
    elif single:
        if splits_input_sums(s, xb.shape[1], xb.shape[0]):
            np.dot(eg[:s], xb, block_dW1[:s])
            np.dot(eg[s:], xb, block_dW1[s:])
        else:
            np.dot(eg, xb, block_dW1)
    else:
        np.dot(eg[:s], xb, block_dW1[:s])
    add_into(sum_ex, block_dW1[:s])
    if single:
        add_into(sum_gx, block_dW1[s:])
