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

from typing import NamedTuple

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

    W1T: (n, s) W1ᵀ made contiguous (see :class:`Weights` for why).
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


class Weights(NamedTuple):
    """The parameters in the compute dtype, allocated once and overwritten at each point.

    W1 (s, n), W2 (n, s), b1 (s,), b2 (n,); W1T (n, s) and W2T (s, n) are W1ᵀ and W2ᵀ made
    contiguous: with those operands OpenBLAS runs a2ᵀ = W1·xᵀ and z3 = a2·W2ᵀ faster for
    small layers, whose blocks (m·n·k ≤ 10⁶) fall in its small-matrix kernels, which
    differ by transpose case (at n = 64, s = 25, 512-row blocks, one core: 90 against 69
    and 167 against 136 GFLOP/s, benchmarks/bench_kernels.py's layouts table).  For the
    large layers the two ways ran within 4% of each other there, and whole evaluations of
    (b) and (c) ran level either way (in rotation).
    """

    W1: np.ndarray
    W1T: np.ndarray
    W2: np.ndarray
    W2T: np.ndarray
    b1: np.ndarray
    b2: np.ndarray


class Plan(NamedTuple):
    """What one gradient pass does, fixed for the pass (built once a pass, not a block).

    activation: the hidden nonlinearity's flag (``kernels.SIGMOID``, ``kernels.TANH``);
    linear: the linear decoder; single: the single-pass scheme (see :func:`gradient_pass`);
    tiled: each block's products by register tiles along the rows (see
    :mod:`streamae.compute.small`) instead of BLAS; tiled_sums: the input layer's sums
    Σ [e; g] xᵀ by register tiles (either path); block_rows: rows per compute block;
    sparsity (s,): the term added to W2ᵀδ3 in δ2, in the compute dtype (zeros for
    single-pass).
    """

    activation: int
    linear: bool
    single: bool
    tiled: bool
    tiled_sums: bool
    block_rows: int
    sparsity: np.ndarray


class Scratch(NamedTuple):
    """One lane's per-block scratch, allocated once (sizes for blocks of up to ``rows``).

    hidden (>= s·rows,) a2ᵀ; eg (>= 2s·rows,) [e; g]; output (>= rows·n,) z3 and δ3;
    block_dW1 (2s, n) and block_dW2 (n, s) a block's weight gradients; discard (s,) float64,
    a sink for the sums a pass does not need; column (n,) the output kernel's partial
    column sums.  The tiled path's: transposed (>= n·rows,) xᵀ, row_buffer (>= 2·rows,)
    in the compute dtype, row_sink (>= rows,) float64.
    """

    hidden: np.ndarray
    eg: np.ndarray
    output: np.ndarray
    block_dW1: np.ndarray
    block_dW2: np.ndarray
    discard: np.ndarray
    column: np.ndarray
    transposed: np.ndarray
    row_buffer: np.ndarray
    row_sink: np.ndarray


class Totals(NamedTuple):
    """Views of one pass's float64 totals ``acc`` (:func:`accumulator_layout`), built once a pass.

    acc: the whole buffer (acc[0] the reconstruction term); dW1 (s·n,) Σ δ2 xᵀ or Σ e xᵀ;
    dW2 (n·s,); db1 (s,); db2 (n,); gx (s·n,) Σ g xᵀ; a2 (s,) Σ a2 and g (s,) Σ g (both the
    discard sink unless single-pass).
    """

    acc: np.ndarray
    dW1: np.ndarray
    dW2: np.ndarray
    db1: np.ndarray
    db2: np.ndarray
    gx: np.ndarray
    a2: np.ndarray
    g: np.ndarray


