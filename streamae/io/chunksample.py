"""A fair sample of a patch file: whole HDF5 chunks spread evenly over it.

A file written by ``extract --stride`` is ordered by image and position, so its first
rows are not a fair sample.  :func:`spread_chunks` picks chunks evenly over the whole
file (always the first and the last), and :class:`ChunkSample` streams exactly those
chunks, so a warm-start stage reads only the rows it uses.  Under MPI every rank takes a
contiguous part of the chosen chunks (:func:`rank_part`).  This module only moves bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from streamae.io.patchfile import PatchFile, RowRanges, chunk_aligned_share


def spread_chunks(n_chunks: int, wanted: int) -> np.ndarray:
    """Indices (sorted, distinct) of ``wanted`` chunks out of ``n_chunks``, evenly spread.

    The first and the last chunk are always among them (for ``wanted`` ≥ 2), and the
    gaps between chosen chunks differ by at most one, so every region of the file is
    represented in proportion.  Deterministic: the same arguments give the same chunks,
    whatever the number of MPI ranks.
    """
    if n_chunks < 1 or wanted < 1:
        raise ValueError(f"need at least one chunk, got n_chunks={n_chunks}, wanted={wanted}")
    if wanted >= n_chunks:
        return np.arange(n_chunks, dtype=np.int64)
    if wanted == 1:
        return np.array([n_chunks // 2], dtype=np.int64)
    # Integer arithmetic (no float rounding): chunk i·(n−1)/(w−1), rounded to nearest.
    steps = np.arange(wanted, dtype=np.int64)
    return (steps * (n_chunks - 1) * 2 + (wanted - 1)) // (2 * (wanted - 1))


def chunks_for_rows(rows: int, chunk_rows: int, n_rows: int) -> int:
    """Whole chunks needed to hold at least ``rows`` rows (at most all of the file's)."""
    n_chunks = -(-n_rows // chunk_rows)
    return max(1, min(n_chunks, -(-rows // chunk_rows)))


def sample_rows(chunks: Sequence[int], chunk_rows: int, n_rows: int) -> int:
    """Rows held by ``chunks`` (the file's last chunk may be partial)."""
    return int(sum(min(chunk_rows, n_rows - c * chunk_rows) for c in chunks))


def rank_part(chunks: np.ndarray, rank: int, size: int) -> np.ndarray:
    """The contiguous part of ``chunks`` that rank ``rank`` of ``size`` reads."""
    start, stop = chunk_aligned_share(len(chunks), 1, rank, size)
    return chunks[start:stop]


class ChunkSample(RowRanges):
    """Stream the rows of some whole chunks of a patch file; a :class:`PatchFile` look-alike.

    ``chunks`` are chunk indices (sorted) of ``chunk_rows`` rows each; the blocks are
    delivered chunk by chunk in file order by one underlying :class:`PatchFile` (its
    reads, buffer and errors), so nothing is allocated per block.  ``first_row`` of a
    block is its row number in the file (so messages about a row name the right one).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        chunks: Sequence[int],
        *,
        chunk_rows: int,
        dtype: np.dtype | type = np.float32,
        file_locking: bool | None = None,
        dataset: str = "/patches",
    ) -> None:
        file = PatchFile(path, dtype=dtype, block_rows=chunk_rows, file_locking=file_locking, dataset=dataset)
        self.path = file.path
        self.chunks = np.asarray(chunks, dtype=np.int64)
        m = file.layout.n_rows
        ranges = [(int(c) * chunk_rows, min(m, (int(c) + 1) * chunk_rows)) for c in self.chunks]
        if any(first >= last for first, last in ranges):
            file.close()
            raise ValueError(f"chunk indices beyond the file's {m} rows: {list(self.chunks)}")
        super().__init__(file, ranges)
