"""The register tiles (compute/simd.py) against plain NumPy, in both float dtypes.

Each tile is called from a small compiled driver at an offset inside larger arrays, so
a tile that reads or writes outside its own rows and columns shows up as a changed value.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from streamae.compute import simd
from streamae.compute.small import rows_are_contiguous

DTYPES = [np.float32, np.float64]


def lanes(dtype) -> int:
    return simd.VECTOR_BYTES // np.dtype(dtype).itemsize


@njit
def _fma_8x2(B, AT, out, j, r):
    simd.fma_tile(B, AT, out, j, r, 8, 2)


@njit
def _fma_3x1(B, AT, out, j, r):
    simd.fma_tile(B, AT, out, j, r, 3, 1)


@njit
def _fma_masked_4(B, AT, out, j, r, valid):
    simd.fma_tile_masked(B, AT, out, j, r, valid, 4)


@njit
def _dots_4x4(A, B, out, i, j, vector_rows):
    simd.dot_tile(A, B, out, i, j, vector_rows, 4, 4)


@njit
def _dots_1x1(A, B, out, i, j, vector_rows):
    simd.dot_tile(A, B, out, i, j, vector_rows, 1, 1)


@njit
def _transpose(x, xt, r, c):
    simd.transpose_tile(x, xt, r, c)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("tile", "p", "v"), [(_fma_8x2, 8, 2), (_fma_3x1, 3, 1)])
@pytest.mark.parametrize("k", [1, 5, 64])
def test_fma_tile_adds_its_block_of_b_times_at(rng, dtype, tile, p, v, k):
    L = lanes(dtype)
    rows = v * L + 2 * L + 3
    B = rng.normal(size=(p + 5, k)).astype(dtype)
    AT = rng.normal(size=(k, rows)).astype(dtype)
    start = rng.normal(size=(p + 5, rows)).astype(dtype)
    out = start.copy()
    j, r = 2, L + 1  # an unaligned column offset: the tiles load unaligned
    tile(B, AT, out, j, r)
    expected = start.astype(np.float64).copy()
    expected[j : j + p, r : r + v * L] += B[j : j + p].astype(np.float64) @ AT[:, r : r + v * L]
    tolerance = 1e-12 if dtype == np.float64 else 1e-5
    assert np.allclose(out, expected, rtol=tolerance, atol=tolerance * k)
    untouched = np.ones(out.shape, dtype=bool)
    untouched[j : j + p, r : r + v * L] = False
    assert np.array_equal(out[untouched], start[untouched])  # nothing outside the tile
    again = start.copy()
    tile(B, AT, again, j, r)
    assert np.array_equal(out, again)  # bitwise repeatable


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("valid", [1, 5, "all"])
def test_fma_tile_masked_touches_only_its_valid_lanes(rng, dtype, valid):
    L = lanes(dtype)
    valid = L if valid == "all" else valid
    k, r = 6, 3
    # The tile's vector ends exactly at the end of the array's rows when valid < L: a
    # load or store past them would read or write the next row (or past the buffer).
    rows = r + valid
    B = rng.normal(size=(5, k)).astype(dtype)
    AT = rng.normal(size=(k, rows)).astype(dtype)
    start = rng.normal(size=(5, rows)).astype(dtype)
    out = start.copy()
    _fma_masked_4(B, AT, out, 1, r, valid)
    expected = start.astype(np.float64).copy()
    expected[1:5, r : r + valid] += B[1:5].astype(np.float64) @ AT[:, r : r + valid]
    tolerance = 1e-12 if dtype == np.float64 else 1e-5
    assert np.allclose(out, expected, rtol=tolerance, atol=tolerance * k)
    untouched = np.ones(out.shape, dtype=bool)
    untouched[1:5, r : r + valid] = False
    assert np.array_equal(out[untouched], start[untouched])


def test_fma_tile_sums_over_k_in_order_with_one_rounding_per_term():
    # Each lane is acc = fma(w_k, a_k, acc) for k = 0, 1, 2: in increasing k the 1 is
    # rounded away (2^24 + 1 is no float32) and the lane ends at 0; any other order keeps it.
    B = np.ones((8, 3), dtype=np.float32)
    AT = np.zeros((3, 32), dtype=np.float32)
    AT[0], AT[1], AT[2] = 2.0**24, 1.0, -(2.0**24)
    out = np.zeros((8, 32), dtype=np.float32)
    _fma_8x2(B, AT, out, 0, 0)
    expected = np.float32(0.0)
    for term in AT[:, 0]:
        expected = np.float32(expected + term)  # exact products (weights are 1): FMA = add
    assert np.all(out == expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("steps", [0, 1, 7])
def test_dot_tile_writes_its_dot_products(rng, dtype, steps):
    L = lanes(dtype)
    rows = steps * L + 5  # the rows past the last whole vector are not its job
    A = rng.normal(size=(7, rows)).astype(dtype)
    B = rng.normal(size=(6, rows)).astype(dtype)
    out = np.full((7, 6), np.nan, dtype=dtype)
    _dots_4x4(A, B, out, 1, 2, steps * L)
    expected = A[1:5, : steps * L].astype(np.float64) @ B[2:6, : steps * L].astype(np.float64).T
    tolerance = 1e-12 if dtype == np.float64 else 1e-5
    assert np.allclose(out[1:5, 2:6], expected, rtol=tolerance, atol=tolerance * max(1, steps * L))
    assert np.isnan(out[0]).all() and np.isnan(out[5:]).all() and np.isnan(out[:, :2]).all()
    single = np.full((7, 6), np.nan, dtype=dtype)
    _dots_1x1(A, B, single, 6, 0, steps * L)
    expected_one = A[6, : steps * L].astype(np.float64) @ B[0, : steps * L]
    assert np.allclose(single[6, 0], expected_one, rtol=tolerance, atol=tolerance * 10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_transpose_tile_moves_one_tile_exactly(rng, dtype):
    L = lanes(dtype)
    x = rng.normal(size=(2 * L + 3, L + 7)).astype(dtype)
    xt = np.full(x.T.shape, np.nan, dtype=dtype)
    _transpose(x, xt, L + 1, 5)
    assert np.array_equal(xt[5 : 5 + L, L + 1 : 2 * L + 1], x[L + 1 : 2 * L + 1, 5 : 5 + L].T)
    written = np.zeros(xt.shape, dtype=bool)
    written[5 : 5 + L, L + 1 : 2 * L + 1] = True
    assert np.isnan(xt[~written]).all()


def test_the_tiles_refuse_mixed_dtypes_at_compile_time():
    B = np.ones((8, 4), dtype=np.float32)
    with pytest.raises(Exception, match="fma_tile|No implementation|typing"):
        _fma_8x2(B, np.ones((4, 32), dtype=np.float64), np.ones((8, 32), dtype=np.float32), 0, 0)


def test_rows_are_contiguous_tells_views_apart():
    x = np.ones((6, 8), dtype=np.float32)
    assert rows_are_contiguous(x)
    assert rows_are_contiguous(x[1:4])
    assert not rows_are_contiguous(x.T)
    assert not rows_are_contiguous(x[:, ::2])
