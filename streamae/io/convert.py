"""Rows of one floating type decoded into another as they are read: float16 files.

A patch file may store its values as float16 (half the bytes of float32 per pass over
the data), float32 or float64; the kernels compute in the training dtype.  Each block is
read in the file's own type into a staging buffer and converted here into the block the
kernels see, so nothing else changes and memory stays one block per reading thread.

NumPy's float16 -> float32 conversion (``astype``, ``np.copyto``) ran at ~1 GB/s of
input per core on the hosts of DESIGN.md ("Bytes per pass"), as slow as a cold disk.
:func:`half_to_single` is a loop of integer operations on the half's bits, with selects
instead of branches, that LLVM vectorises (no F16C needed, so it runs alike on every
x86 and ARM host); its results equal NumPy's bit for bit for every one of the 65,536
halves, subnormals, infinities and NaN payloads included (tests/test_convert.py).
"""

from __future__ import annotations

import threading

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic


def _reinterpret(width: int):
    """An intrinsic: the float of ``width`` bits whose bits are the low ``width`` of an
    integer (a free reinterpretation; Numba widens uint32 arithmetic to 64 bits, whose
    high half is then 0)."""
    float_type = ir.FloatType() if width == 32 else ir.DoubleType()
    result = types.float32 if width == 32 else types.float64

    @intrinsic
    def from_bits(typingctx, bits):
        if not isinstance(bits, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            value = args[0]
            if bits.bitwidth > width:
                value = builder.trunc(value, ir.IntType(width))
            elif bits.bitwidth < width:
                value = builder.zext(value, ir.IntType(width))
            return builder.bitcast(value, float_type)

        return result(bits), codegen

    @intrinsic
    def to_bits(typingctx, value):
        if value != result:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.IntType(width))

        return (types.uint32 if width == 32 else types.uint64)(value), codegen

    return from_bits, to_bits


_float_from_bits, _bits_from_float = _reinterpret(32)
_double_from_bits, _bits_from_double = _reinterpret(64)


def _half_decoder(from_bits, to_bits, mantissa_bits: int, bias: int, width: int):
    """The compiled decoder of a half's bits (an integer holding 16) into the float that
    ``from_bits``/``to_bits`` reinterpret (float32: 23 mantissa bits, bias 127; float64:
    52 and 1023).

    F. Giesen's branch-free method: move exponent and mantissa into place, rebias the
    exponent; infinities and NaNs rebias further to all ones (their payload kept, as
    NumPy keeps it); zeros and subnormals become 2**-14 + mantissa·2**-24 and lose the
    2**-14 exactly.  Selects, not branches, so the loops around it vectorise.
    """
    integer = np.uint32 if width == 32 else np.uint64
    shift = integer(mantissa_bits - 10)
    exponent_bits = integer(0x7C00) << shift
    rebias = integer(bias - 15) << integer(mantissa_bits)
    special_rebias = integer(bias + 1 - 16) << integer(mantissa_bits)
    one_exponent = integer(1) << integer(mantissa_bits)
    magic_bits = integer(bias - 14) << integer(mantissa_bits)  # 2**-14
    sign_shift = integer(width - 16)

    @njit(cache=True, inline="always")
    def decode(h):
        wide = integer(h)
        shifted = (wide & integer(0x7FFF)) << shift
        exponent = shifted & exponent_bits
        bits = shifted + rebias
        bits = bits + special_rebias if exponent == exponent_bits else bits
        subnormal = from_bits(bits + one_exponent) - from_bits(magic_bits)
        bits = to_bits(subnormal) if exponent == integer(0) else bits
        return from_bits(bits | ((wide & integer(0x8000)) << sign_shift))

    return decode


_half_bits_to_float = _half_decoder(_float_from_bits, _bits_from_float, 23, 127, 32)
_half_bits_to_double = _half_decoder(_double_from_bits, _bits_from_double, 52, 1023, 64)


@njit(cache=True, inline="always")
def _decode_rows(half_bits, out, decode):
    """``out[i, j] = decode(half_bits[i, j])`` over (rows, n): the loop both converters
    share, inlined into each so each stays its own compiled (and cached) function."""
    for i in range(half_bits.shape[0]):
        row = half_bits[i]
        target = out[i]
        for j in range(row.shape[0]):
            target[j] = decode(row[j])


@njit(cache=True)
def half_to_single(half_bits, out):
    """``out`` (rows, n) float32 ← the halves whose bits are ``half_bits`` (rows, n) uint16:
    exactly NumPy's ``astype`` (every half is a float32)."""
    _decode_rows(half_bits, out, _half_bits_to_float)


@njit(cache=True)
def half_to_double(half_bits, out):
    """``out`` (rows, n) float64 ← the halves whose bits are ``half_bits``: as NumPy's
    ``astype``, NaN payloads included (through float32 the signalling ones would be
    quieted by the hardware's float32 -> float64 conversion)."""
    _decode_rows(half_bits, out, _half_bits_to_double)


@njit(cache=True)
def cast_rows(source, out):
    """``out`` (rows, n) ← ``source`` (rows, n) in out's type, rounded to nearest (float64
    to float32, as NumPy and HDF5 round) or exact (float32 to float64)."""
    for i in range(source.shape[0]):
        row = source[i]
        target = out[i]
        for j in range(row.shape[0]):
            target[j] = row[j]


def convert_rows(source: np.ndarray, out: np.ndarray) -> None:
    """Decode ``source`` (rows, n), float16, float32 or float64, into ``out`` (rows, n) of
    another floating type (float32 or float64), both C-contiguous."""
    if source.shape != out.shape:
        raise ValueError(f"cannot convert rows of shape {source.shape} into {out.shape}")
    if source.dtype == np.float16:
        decode = half_to_single if out.dtype == np.float32 else half_to_double
        decode(source.view(np.uint16), out)
    else:
        cast_rows(source, out)


class StagingBuffers:
    """One buffer per reading thread for rows as the file stores them (``dtype``).

    The lanes read their rows from several threads at once, each into its own block, so
    each thread keeps its own staging buffer; it is allocated at the first read and
    grown only when a larger block is asked for (freshly touched memory is slow on the
    hosts of DESIGN.md: reuse it), so memory stays one block per thread.
    """

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = np.dtype(dtype)
        self._local = threading.local()

    def get(self, rows: int, n: int) -> np.ndarray:
        """A (rows, n) C-contiguous view of this thread's buffer."""
        buffer = getattr(self._local, "buffer", None)
        if buffer is None or buffer.shape[1] != n or buffer.shape[0] < rows:
            buffer = np.empty((rows, n), dtype=self.dtype)
            self._local.buffer = buffer
        return buffer[:rows]
