"""Register tiles for the row-vectorised products, written as explicit vector code.

Numba's loop vectoriser does not keep a tile of accumulators in registers across a
product's k loop: the loops of :mod:`streamae.compute.small` it compiled kept each
output's FMAs one dependent chain, stored and reloaded the outputs every few k, and ran
the products at 0.4–0.9x OpenBLAS's rate.  These intrinsics emit each tile as LLVM
vector IR instead, with explicitly typed vectors (``<16 x float>``, ``<8 x double>``)
that LLVM keeps in zmm registers on an AVX-512 CPU and splits into narrower registers
on others (the same results, more slowly).

- :func:`fma_tile`: ``out[j:j+P, r:r+V·L] += B[j:j+P, :] · AT[:, r:r+V·L]`` with L the
  vector length: P·V accumulators stay in registers over the whole k loop; each k loads
  V vectors of AT and broadcasts P weights into P·V FMAs.
- :func:`dot_tile`: ``out[i:i+P, j:j+Q] = Σ_r A[i+a, r]·B[j+b, r]`` over the first
  ``vector_rows`` rows: P·Q vectors of partial sums along the rows, then summed across
  their lanes by one fixed tree shared between them (:func:`_lane_sums`).
- :func:`transpose_tile`: an L x L tile of x moved into xᵀ through registers.

Every sum's order is fixed (k increasing in one FMA chain per output lane; rows in lane
order, then the tree), so the results are a fixed function of the inputs: bitwise
repeatable for any thread count, since the callers run them serially over a block.
P, V and Q are compile-time constants: integer literals at the call site.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

# Bytes of one vector register the tiles are written for (AVX-512).
VECTOR_BYTES = 64


def lanes_of(dtype) -> int:
    """Values of ``dtype`` in one tile vector (16 float32, 8 float64)."""
    return VECTOR_BYTES // dtype.bitwidth * 8


def _literal(value_type) -> int | None:
    """The value of an integer literal's type, or None (then Numba tries other typings)."""
    if not isinstance(value_type, types.IntegerLiteral):
        return None
    return int(value_type.literal_value)


def _same_float_matrices(*array_types) -> bool:
    """Whether every argument is a 2-D array of one float dtype (what a tile handles)."""
    first = array_types[0]
    return all(
        isinstance(a, types.Array) and a.ndim == 2 and a.dtype == first.dtype for a in array_types
    ) and first.dtype in (types.float32, types.float64)


class _Array:
    """An array argument inside codegen: base pointer (i8*) and its row stride in bytes.

    Values along a row are taken to be adjacent (the callers check it: see
    :func:`streamae.compute.small.rows_are_contiguous`).
    """

    def __init__(self, context, builder, array_type, value):
        array = context.make_array(array_type)(context, builder, value)
        self.builder = builder
        self.base = builder.bitcast(array.data, ir.IntType(8).as_pointer())
        self.row_stride = builder.extract_value(array.strides, 0)
        self.item = context.get_data_type(array_type.dtype)
        self.itemsize = ir.Constant(ir.IntType(64), context.get_abi_sizeof(self.item))
        self.shape = array.shape

    def pointer(self, row, column, element_type):
        """Pointer to [row, column] as element_type* (a scalar or a vector)."""
        b = self.builder
        offset = b.add(b.mul(row, self.row_stride), b.mul(column, self.itemsize))
        return b.bitcast(b.gep(self.base, [offset]), element_type.as_pointer())


def _operands(context, builder, sig, args, arrays: int, indices: int):
    """The first ``arrays`` arguments as :class:`_Array`, the next ``indices`` as intp values."""
    wrapped = [_Array(context, builder, sig.args[k], args[k]) for k in range(arrays)]
    positions = range(arrays, arrays + indices)
    return wrapped, [context.cast(builder, args[k], sig.args[k], types.intp) for k in positions]


def _const(value: int) -> ir.Constant:
    return ir.Constant(ir.IntType(64), value)


