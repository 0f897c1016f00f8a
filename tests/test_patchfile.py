"""PatchFile streaming contract, with and without the prefetching reader."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from streamae.errors import StorageError
from streamae.io.patchfile import ArrayPatches, PatchFile
from streamae.io.readpolicy import streaming_block_rows


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "streamae-reader"]


@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize(
    ("rows", "chunk", "block"), [(1, 1, None), (100, 7, None), (100, 7, 30), (1000, 128, 1), (257, 64, 1000)]
)
def test_every_row_is_delivered_once_in_order(rng, patch_file, prefetch, rows, chunk, block):
    X = rng.uniform(size=(rows, 5)).astype(np.float32)
    path = patch_file(X, chunk_rows=chunk)
    with PatchFile(path, block_rows=block, prefetch=prefetch) as source:
        for _ in range(2):  # a second pass streams the same rows again
            firsts, parts = [], []
            for first, view in source.blocks():
                firsts.append(first)
                parts.append(view.copy())
            np.testing.assert_array_equal(np.concatenate(parts), X)
            assert firsts == list(range(0, rows, source.block_rows))
        assert source.io_stats.snapshot()[1] == 2 * X.nbytes
    assert not reader_threads()


def test_row_range_with_prefetch(rng, patch_file):
    X = rng.uniform(size=(500, 3))
    path = patch_file(X, chunk_rows=50)
    with PatchFile(path, dtype=np.float64, row_range=(120, 433), block_rows=40, prefetch=True) as source:
        parts = [(first, view.copy()) for first, view in source.blocks()]
    assert parts[0][0] == 120
    np.testing.assert_array_equal(np.concatenate([view for _, view in parts]), X[120:433])


def test_stopping_early_stops_the_reader(rng, patch_file):
    path = patch_file(rng.uniform(size=(1000, 4)).astype(np.float32), chunk_rows=10)
    with PatchFile(path, block_rows=10, prefetch=True) as source:
        for index, _ in enumerate(source.blocks()):
            if index == 2:
                break
        assert not reader_threads()
        # and the file still streams from the start afterwards
        assert next(iter(source.blocks()))[0] == 0


def test_a_failed_read_reaches_the_consumer(rng, patch_file, monkeypatch):
    path = patch_file(rng.uniform(size=(100, 4)).astype(np.float32), chunk_rows=10)
    with PatchFile(path, block_rows=10, prefetch=True) as source:
        original = source._read

        def failing(first, last, out, parallel=True, raw=True):
            if first >= 50:
                raise StorageError(f"{path}: reading rows {first}-{last - 1} of /patches failed (planted)")
            original(first, last, out)

        monkeypatch.setattr(source, "_read", failing)
        seen = []
        with pytest.raises(StorageError, match="rows 50-59 .* failed"):
            for first, _ in source.blocks():
                seen.append(first)
        assert seen == [0, 10, 20, 30, 40]
    assert not reader_threads()


def test_the_prefetched_block_is_not_overwritten_while_in_use(rng, patch_file):
    X = rng.uniform(size=(400, 6)).astype(np.float32)
    path = patch_file(X, chunk_rows=20)
    with PatchFile(path, block_rows=20, prefetch=True) as source:
        for first, view in source.blocks():
            before = view.copy()
            threading.Event().wait(0.002)  # let the reader run ahead as far as it can
            np.testing.assert_array_equal(view, before)
            np.testing.assert_array_equal(view, X[first : first + 20])


def test_streaming_block_rows_is_whole_chunks(rng, patch_file):
    path = patch_file(rng.uniform(size=(100_000, 64)).astype(np.float32), chunk_rows=1000)
    with PatchFile(path) as source:
        rows = streaming_block_rows(source.layout)
    assert rows % 1000 == 0 and rows * 64 * 4 >= 4 << 20
    assert streaming_block_rows(ArrayPatches(np.zeros((10, 3))).layout) >= 1
