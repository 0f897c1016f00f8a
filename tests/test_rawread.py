"""streamae.io.rawread: byte runs read in parallel equal what h5py reads, or are declined."""

from __future__ import annotations

import threading

import h5py
import numpy as np
import pytest

from streamae.errors import DataError
from streamae.io import rawread
from streamae.io.patchfile import PatchFile
from streamae.io.rawread import RawRows


def _h5py_rows(path, first, last, dataset="patches"):
    with h5py.File(path, "r") as handle:
        return handle[dataset][first:last]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("chunk", [None, 1, 7, 64, 1000])
def test_any_row_range_equals_h5py(rng, patch_file, monkeypatch, threads, chunk):
    monkeypatch.setattr(rawread, "PARALLEL_MIN_BYTES", 0)  # the parallel split at every size
    X = rng.standard_normal((1003, 13)).astype(np.float32)
    path = patch_file(X, chunk_rows=chunk) if chunk else _contiguous(path_of(patch_file), X)
    with h5py.File(path, "r") as handle:
        raw = RawRows.for_dataset(handle["patches"], np.float32, threads=threads)
        assert raw is not None
        try:
            for first, last in [(0, 1003), (0, 1), (5, 6), (6, 70), (63, 65), (999, 1003), (100, 900)]:
                out = np.full((last - first, 13), np.nan, dtype=np.float32)
                assert raw.read(first, last, out)
                np.testing.assert_array_equal(out, X[first:last])
        finally:
            raw.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("streamae-read")]


def _compact(handle, X):
    """A dataset stored inside its object header (HDF5's compact layout): no byte offset."""
    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_layout(h5py.h5d.COMPACT)
    space = h5py.h5s.create_simple(X.shape)
    created = h5py.h5d.create(handle.id, b"patches", h5py.h5t.IEEE_F32LE, space, dcpl=plist)
    created.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(X))


def path_of(patch_file):
    return patch_file(np.zeros((1, 1), dtype=np.float32), name="unused.h5").parent / "contiguous.h5"


def _contiguous(path, X):
    with h5py.File(path, "w") as handle:
        handle.create_dataset("patches", data=X)
    return path


def test_a_patch_file_streams_through_the_raw_reader(rng, patch_file):
    X = rng.uniform(size=(5000, 64)).astype(np.float32)
    path = patch_file(X, chunk_rows=300)
    with PatchFile(path, block_rows=2100) as source:
        assert source._raw is not None
        np.testing.assert_array_equal(np.concatenate([v.copy() for _, v in source.blocks()]), X)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda h, X: h.create_dataset("patches", data=X, chunks=(10, 4), compression="gzip"), id="gzip"
        ),
        pytest.param(
            lambda h, X: h.create_dataset("patches", data=X, chunks=(10, 4), shuffle=True), id="shuffle"
        ),
        pytest.param(
            lambda h, X: h.create_dataset("patches", data=X, chunks=(10, 2)), id="chunks split columns"
        ),
        pytest.param(
            lambda h, X: h.create_dataset("patches", data=X.astype(np.float64)), id="float64 stored"
        ),
        pytest.param(lambda h, X: h.create_dataset("patches", data=X.astype(">f4")), id="big-endian"),
        pytest.param(lambda h, X: _compact(h, X), id="compact"),
    ],
)
def test_datasets_it_cannot_read_byte_for_byte_go_to_h5py(tmp_path, rng, make):
    X = rng.uniform(size=(40, 4)).astype(np.float32)
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as handle:
        make(handle, X)
    with h5py.File(path, "r") as handle:
        assert RawRows.for_dataset(handle["patches"], np.float32) is None
    with PatchFile(path) as source:  # and the stream still delivers the values
        np.testing.assert_allclose(np.concatenate([v.copy() for _, v in source.blocks()]), X, rtol=1e-7)


def test_a_file_with_a_user_block_goes_to_h5py(tmp_path, rng):
    X = rng.uniform(size=(40, 4)).astype(np.float32)
    path = tmp_path / "userblock.h5"
    with h5py.File(path, "w", userblock_size=512) as handle:
        handle.create_dataset("patches", data=X, chunks=(10, 4))
    with h5py.File(path, "r") as handle:
        assert RawRows.for_dataset(handle["patches"], np.float32) is None
    with PatchFile(path) as source:
        np.testing.assert_array_equal(np.concatenate([v.copy() for _, v in source.blocks()]), X)


def test_a_chunk_never_written_is_declined_and_reads_as_the_fill_value(tmp_path, rng):
    X = rng.uniform(size=(40, 4)).astype(np.float32)
    path = tmp_path / "holes.h5"
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset("patches", shape=(40, 4), dtype=np.float32, chunks=(10, 4))
        dataset[:20] = X[:20]
        dataset[30:] = X[30:]
    expected = _h5py_rows(path, 0, 40)
    with h5py.File(path, "r") as handle:
        raw = RawRows.for_dataset(handle["patches"], np.float32)
        out = np.empty((40, 4), dtype=np.float32)
        assert raw is not None and not raw.read(0, 40, out)
        assert raw.read(0, 20, out[:20])
        raw.close()
    with PatchFile(path, block_rows=40) as source:
        np.testing.assert_array_equal(next(source.blocks())[1], expected)


def test_a_short_read_is_declined_and_the_pass_stops_on_the_change(tmp_path, rng):
    X = rng.uniform(size=(4000, 16)).astype(np.float32)
    path = tmp_path / "cut.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("patches", data=X, chunks=(500, 16))
    with h5py.File(path, "r") as handle:
        last_chunk = handle["patches"].id.get_chunk_info_by_coord((3500, 0)).byte_offset
    with PatchFile(path, block_rows=4000) as source:
        with open(path, "r+b") as handle:  # cut the file inside the last chunk
            handle.truncate(last_chunk + 100)
        out = np.empty((4000, 16), dtype=np.float32)
        assert not source._raw.read(0, 4000, out)
        # h5py fills what lies past the end with zeros; the pass then stops on the change.
        with pytest.raises(DataError, match="changed while it was being read"):
            for _ in source.blocks():
                pass


def test_chunks_that_lie_end_to_end_are_read_as_one_run(rng, patch_file):
    X = rng.uniform(size=(1000, 8)).astype(np.float32)
    path = patch_file(X, chunk_rows=100)  # written in order: the chunks follow each other
    with h5py.File(path, "r") as handle:
        raw = RawRows.for_dataset(handle["patches"], np.float32, threads=1)
        offsets = [handle["patches"].id.get_chunk_info(i).byte_offset for i in range(10)]
        runs = raw._runs(150, 720)
        raw.close()
    adjacent = all(b - a == 100 * 8 * 4 for a, b in zip(offsets[:-1], offsets[1:], strict=True))
    assert adjacent  # how h5py lays out a dataset written in one go
    assert runs == [(0, 570, offsets[1] + 50 * 8 * 4)]
