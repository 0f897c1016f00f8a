"""Numba kernels for one block of examples: the elementwise work of the objective, fused.

The matrix products go to BLAS (see :mod:`streamae.compute.passes`); these kernels do everything
between them in one sweep each: add the bias, apply the nonlinearity, form the deltas
and slopes, and add the sums over examples into float64 totals.  They are pure
functions over arrays: no I/O, no objects, no globals; every output is passed in.

Layout.  Hidden-layer quantities are stored transposed, one row per hidden unit,
``(s, rows)``: the bias is then constant along a row and every inner loop runs over
many contiguous examples, which is what the vectoriser needs (s is 25 in the notes'
case, too short a loop to vectorise well).  Output-layer quantities keep the data's
``(rows, n)`` layout so the input block x is read as it comes from the file.

Speed.  The evaluation kernels are compiled with ``error_model="numpy"`` (Python's model
adds a zero-division branch to every ``/`` and stops LLVM vectorising the loop) and with
``reassoc`` on their own additions (so the sums over examples vectorise).  In float32 the
sigmoid (and tanh, as 2·sigmoid(2z) − 1) uses :func:`exp32`, an exp written from
vectorisable arithmetic: Numba vectorises ``np.exp`` only with Intel's SVML, which this
machine lacks (``numba -s``), and the scalar libm call costs ~3 ns against ~0.4 ns here.
float64 keeps libm's exp and tanh: it is the dtype of the correctness checks.

Determinism.  Every kernel runs serially over its block (the caller splits the work
across threads by blocks, see :mod:`streamae.compute.lanes`), so its sums are a fixed function
of the block; ``scan_values`` keeps the fixed-segment parallel scheme below.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

# Rows per parallel work item.  Large enough that the per-segment overhead is small,
# small enough that a block of a few thousand rows still splits across the cores.
SEGMENT_ROWS = 128

JIT_OPTIONS = {"cache": True, "nogil": True}
# The evaluation kernels: numpy's error model (no zero-division branch, see above) and
# reassociation of their own float additions, so reductions over examples vectorise.
# Not "fast" as a whole: exp32's range reduction must keep its order of operations, and
# it keeps its own (strict) flags when LLVM inlines it.
KERNEL_OPTIONS = {
    "cache": True,
    "nogil": True,
    "error_model": "numpy",
    "fastmath": {"reassoc", "contract"},
}
STRICT_OPTIONS = {"cache": True, "nogil": True, "error_model": "numpy"}


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


@intrinsic
def _int32_bits_as_float32(typingctx, bits):
    """Reinterpret an int32's bits as a float32 (a register move; vectorises)."""
    signature = types.float32(types.int32)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return signature, codegen


@njit(**STRICT_OPTIONS)
def exp32(x):
    """exp(x) for float32 x from vectorisable arithmetic (Cephes ``expf``).

    exp(x) = 2^k · exp(r) with k = round(x / ln 2) and |r| <= ln2 / 2; exp(r) is a degree-7
    polynomial, 2^k is built in the exponent bits.  Relative error below 1e-7 on
    [-87, 88]; x is clamped there, so the result is always finite and normal.
    """
    x = min(max(x, np.float32(-87.0)), np.float32(88.0))
    k = np.floor(x * np.float32(1.44269504088896341) + np.float32(0.5))
    # ln 2 split in two (Cody-Waite) so k·ln2 is exact to float32 precision.
    r = x - k * np.float32(0.693359375) - k * np.float32(-2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1.0)
    return p * _int32_bits_as_float32((np.int32(k) + np.int32(127)) << np.int32(23))


def sigmoid(z):
    """1 / (1 + exp(−z)) of one scalar; in compiled code float32 goes through exp32."""
    return 1.0 / (1.0 + math.exp(-z))


@overload(sigmoid, jit_options=STRICT_OPTIONS)
def _sigmoid_for(z):
    if z == types.float32:
        one = np.float32(1.0)
        return lambda z: one / (one + exp32(-z))
    return lambda z: 1.0 / (1.0 + math.exp(-z))


def tanh_unit(z):
    """tanh(z) of one scalar; in compiled code float32 goes through exp32.

    float32: tanh(z) = 2·sigmoid(2z) − 1 = 2 / (1 + exp(−2z)) − 1, from the vectorisable
    exp32 (its clamp keeps the result in [−1, 1] for any z; the absolute error near 0 is
    ~1 ulp of 1, what float32 training can use).  float64 keeps libm's tanh (the checks).
    """
    return math.tanh(z)


@overload(tanh_unit, jit_options=STRICT_OPTIONS)
def _tanh_unit_for(z):
    if z == types.float32:
        one = np.float32(1.0)
        two = np.float32(2.0)
        return lambda z: two / (one + exp32(-two * z)) - one
    return lambda z: math.tanh(z)


