"""Rows of an unfiltered dataset read straight from the file's bytes, by several threads.

A dataset stored in the file itself, without filters, in the dtype and byte order the
caller asked for, contiguous or chunked in whole rows, holds any row range as a few byte
runs (one per chunk).  ``os.preadv`` reads each run straight into the caller's buffer and
releases the GIL while it copies, so several threads copy from the page cache at once;
through HDF5 every read is serialised behind h5py's lock.  From the page cache, byte runs
on two threads read faster than ``read_direct`` (``python benchmarks/bench_read.py``; the
figures are in benchmarks/README.md).

Everything else goes to h5py, which converts, fills and reports failures as before: a
filtered, external, virtual or compact dataset, another dtype, a file with a user block
or another HDF5 driver, a chunk never written, a read that fails or comes back short (a
truncated file).  :meth:`RawRows.read` says
whether it read the rows; when it did not, the caller reads them through h5py.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np

# Blocks smaller than this are read by the calling thread alone: handing work to another
# thread costs more than it saves.
PARALLEL_MIN_BYTES = 1 << 20
# Reader threads at most: two already double the copy rate from the page cache.
MAX_READ_THREADS = 4


def _split_runs(runs: list[tuple[int, int, int]], pieces: int, row_bytes: int) -> list[tuple[int, int, int]]:
    """Cut runs (row, rows, offset) into about ``pieces`` runs of whole rows, in order."""
    total = sum(count for _, count, _ in runs)
    target = max(1, -(-total // pieces))
    cut = []
    for row, count, offset in runs:
        for start in range(0, count, target):
            rows = min(target, count - start)
            cut.append((row + start, rows, offset + start * row_bytes))
    return cut


def read_threads() -> int:
    """Threads :class:`RawRows` reads with: the cores this process may use, at most 4."""
    return max(1, min(MAX_READ_THREADS, len(os.sched_getaffinity(0))))


class RawRows:
    """Reads rows [first, last) of one 2-D dataset by byte runs (see the module doc).

    Build with :meth:`for_dataset`, which returns None when the dataset does not qualify.
    """

    def __init__(self, dataset: h5py.Dataset, fd: int, threads: int) -> None:
        self._dataset = dataset
        self._fd = fd
        self._row_bytes = dataset.shape[1] * dataset.dtype.itemsize
        self._chunk_rows = dataset.chunks[0] if dataset.chunks is not None else None
        self._offset = None if self._chunk_rows else int(dataset.id.get_offset())
        self._pool = (
            ThreadPoolExecutor(threads - 1, thread_name_prefix="streamae-read") if threads > 1 else None
        )
        self.threads = threads

    @classmethod
    def for_dataset(
        cls, dataset: h5py.Dataset, dtype: np.dtype, threads: int | None = None
    ) -> RawRows | None:
        """A raw reader for ``dataset`` delivering ``dtype``, or None where h5py must read."""
        try:
            if dataset.ndim != 2 or dataset.is_virtual or dataset.external:
                return None
            if dataset.dtype != np.dtype(dtype) or not dataset.dtype.isnative:
                return None
            plist = dataset.id.get_create_plist()
            if plist.get_nfilters() != 0:
                return None
            if dataset.chunks is not None:
                if dataset.chunks[1] != dataset.shape[1]:
                    return None
            elif dataset.id.get_offset() is None:  # compact, or never written
                return None
            # Addresses inside HDF5 are relative to the superblock, which a user block moves.
            if dataset.file.driver != "sec2" or dataset.file.userblock_size != 0:
                return None
            fd = dataset.file.id.get_vfd_handle()
        except (AttributeError, OSError, RuntimeError, TypeError, ValueError):
            return None
        if not isinstance(fd, int) or fd < 0:
            return None
        return cls(dataset, fd, threads or read_threads())

    def _runs(self, first: int, last: int) -> list[tuple[int, int, int]] | None:
        """(row in the block, rows, byte offset) of each run of [first, last), or None when
        a chunk was never written."""
        if self._chunk_rows is None:
            return [(0, last - first, self._offset + first * self._row_bytes)]
        runs = []
        row = first
        chunk_rows = self._chunk_rows
        while row < last:
            chunk_first = row // chunk_rows * chunk_rows
            stop = min(last, chunk_first + chunk_rows)
            info = self._dataset.id.get_chunk_info_by_coord((chunk_first, 0))
            if info.byte_offset is None or info.filter_mask != 0:
                return None
            offset = info.byte_offset + (row - chunk_first) * self._row_bytes
            if runs and runs[-1][2] + runs[-1][1] * self._row_bytes == offset:
                # Chunks written one after the other lie end to end: one larger read.
                runs[-1] = (runs[-1][0], runs[-1][1] + stop - row, runs[-1][2])
            else:
                runs.append((row - first, stop - row, offset))
            row = stop
        return runs

    def _read_runs(self, runs: list[tuple[int, int, int]], out: np.ndarray) -> bool:
        for row, count, offset in runs:
            view = memoryview(out[row : row + count]).cast("B")
            try:
                done = os.preadv(self._fd, [view], offset)
            except OSError:
                return False
            if done != len(view):
                return False
        return True

    def read(self, first: int, last: int, out: np.ndarray, parallel: bool = True) -> bool:
        """Rows [first, last) into ``out`` (last − first, n), C-contiguous; True when read.

        False means nothing can be trusted in ``out``: read the rows through h5py instead.
        ``parallel=False`` reads on the calling thread alone (for callers that already run
        one read per thread).  Safe to call from several threads at once.
        """
        if not out.flags.c_contiguous or out.dtype != self._dataset.dtype:
            return False
        try:
            runs = self._runs(first, last)
        except (OSError, RuntimeError, ValueError):
            return False
        if runs is None:
            return False
        if not parallel or self._pool is None or out.nbytes < PARALLEL_MIN_BYTES:
            return self._read_runs(runs, out)
        # Runs cut to at most a thread's share, then dealt out in order by the rows before them.
        runs = _split_runs(runs, self.threads, self._row_bytes)
        total = last - first
        groups: list[list[tuple[int, int, int]]] = [[] for _ in range(self.threads)]
        for run in runs:
            groups[min(self.threads - 1, run[0] * self.threads // total)].append(run)
        futures = [self._pool.submit(self._read_runs, group, out) for group in groups[1:] if group]
        ok = self._read_runs(groups[0], out)
        return all([future.result() for future in futures]) and ok

    def close(self) -> None:
        """Stop the reader threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
