"""How a patch file is read: block size, prefetch and chunk cache, decided in one place.

``train``, ``encode`` and the benchmarks all open their data through :func:`open_patches`
(or :func:`read_policy` + :meth:`ReadPolicy.open`), so what is benchmarked is what runs.

The four decisions and why (each measured by ``python benchmarks/bench_read.py`` or
``bench_scale.py``; the figures are in benchmarks/README.md):

- **Block size**: whole HDF5 chunks adding up to ``STREAMING_READ_BYTES`` (8 MiB): the
  compute lanes meet once per block, and each meeting costs time on a busy host.
- **Chunk cache**: for an unfiltered dataset read in whole chunks, none.  HDF5 reads a
  chunk that does not fit its cache straight into the caller's buffer; one that fits goes
  through the cache and is copied again, which made warm reads markedly slower with
  h5py's default 1 MiB cache (cold, both run at the device's rate).  A filtered (compressed)
  dataset keeps a cache of two chunks, so a read that starts inside a chunk (an MPI
  share's edge) does not decompress that chunk twice.
- **Prefetch** (a reader thread filling a second buffer while the lanes compute): on when
  the file is unlikely to be in the page cache, i.e. when it is larger than
  ``PREFETCH_MEMORY_FRACTION`` of the memory available now.  From the page cache a read is
  a memory copy that needs a core of its own; on 2 cores both are busy computing, so the
  thread only takes turns with them.  From disk the read waits on the device, and
  overlapping that wait with computing is the gain: measured on one single-pass
  evaluation, prefetch made no real difference warm and shortened the wait cold.
- **Who reads**: an unfiltered dataset in the file's own bytes is read as byte runs
  (:mod:`streamae.io.rawread`), without HDF5's lock, by several threads at once.  Without
  prefetch, each compute lane then reads its own share of the rows, 1 MiB at a time, and
  computes on it while it is in the core's cache (``StreamedObjective._stream_by_lanes``):
  both cores copy from the page cache instead of one while the other waits.  With
  prefetch the reader thread reads through HDF5, chunk after chunk: from the device that
  kept it busiest (10^8 rows cold, ``bench_scale.py``: faster than ``cat``, where byte runs
  and lanes reading their own rows with read-ahead hints were slower than it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from streamae.io.hdf5 import PATCHES_DATASET, open_hdf5
from streamae.io.patchfile import PatchFile, PatchLayout, default_block_rows, inspect_patch_file
from streamae.runtime.memory import available_memory

# Rows per read for streaming: whole chunks adding up to about this many bytes (see the
# module doc; measured for n=64: 4096-row blocks 218 ms per evaluation of 400k rows,
# 32768-row blocks 200 ms, one block 168 ms).
STREAMING_READ_BYTES = 8 << 20
# A file larger than this share of the available memory is taken to be read from disk.
PREFETCH_MEMORY_FRACTION = 0.5
# Chunks a filtered dataset's cache holds.
FILTERED_CACHE_CHUNKS = 2
# The number of hash slots HDF5 recommends: a prime, ~100x the chunks the cache holds.
CACHE_SLOTS = 1009


@dataclass(frozen=True)
class ReadPolicy:
    """How to read one patch file: rows per read, reader thread or not, chunk cache bytes.

    ``reason`` says in one sentence why prefetch is on or off (shown by ``train``).
    """

    block_rows: int
    prefetch: bool
    chunk_cache_bytes: int
    reason: str

    def open(
        self,
        path: str | os.PathLike,
        *,
        dtype: np.dtype | type = np.float32,
        row_range: tuple[int, int] | None = None,
        file_locking: bool | None = None,
        dataset: str = "/" + PATCHES_DATASET,
    ) -> PatchFile:
        """A :class:`PatchFile` reading ``dataset`` of ``path`` by this policy."""
        return PatchFile(
            path,
            dtype=dtype,
            block_rows=self.block_rows,
            row_range=row_range,
            file_locking=file_locking,
            prefetch=self.prefetch,
            chunk_cache_bytes=self.chunk_cache_bytes,
            dataset=dataset,
        )


def streaming_block_rows(layout: PatchLayout, target_bytes: int = STREAMING_READ_BYTES) -> int:
    """Rows per read for streaming: whole chunks totalling about ``target_bytes``."""
    unit = default_block_rows(layout)
    row_bytes = layout.n_features * layout.dtype.itemsize
    return unit * max(1, target_bytes // max(1, unit * row_bytes))


def storage_of(
    path: str | os.PathLike, file_locking: bool | None = None, dataset: str = "/" + PATCHES_DATASET
) -> tuple[bool, int]:
    """(filtered, chunk bytes) of a patch file's ``dataset``; chunk bytes 0 when contiguous."""
    with open_hdf5(Path(path), file_locking=file_locking) as handle:
        return _storage(handle[dataset])