@njit(**STRICT_OPTIONS)
def _totals(acc, n, s, single, discard):
    """The :class:`Totals` views of acc for layers (n, s); a2 and g go to discard unless single."""
    dW1, dW2, db1, db2, gx, g, a2, _ = accumulator_layout(n, s)
    return Totals(
        acc,
        acc[dW1 : dW1 + s * n],
        acc[dW2 : dW2 + n * s],
        acc[db1 : db1 + s],
        acc[db2 : db2 + n],
        acc[gx : gx + s * n],
        acc[a2 : a2 + s] if single else discard,
        acc[g : g + s] if single else discard,
    )


@njit(**STRICT_OPTIONS)
def gradient_pass(x, weights, plan, cache, scratch, acc):
    """The gradient pass over rows x (rows, n): J's reconstruction term and ∇J's sums.

    Two-pass (``plan.single`` false): δ2 = (W2ᵀδ3 + sparsity) ⊙ f′(z2) with the known
    ``plan.sparsity`` (s,) (β·s, or (β/2)·s(q̂) for tanh: see
    :func:`streamae.compute.objective.sparsity_delta`).  Single-pass (``plan.single`` true,
    sparsity zeros): e = W2ᵀδ3 ⊙ f′(z2) and the extras Σ g xᵀ, Σ g, Σ a2 are accumulated so
    the sparsity term can be added after the pass.  weights: :class:`Weights`; plan:
    :class:`Plan`; cache (s·rows,) holds pass 1's activations (in-core) or is (0,);
    scratch: :class:`Scratch`; acc: float64 totals laid out by :func:`accumulator_layout`.
    """
    rows, n = x.shape
    s = weights.W1.shape[0]
    totals = _totals(acc, n, s, plan.single, scratch.discard)
    for first in range(0, rows, plan.block_rows):
        count = min(plan.block_rows, rows - first)
        block_cache = cache[s * first : s * (first + count)] if cache.shape[0] > 0 else cache
        _block(x[first : first + count], block_cache, weights, plan, scratch, totals)


@njit(**STRICT_OPTIONS)
def _block(xb, cache, weights, plan, scratch, totals):
    """One compute block xb (count, n) of :func:`gradient_pass`, by BLAS or by tiles.

    Both paths keep the hidden layer transposed, (s, count); ``plan.tiled`` decides how the
    products run and the output layer's layout (:func:`_output_layer`).  The tiled path
    transposes xb once into xᵀ (n, count), which its products take along the rows.
    cache: this block's (s·count,) cached activations, or (0,).  eg (2s, count) holds
    [e; g]: e2t the back-propagated error (then δ2), slope f′(z2).
    """
    count, n = xb.shape
    s = weights.W1.shape[0]
    eg = scratch.eg[: 2 * s * count].reshape(2 * s, count)
    e2t = eg[:s]
    slope = eg[s:]
    xt = scratch.transposed[: n * count].reshape(n, count)
    if plan.tiled:
        transpose_into(xb, xt)
    a2t = _hidden_layer(xb, xt, cache, weights, plan, scratch, slope, totals)
    z3 = _output_layer(xb, xt, a2t, weights, plan, scratch, totals)
    add_into(totals.dW2, scratch.block_dW2)
    if plan.tiled:
        rows_product(weights.W2T, z3, xb[0, :0], e2t)
    else:
        np.dot(weights.W2.T, z3.T, e2t)
    hidden_backward(e2t, slope, plan.sparsity, totals.db1)
    # Σ [e; g] xᵀ takes x row-major as it is: an ordinary GEMM (K = rows) for BLAS, or the
    # broadcast tiles with the block's rows as their k (see _input_layer_sums).
    _input_layer_sums(eg, xb, plan, scratch.block_dW1, totals)