def _broadcast(builder, scalar, vector_type):
    """A vector with ``scalar`` in every lane (one vbroadcastss / vbroadcastsd)."""
    undefined = ir.Constant(vector_type, ir.Undefined)
    single = builder.insert_element(undefined, scalar, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(single, undefined, _indices([0] * vector_type.count))


def _suffix(vector_type) -> str:
    """The LLVM intrinsic name suffix of a float vector type: v16f32, v8f64."""
    return f"v{vector_type.count}f{32 if isinstance(vector_type.element, ir.FloatType) else 64}"


def _fma(builder, vector_type):
    function_type = ir.FunctionType(vector_type, [vector_type] * 3)
    return cgutils.get_or_insert_function(builder.module, function_type, f"llvm.fma.{_suffix(vector_type)}")


@intrinsic
def fma_tile(typingctx, B, AT, out, j, r, P, V):
    """out[j:j+P, r:r+V·L] += B[j:j+P, :k] · AT[:k, r:r+V·L], k = B.shape[1]; L = lanes.

    B (p, k), AT (k, rows), out (p, rows): C-contiguous rows of one float dtype.  The
    accumulators start from ``out`` (the caller puts the bias or zeros there) and each
    lane adds its k terms in increasing k, one FMA each.
    """
    p_count, v_count = _literal(P), _literal(V)
    if p_count is None or v_count is None or not _same_float_matrices(B, AT, out):
        return None
    return types.void(B, AT, out, j, r, P, V), _fma_tile_codegen(p_count, v_count, masked=False)


@intrinsic
def fma_tile_masked(typingctx, B, AT, out, j, r, valid, P):
    """:func:`fma_tile` over one vector of which only the first ``valid`` lanes exist.

    out[j:j+P, r:r+valid] += B[j:j+P, :k] · AT[:k, r:r+valid], 0 < valid <= L: the rows
    past the last whole vector, by masked loads and stores that touch nothing beyond.
    """
    p_count = _literal(P)
    if p_count is None or not _same_float_matrices(B, AT, out):
        return None
    return types.void(B, AT, out, j, r, valid, P), _fma_tile_codegen(p_count, 1, masked=True)


def _fma_tile_codegen(p_count: int, v_count: int, masked: bool):
    """The code of a P x V tile (see :func:`fma_tile`); ``masked``: one vector, its first
    ``valid`` lanes only (the argument after ``r``)."""

    def codegen(context, builder, sig, args):
        indices = 3 if masked else 2
        (b_array, at_array, out_array), positions = _operands(context, builder, sig, args, 3, indices)
        j_value, r_value = positions[:2]
        element = b_array.item
        lanes = lanes_of(sig.args[0].dtype)
        vector = ir.VectorType(element, lanes)
        fma = _fma(builder, vector)
        memory = _MaskedMemory(builder, vector, positions[2]) if masked else _Memory(builder)
        k_len = builder.extract_value(b_array.shape, 1)
        columns = [builder.add(r_value, _const(v * lanes)) for v in range(v_count)]
        out_rows = [builder.add(j_value, _const(i)) for i in range(p_count)]
        slots = []
        for i in range(p_count):
            for v in range(v_count):
                slot = cgutils.alloca_once(builder, vector)
                builder.store(memory.load(out_array.pointer(out_rows[i], columns[v], vector)), slot)
                slots.append(slot)
        with cgutils.for_range(builder, k_len) as loop:
            k = loop.index
            values = [memory.load(at_array.pointer(k, columns[v], vector)) for v in range(v_count)]
            for i in range(p_count):
                weight = builder.load(b_array.pointer(out_rows[i], k, element))
                weights = _broadcast(builder, weight, vector)
                for v in range(v_count):
                    slot = slots[i * v_count + v]
                    builder.store(builder.call(fma, [weights, values[v], builder.load(slot)]), slot)
        for i in range(p_count):
            for v in range(v_count):
                target = out_array.pointer(out_rows[i], columns[v], vector)
                memory.store(builder.load(slots[i * v_count + v]), target)
        return context.get_dummy_value()

    return codegen


class _Memory:
    """Whole-vector loads and stores (unaligned)."""

    def __init__(self, builder):
        self.builder = builder

    def load(self, pointer):
        return self.builder.load(pointer, align=1)

    def store(self, value, pointer):
        self.builder.store(value, pointer, align=1)


class _MaskedMemory(_Memory):
    """Loads and stores of a vector's first ``valid`` lanes (``llvm.masked.*``): the other
    lanes read as zero and are never written, and their memory is never touched."""

    def __init__(self, builder, vector_type, valid):
        super().__init__(builder)
        lanes = vector_type.count
        bound = builder.trunc(valid, ir.IntType(32))
        splat = _broadcast(builder, bound, ir.VectorType(ir.IntType(32), lanes))
        self.mask = builder.icmp_unsigned("<", _indices(list(range(lanes))), splat)
        self.zero = ir.Constant(vector_type, [0.0] * lanes)
        pointer_type = vector_type.as_pointer()
        mask_type = self.mask.type
        i32 = ir.IntType(32)
        suffix = _suffix(vector_type)
        module = builder.module
        self.load_function = cgutils.get_or_insert_function(
            module,
            ir.FunctionType(vector_type, [pointer_type, i32, mask_type, vector_type]),
            f"llvm.masked.load.{suffix}.p0{suffix}",
        )
        self.store_function = cgutils.get_or_insert_function(
            module,
            ir.FunctionType(ir.VoidType(), [vector_type, pointer_type, i32, mask_type]),
            f"llvm.masked.store.{suffix}.p0{suffix}",
        )
        self.alignment = ir.Constant(i32, 1)

    def load(self, pointer):
        return self.builder.call(self.load_function, [pointer, self.alignment, self.mask, self.zero])

    def store(self, value, pointer):
        self.builder.call(self.store_function, [value, pointer, self.alignment, self.mask])


def _indices(values: list[int]) -> ir.Constant:
    return ir.Constant(ir.VectorType(ir.IntType(32), len(values)), values)


def _lane_sums(builder, vectors: list) -> list:
    """The lane sums of equally long vectors, by one fixed tree shared between them.

    Each step halves the lanes every output keeps: two vectors whose lanes hold groups of
    ``width`` partial sums (one group per output) give one vector of twice the groups,
    each the sum of its group's first and second halves, so 16 vectors of 16 lanes take
    15 adds and 30 shuffles in all, not 16 separate trees of 4 adds and 8 shuffles.
    Returns one scalar per input vector, in input order.
    """
    lanes = vectors[0].type.count
    parts = [(vector, [index]) for index, vector in enumerate(vectors)]  # (vector, its outputs)
    width = lanes
    while width > 1:
        half = width // 2
        merged = []
        if len(parts) == 1:  # halve within the one vector left
            vector, owners = parts[0]
            low = [g * width + i for g in range(len(owners)) for i in range(half)]
            high = [g * width + half + i for g in range(len(owners)) for i in range(half)]
            value = builder.fadd(
                builder.shuffle_vector(vector, vector, _indices(low)),
                builder.shuffle_vector(vector, vector, _indices(high)),
            )
            merged.append((value, owners))
        else:
            for (first, first_owners), (second, second_owners) in zip(parts[0::2], parts[1::2], strict=True):
                count = len(first_owners)  # both vectors hold as many groups
                low = [g * width + i for g in range(count) for i in range(half)]
                low += [lanes + g * width + i for g in range(count) for i in range(half)]
                high = [g * width + half + i for g in range(count) for i in range(half)]
                high += [lanes + g * width + half + i for g in range(count) for i in range(half)]
                value = builder.fadd(
                    builder.shuffle_vector(first, second, _indices(low)),
                    builder.shuffle_vector(first, second, _indices(high)),
                )
                merged.append((value, first_owners + second_owners))
        parts = merged
        width = half
    sums = [None] * len(vectors)
    for vector, owners in parts:
        for lane, owner in enumerate(owners):
            sums[owner] = builder.extract_element(vector, ir.Constant(ir.IntType(32), lane))
    return sums


@intrinsic
def dot_tile(typingctx, A, B, out, i, j, vector_rows, P, Q):
    """out[i:i+P, j:j+Q] = Σ_{r < vector_rows} A[i+a, r]·B[j+b, r]; vector_rows a multiple of L.

    A (p, rows), B (q, rows), out (p, q): C-contiguous rows of one float dtype.  Each output
    keeps a vector of L partial sums (lane l sums rows l, l+L, l+2L, ... by FMA in that
    order), then its lanes are added by :func:`_lane_sums`' tree.
    """
    p_count, q_count = _literal(P), _literal(Q)
    if p_count is None or q_count is None or not _same_float_matrices(A, B, out):
        return None
    signature = types.void(A, B, out, i, j, vector_rows, P, Q)

    def codegen(context, builder, sig, args):
        (a_array, b_array, out_array), (i_value, j_value, rows) = _operands(context, builder, sig, args, 3, 3)
        element = a_array.item
        lanes = lanes_of(sig.args[0].dtype)
        vector = ir.VectorType(element, lanes)
        fma = _fma(builder, vector)
        a_rows = [builder.add(i_value, _const(a)) for a in range(p_count)]
        b_rows = [builder.add(j_value, _const(b)) for b in range(q_count)]
        slots = []
        for _ in range(p_count * q_count):
            slot = cgutils.alloca_once(builder, vector)
            builder.store(ir.Constant(vector, [0.0] * lanes), slot)
            slots.append(slot)
        steps = builder.udiv(rows, _const(lanes))
        with cgutils.for_range(builder, steps) as loop:
            column = builder.mul(loop.index, _const(lanes))
            a_values = [builder.load(a_array.pointer(row, column, vector), align=1) for row in a_rows]
            b_values = [builder.load(b_array.pointer(row, column, vector), align=1) for row in b_rows]
            for a in range(p_count):
                for b in range(q_count):
                    slot = slots[a * q_count + b]
                    builder.store(builder.call(fma, [a_values[a], b_values[b], builder.load(slot)]), slot)
        totals = _lane_sums(builder, [builder.load(slot) for slot in slots])
        for a in range(p_count):
            for b in range(q_count):
                builder.store(totals[a * q_count + b], out_array.pointer(a_rows[a], b_rows[b], element))
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def transpose_tile(typingctx, x, xt, r, c):
    """xt[c:c+L, r:r+L] <- x[r:r+L, c:c+L]ᵀ, one L x L tile (L = lanes) through registers.

    x (rows, n) and xt (n, rows): C-contiguous rows of one float dtype.  L rows are loaded
    as L vectors and transposed by log2(L) rounds of two-vector shuffles: the round of
    block size b swaps, between vectors i and i + b, the b x b blocks off the diagonal.
    Only moves values (no arithmetic), so the result is exact.
    """
    if not _same_float_matrices(x, xt):
        return None
    signature = types.void(x, xt, r, c)

    def codegen(context, builder, sig, args):
        (source, target), (r_value, c_value) = _operands(context, builder, sig, args, 2, 2)
        lanes = lanes_of(sig.args[0].dtype)
        vector = ir.VectorType(source.item, lanes)
        rows = [
            builder.load(source.pointer(builder.add(r_value, _const(i)), c_value, vector), align=1)
            for i in range(lanes)
        ]
        block = 1
        while block < lanes:
            for i in range(lanes):
                if i & block:
                    continue
                j = i + block
                # Lanes with the block bit clear keep v_i's and take v_j's shifted down; the
                # others the other way round (index >= lanes picks from the second vector).
                first = [lane if not lane & block else lanes + lane - block for lane in range(lanes)]
                second = [lane + block if not lane & block else lanes + lane for lane in range(lanes)]
                rows[i], rows[j] = (
                    builder.shuffle_vector(rows[i], rows[j], _indices(first)),
                    builder.shuffle_vector(rows[i], rows[j], _indices(second)),
                )
            block *= 2
        for j in range(lanes):
            address = target.pointer(builder.add(c_value, _const(j)), r_value, vector)
            builder.store(rows[j], address, align=1)
        return context.get_dummy_value()

    return signature, codegen