def _storage(dataset: h5py.Dataset) -> tuple[bool, int]:
    if dataset.chunks is None:
        return False, 0
    filtered = dataset.id.get_create_plist().get_nfilters() > 0
    return filtered, int(np.prod(dataset.chunks)) * dataset.dtype.itemsize


def read_policy(
    layout: PatchLayout,
    *,
    filtered: bool = False,
    chunk_bytes: int = 0,
    block_rows: int | None = None,
    share_rows: int | None = None,
    memory: int | None = None,
    prefetch: bool | None = None,
) -> ReadPolicy:
    """The read policy for a file of this layout on this machine (see the module doc).

    ``block_rows``: the caller's rows per read (default: ~8 MiB of whole chunks).
    ``share_rows``: rows this process reads (default all).  ``memory``: bytes available
    (default: MemAvailable now).  ``prefetch``: force the reader thread on or off.
    """
    rows = int(block_rows) if block_rows else streaming_block_rows(layout)
    if rows < 1:
        raise ValueError(f"block_rows must be at least 1, got {rows}")
    cache = FILTERED_CACHE_CHUNKS * chunk_bytes if filtered else 0
    share = layout.n_rows if share_rows is None else int(share_rows)
    nbytes = share * layout.n_features * layout.dtype.itemsize
    memory = available_memory() if memory is None else int(memory)
    if prefetch is not None:
        reason = "prefetch " + ("on" if prefetch else "off") + " as asked"
    elif nbytes > PREFETCH_MEMORY_FRACTION * memory:
        prefetch = True
        reason = (
            f"prefetch on: {nbytes / 2**30:,.1f} GiB to read exceeds half the available memory "
            f"({memory / 2**30:,.1f} GiB), so reads come from disk and overlap the computing"
        )
    else:
        prefetch = False
        reason = (
            f"prefetch off: {nbytes / 2**30:,.2f} GiB fits in the page cache, where reading is a "
            "memory copy that would take turns with the computing threads"
        )
    return ReadPolicy(block_rows=rows, prefetch=bool(prefetch), chunk_cache_bytes=cache, reason=reason)


def open_patches(
    path: str | os.PathLike,
    *,
    dtype: np.dtype | type = np.float32,
    block_rows: int | None = None,
    row_range: tuple[int, int] | None = None,
    file_locking: bool | None = None,
    prefetch: bool | None = None,
    dataset: str = "/" + PATCHES_DATASET,
    layout: PatchLayout | None = None,
) -> PatchFile:
    """Open ``dataset`` of ``path`` for streaming by :func:`read_policy`; the policy is ``.policy``.

    ``layout``: the dataset's layout when the caller has read it already (it is not read again).
    """
    if layout is None:
        layout = inspect_patch_file(path, dataset, file_locking=file_locking)
    filtered, chunk_bytes = storage_of(path, file_locking, layout.dataset)
    share = None if row_range is None else row_range[1] - row_range[0]
    policy = read_policy(
        layout,
        filtered=filtered,
        chunk_bytes=chunk_bytes,
        block_rows=block_rows,
        share_rows=share,
        prefetch=prefetch,
    )
    source = policy.open(
        path, dtype=dtype, row_range=row_range, file_locking=file_locking, dataset=layout.dataset
    )
    source.policy = policy
    return source
