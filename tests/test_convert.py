"""Rows decoded from the file's type into the compute type (streamae/io/convert.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from helpers import write_patch_file

from streamae.compute.schemes import in_core_bytes
from streamae.io.convert import StagingBuffers, convert_rows
from streamae.io.patchfile import PatchFile
from streamae.training.evaluate import objective

# Every half: all 65,536 bit patterns (zeros, subnormals, normals, infinities, NaNs with
# every payload, signalling ones included), as (256, 256) rows.
EVERY_HALF = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).reshape(256, 256)


@pytest.mark.parametrize("target", [np.float32, np.float64])
def test_every_half_converts_to_numpys_bits(target):
    out = np.empty(EVERY_HALF.shape, dtype=target)
    convert_rows(EVERY_HALF, out)
    reference = EVERY_HALF.astype(target)
    bits = np.uint32 if target == np.float32 else np.uint64
    # Bits, not values: NaN != NaN, and -0.0 == 0.0 would hide a lost sign.
    assert np.array_equal(out.view(bits), reference.view(bits))


def test_edge_halves_by_name():
    # Largest subnormal, smallest subnormal, smallest normal, largest, inf, signalling NaN.
    bits = np.array([[0x03FF, 0x0001, 0x8001, 0x0400, 0x7BFF, 0xFC00, 0x7C01, 0x8000]], dtype=np.uint16)
    out = np.empty(bits.shape, dtype=np.float32)
    convert_rows(bits.view(np.float16), out)
    expected = [1023 * 2.0**-24, 2.0**-24, -(2.0**-24), 2.0**-14, 65504.0, -np.inf]
    assert out[0, :6].tolist() == expected
    assert np.isnan(out[0, 6]) and out[0, 7] == 0.0 and np.signbit(out[0, 7])


@pytest.mark.parametrize(("source", "target"), [(np.float64, np.float32), (np.float32, np.float64)])
def test_float_casts_round_as_numpy(source, target):
    values = np.random.default_rng(0).standard_normal((33, 17)).astype(source) * 1e3
    values[0, :3] = [np.inf, -np.inf, np.nan]
    out = np.empty(values.shape, dtype=target)
    convert_rows(values, out)
    assert np.array_equal(out, values.astype(target), equal_nan=True)


def test_convert_rows_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        convert_rows(np.zeros((2, 3), np.float16), np.zeros((3, 2), np.float32))


def test_staging_buffers_are_one_per_thread_and_reused():
    staging = StagingBuffers(np.float16)
    first = staging.get(10, 4)
    assert staging.get(6, 4).base is first.base  # a smaller block reuses the buffer
    seen = []
    worker = threading.Thread(target=lambda: seen.append(staging.get(10, 4)))
    worker.start()
    worker.join()
    assert not np.shares_memory(seen[0], first)


def _values(m: int = 300, n: int = 12) -> np.ndarray:
    """Values exactly representable as float16 (so every storage type holds the same numbers)."""
    rng = np.random.default_rng(5)
    return rng.uniform(0.05, 0.95, size=(m, n)).astype(np.float16)


@pytest.mark.parametrize("stored", [np.float16, np.float64])
def test_objective_on_other_storage_equals_float32_storage(tmp_path, stored):
    values = _values()
    reference_file = write_patch_file(tmp_path / "f32.h5", values.astype(np.float32), chunk_rows=64)
    other_file = write_patch_file(tmp_path / "other.h5", values.astype(stored), chunk_rows=64)
    reference = objective(reference_file, hidden=5, dtype="float64", block_rows=50)
    found = objective(other_file, hidden=5, dtype="float64", block_rows=50)
    assert abs(found.cost - reference.cost) <= 1e-12 * abs(reference.cost)
    np.testing.assert_allclose(found.gradient, reference.gradient, rtol=1e-12, atol=1e-15)


def test_float16_file_streams_the_float32_blocks(tmp_path):
    values = _values(257, 9)
    path = write_patch_file(tmp_path / "half.h5", values, chunk_rows=40)
    with PatchFile(path, dtype=np.float32, block_rows=64) as source:
        assert source.layout.dtype == np.float16
        rows = np.concatenate([block.copy() for _, block in source.blocks()])
        out = np.empty((100, 9), np.float32)
        source.start_pass()
        source.read_rows(57, 157, out)  # a lane's own read, not aligned to the chunks
        source.end_pass()
    assert rows.dtype == np.float32 and np.array_equal(rows, values.astype(np.float32))
    assert np.array_equal(out, values[57:157].astype(np.float32))


def test_in_core_holds_compute_type_bytes_not_the_files(tmp_path):
    values = _values(200, 8)
    path = write_patch_file(tmp_path / "half.h5", values, chunk_rows=50)
    with PatchFile(path, dtype=np.float32) as source:
        # 200 rows of 8 inputs and 5 hidden activations, held as float32 (4 bytes each).
        assert in_core_bytes(source, 8, 5, np.float32) == 200 * (8 + 5) * 4