@njit(**STRICT_OPTIONS)
def _hidden_layer(xb, xt, cache, weights, plan, scratch, slope, totals):
    """a2ᵀ (s, count) of the block: the cached activations, or f(W1·xᵀ + b1) into scratch.hidden.

    Writes the slope (s, count) f′(z2); a fresh forward adds Σ a2 and Σ f′ into the totals.
    The product: BLAS on xb (count, n), or tiles on xt (n, count) (``plan.tiled``).
    """
    count = xb.shape[0]
    s = weights.W1.shape[0]
    if cache.shape[0] > 0:
        a2t = cache.reshape(s, count)
        slope_of(a2t, plan.activation, slope)
        return a2t
    a2t = scratch.hidden[: s * count].reshape(s, count)
    if plan.tiled:
        rows_product(weights.W1, xt, xb[0, :0], a2t)  # a zero-length view: no bias, no allocation
    else:
        np.dot(weights.W1T.T, xb.T, a2t)
    hidden_forward(a2t, weights.b1, plan.activation, slope, totals.a2, totals.g)
    return a2t


@njit(**STRICT_OPTIONS)
def _output_layer(xb, xt, a2t, weights, plan, scratch, totals):
    """δ3 of the block in scratch.output, its J term and Σ δ3 added, Σ δ3 a2ᵀ in block_dW2.

    BLAS: z3 = a2·W2ᵀ (count, n), returned as δ3 (count, n).  Tiled: the decoder runs as
    z3ᵀ = b2 + W2·a2ᵀ (n, count) and the output kernel, elementwise, runs on z3ᵀ and xᵀ as
    if they were (rows, n) arrays with a zero bias: its column sums then fall along the
    block's rows, into the sink, and Σ δ3 is taken as z3ᵀ's row sums instead; returned as
    δ3ᵀ (n, count).
    """
    count, n = xb.shape
    if plan.tiled:
        z3t = scratch.output[: n * count].reshape(n, count)
        rows_product(weights.W2, a2t, weights.b2, z3t)
        zeros = scratch.row_buffer[:count]
        zeros[:] = 0.0
        sink = scratch.row_sink[:count]
        column = scratch.row_buffer[count : 2 * count]
        totals.acc[0] += output_backward(z3t, zeros, xt, plan.linear, sink, column)
        add_row_sums(z3t, totals.db2)
        row_dots(z3t, a2t, scratch.block_dW2)
        return z3t
    z3 = scratch.output[: count * n].reshape(count, n)
    np.dot(a2t.T, weights.W2T, z3)
    totals.acc[0] += output_backward(z3, weights.b2, xb, plan.linear, totals.db2, scratch.column)
    np.dot(z3.T, a2t.T, scratch.block_dW2)
    return z3


@njit(**STRICT_OPTIONS)
def splits_input_sums(s, n, rows):
    """Whether single-pass's [e; g]·x (2s x rows times rows x n) runs as two products.

    Two when each half falls within :data:`SMALL_GEMM_VOLUME` and the whole does not:
    each half in OpenBLAS's small-matrix kernels beats the stacked product outside them
    at the small layers, and stacking won at every other shape measured
    (``benchmarks/bench_kernels.py``'s layouts table; figures in ``benchmarks/README.md``).
    """
    volume = s * n * rows
    return volume <= SMALL_GEMM_VOLUME < 2 * volume


@njit(**STRICT_OPTIONS)
def _input_layer_sums(eg, xb, plan, block_dW1, totals):
    """Add Σ e xᵀ of a block into totals.dW1 (s·n,), and single-pass's Σ g xᵀ into totals.gx.

    eg (2s, count) is [e; g], xb (count, n) the block's rows; block_dW1 (2s, n) scratch.
    ``plan.tiled_sums``: by :func:`streamae.compute.small.rows_product` with the block's rows as
    its k (each output a weight-broadcast FMA chain over the rows, x's rows loaded as
    vectors).  Otherwise BLAS: single-pass stacks [e; g] so both sums are one product
    (K = count rows), or runs two where :func:`splits_input_sums` says.
    """
    s = eg.shape[0] // 2
    single = plan.single
    if plan.tiled_sums:
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
    add_into(totals.dW1, block_dW1[:s])
    if single:
        add_into(totals.gx, block_dW1[s:])