# The hidden layer's nonlinearity, as the int flag the kernels take (a kernel never
# branches on a Python object; see ``activation_code``).
SIGMOID = 0
TANH = 1
ACTIVATION_CODES = {"sigmoid": SIGMOID, "tanh": TANH}


def activation_code(name: str) -> int:
    """The kernels' flag for the hidden activation ``name`` ("sigmoid" or "tanh")."""
    return ACTIVATION_CODES[name]


# Examples of one hidden unit whose sum a hidden-layer kernel adds in the compute dtype
# before adding it into the float64 totals: converting and adding every element into
# float64 made the kernel 2x slower (sigmoid and slope, 4096 float32 values: 1.23 against
# 0.59 ns a value, measured), and float32 partials over 512 values stay within ~1e-6 of
# the exact sum.  The pieces are views looped from 0: a loop over range(first, stop) of
# the whole row does not vectorise (1.75 against 0.62 ns a value, measured).
PARTIAL_EXAMPLES = 512


@njit(inline="always", **KERNEL_OPTIONS)
def _hidden_piece(z, g, bias, tanh, with_slope):
    """z <- a = f(z + bias) over one piece of a unit's examples, g <- f′ when ``with_slope``.

    Returns (Σ a, Σ f′) in z's dtype (Σ f′ zero without the slope).  ``tanh`` (else the
    sigmoid) and ``with_slope`` are constants at every call site, where this is inlined.
    """
    one = z.dtype.type(1.0)
    part = z.dtype.type(0.0)
    part_slope = z.dtype.type(0.0)
    for i in range(z.shape[0]):
        a = tanh_unit(z[i] + bias) if tanh else sigmoid(z[i] + bias)
        z[i] = a
        if with_slope:
            d = one - a * a if tanh else a * (one - a)
            g[i] = d
            part_slope += d
        part += a
    return part, part_slope


@njit(**KERNEL_OPTIONS)
def hidden_forward(z2t, b1, activation, slope, sum_a2, sum_slope):
    """Hidden layer in place: ``z2t <- a2 = f(z2t + b1)``, optional slope f′(z2).

    z2t: (s, rows) pre-activations ``W1 @ x.T`` (no bias), overwritten with a2 (transposed).
    b1: (s,).  activation: ``SIGMOID`` (f′ = a2(1 − a2)) or ``TANH`` (f′ = 1 − a2²).
    slope: (s, rows) receives f′(z2), or a (0, rows) array to skip it.  sum_a2,
    sum_slope: (s,) float64 totals, increased by the row sums (sum_slope only when the
    slope is written), added up in pieces of ``PARTIAL_EXAMPLES``.
    """
    hidden, rows = z2t.shape
    want_slope = slope.shape[0] == hidden
    # Plain loops, the branches outside them: row helpers returning tuples cost 35% here
    # (measured, 25 x 4096 float32: 180 against 134 us), the loops must stay simple.  So
    # the one loop below (_hidden_piece) is inlined four times, each with its branches
    # constant: each call site compiles to its own plain loop.
    for j in range(hidden):
        bias = b1[j]
        total = 0.0
        total_slope = 0.0
        for first in range(0, rows, PARTIAL_EXAMPLES):
            z = z2t[j, first : first + PARTIAL_EXAMPLES]
            g = slope[j, first : first + PARTIAL_EXAMPLES] if want_slope else z
            if activation == TANH:
                if want_slope:
                    part, part_slope = _hidden_piece(z, g, bias, True, True)
                else:
                    part, part_slope = _hidden_piece(z, g, bias, True, False)
            elif want_slope:
                part, part_slope = _hidden_piece(z, g, bias, False, True)
            else:
                part, part_slope = _hidden_piece(z, g, bias, False, False)
            total += part
            total_slope += part_slope
        sum_a2[j] += total
        if want_slope:
            sum_slope[j] += total_slope


# Rows whose column sums a kernel adds in the compute dtype before adding them into the
# float64 totals: float32 partials over 32 rows lose at most ~32 ulp, and converting and
# adding every element into float64 made output_backward 1.7x slower (47 against 27 us
# for 640 x 64 values, measured).
PARTIAL_ROWS = 32


@njit(**KERNEL_OPTIONS)
def output_backward(z3, b2, x, linear, sum_delta3, column):
    """Output layer and its delta in place; returns the block's ``Σ ½‖a3 − x‖²`` (float64).

    z3: (rows, n) ``a2 @ W2.T`` (no bias), overwritten with δ3 = (a3 − x) ⊙ a3(1 − a3), or
    a3 − x when ``linear`` (the linear decoder a3 = z3).  b2: (n,).  x: (rows, n) the
    input block.  sum_delta3: (n,) float64 total, increased by the column sums of δ3.
    column: (n,) scratch in z3's dtype for the partial sums over ``PARTIAL_ROWS`` rows.
    """
    rows, n = z3.shape
    one = z3.dtype.type(1.0)
    squared = 0.0
    for first in range(0, rows, PARTIAL_ROWS):
        column[:] = 0.0
        part = z3.dtype.type(0.0)
        for i in range(first, min(rows, first + PARTIAL_ROWS)):
            if linear:
                for j in range(n):
                    difference = z3[i, j] + b2[j] - x[i, j]
                    z3[i, j] = difference
                    column[j] += difference
                    part += difference * difference
            else:
                for j in range(n):
                    a3 = sigmoid(z3[i, j] + b2[j])
                    difference = a3 - x[i, j]
                    delta = difference * a3 * (one - a3)
                    z3[i, j] = delta
                    column[j] += delta
                    part += difference * difference
        squared += part
        for j in range(n):
            sum_delta3[j] += column[j]
    return 0.5 * squared


@njit(**KERNEL_OPTIONS)
def hidden_backward(e2t, slope, sparsity, sum_delta2):
    """Hidden delta in place: ``e2t <- (e2t + sparsity) ⊙ slope``; row sums added.

    e2t: (s, rows) back-propagated error ``W2.T @ δ3.T``, overwritten with δ2 (transposed).
    slope: (s, rows) f′(z2).  sparsity: (s,) β·s in the block's dtype (zeros for the
    single-pass scheme, which adds that term after the pass).  sum_delta2: (s,) float64,
    added up in pieces of ``PARTIAL_EXAMPLES`` (see there).
    """
    hidden, rows = e2t.shape
    zero = e2t.dtype.type(0.0)
    for j in range(hidden):
        term = sparsity[j]
        total = 0.0
        for first in range(0, rows, PARTIAL_EXAMPLES):
            e = e2t[j, first : first + PARTIAL_EXAMPLES]
            g = slope[j, first : first + PARTIAL_EXAMPLES]
            part = zero
            for i in range(e.shape[0]):
                delta = (e[i] + term) * g[i]
                e[i] = delta
                part += delta
            total += part
        sum_delta2[j] += total


@njit(**STRICT_OPTIONS)
def slope_of(a2t, activation, slope):
    """slope (s, rows) <- f′(z2) from cached activations a2t (s, rows).

    ``SIGMOID``: a2 ⊙ (1 − a2); ``TANH``: 1 − a2² (both functions of a2 alone).
    """
    hidden, rows = a2t.shape
    one = a2t.dtype.type(1.0)
    for j in range(hidden):
        if activation == TANH:
            for i in range(rows):
                a = a2t[j, i]
                slope[j, i] = one - a * a
        else:
            for i in range(rows):
                a = a2t[j, i]
                slope[j, i] = a * (one - a)


@njit(**STRICT_OPTIONS)
def add_into(total, block):
    """total (k,) float64 += block (any shape, k elements, C order): a block's GEMM result."""
    flat = block.ravel()
    for i in range(flat.shape[0]):
        total[i] += flat[i]


@njit(parallel=True, **JIT_OPTIONS)
def hidden_activation(z2, b1, activation, partial, sum_a2):
    """Hidden layer in place: ``z2 <- f(z2 + b1)``; ``sum_a2 += column sums``.

    The row-major, Numba-parallel form, for callers that keep a2 as (rows, s) (encode).

    z2: (rows, s) pre-activations ``x @ W1.T`` (without bias), overwritten with a2.
    b1: (s,) bias.  activation: ``SIGMOID`` or ``TANH``.
    partial: (>= segments, >= s) float64 scratch.
    sum_a2: (s,) float64 running total of the hidden activations.
    """
    rows, hidden = z2.shape
    n_segments = segment_count(rows)
    one = z2.dtype.type(1.0)
    for seg in prange(n_segments):
        for j in range(hidden):
            partial[seg, j] = 0.0
        for i in range(seg * SEGMENT_ROWS, min(rows, (seg + 1) * SEGMENT_ROWS)):
            if activation == TANH:
                for j in range(hidden):
                    a = np.tanh(z2[i, j] + b1[j])
                    z2[i, j] = a
                    partial[seg, j] += a
            else:
                for j in range(hidden):
                    a = one / (one + np.exp(-(z2[i, j] + b1[j])))
                    z2[i, j] = a
                    partial[seg, j] += a
    _sum_segments(partial, n_segments, hidden, sum_a2)


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
