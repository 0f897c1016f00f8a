"""Patch files on disk: open read-only, validate the layout, stream row blocks.

A patch file holds ``/patches``, an (m, n) float32 or float64 dataset, chunked along
rows (see DESIGN.md); any other 2-D floating dataset of any HDF5 file (``dataset=``)
streams the same way.  :class:`PatchFile` checks the layout when it opens the file and
streams row blocks with ``read_direct`` into one buffer allocated per stream, so a pass
over the data allocates nothing per block.  Arithmetic on the values (such as checking
them for NaN) belongs to the callers; this module only moves bytes.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import h5py
import numpy as np

from streamae.errors import DataError, InputFileError, StorageError
from streamae.io.convert import StagingBuffers, convert_rows
from streamae.io.hdf5 import MODEL_FORMAT, PATCHES_DATASET, decode_attribute, list_datasets, open_hdf5
from streamae.io.rawread import RawRows
from streamae.options import setting
from streamae.text import printable

# Rows per read for an unchunked dataset when the caller does not say: about 4 MiB of
# float32 data for 8x8 patches, large enough to amortise the per-read overhead.
DEFAULT_READ_BYTES = 4 << 20
# The HDF5 chunk cache must hold at least one whole chunk, or every partial read
# decompresses (or re-reads) the chunk again; h5py's default is 1 MiB.
MIN_CHUNK_CACHE_BYTES = 1 << 20


@dataclass(frozen=True)
class PatchLayout:
    """What a patch file holds: the shape and type of ``/patches`` and its metadata."""

    path: Path
    n_rows: int
    n_features: int
    dtype: np.dtype
    chunk_rows: int | None
    patch_shape: tuple[int, ...] | None
    attributes: dict
    dataset: str = "/" + PATCHES_DATASET
    # A hash of a seeded sample of the stored chunks (see content_fingerprint), when computed.
    content: str | None = None
    # Chunks of the dataset never written (they read as the fill value), when counted.
    unwritten_chunks: int = 0

    @property
    def fingerprint(self) -> dict:
        """The data fingerprint stored with a model: path, shape and dtype, the sampled
        content when computed, and the dataset when it is not ``/patches`` (so files
        written before datasets were choosable match)."""
        found = {
            "path": str(self.path.resolve()),
            "shape": [self.n_rows, self.n_features],
            "dtype": str(self.dtype),
        }
        if self.dataset != "/" + PATCHES_DATASET:
            found["dataset"] = self.dataset
        if self.content is not None:
            found["content"] = self.content
        return found


# The content fingerprint hashes this many whole chunks (the first, the last and a seeded
# sample between): a few MiB read even for a file of terabytes.
FINGERPRINT_CHUNKS = 8
FINGERPRINT_SEED = 20261130
FINGERPRINT_SCHEME = "sha256/chunks8"
# Rows per sampled piece of an unchunked dataset: about this many bytes.
FINGERPRINT_PIECE_BYTES = 1 << 20


def content_fingerprint(dataset: h5py.Dataset) -> str:
    """A hash of the stored values of a seeded sample of whole chunks of an (m, n) dataset.

    Cheap on huge files (at most FINGERPRINT_CHUNKS chunks are read, one at a time) and
    deterministic, so a checkpoint can tell whether the file it resumes on holds the same
    values it was trained on: replaced or rewritten contents change the hash unless every
    change falls outside the sampled chunks (the value range compared on resume and the
    file's identity checked at every pass catch more).
    """
    import hashlib

    m, n = dataset.shape
    rows = (
        dataset.chunks[0]
        if dataset.chunks is not None
        else max(1, FINGERPRINT_PIECE_BYTES // max(1, n * dataset.dtype.itemsize))
    )
    units = -(-m // rows)
    picks = {0, units - 1}
    generator = np.random.default_rng(FINGERPRINT_SEED)
    picks |= {int(u) for u in generator.choice(units, size=min(units, FINGERPRINT_CHUNKS - 2), replace=False)}
    digest = hashlib.sha256(f"{m}x{n}:{dataset.dtype.str}".encode())
    for unit in sorted(picks):
        first, last = unit * rows, min(m, (unit + 1) * rows)
        try:
            piece = dataset[first:last]
        except (OSError, RuntimeError) as error:
            label = "chunk" if dataset.chunks is not None else "block"
            raise StorageError(
                f"{dataset.file.filename}: reading rows {first}-{last - 1} of {_shown(dataset.name)} "
                f"({label} {unit}) failed ({_first_line(error)}); the file is truncated or damaged: "
                "extract it again or restore a copy."
            ) from error
        digest.update(np.ascontiguousarray(piece).tobytes())
    return f"{FINGERPRINT_SCHEME}:{digest.hexdigest()[:32]}"


def _first_line(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:200]


def file_identity(path: Path) -> tuple[int, int, int, int]:
    """(device, inode, size, mtime in ns) of the file at ``path``: what a pass must find unchanged."""
    info = os.stat(path)
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def describe_change(before: tuple[int, int, int, int], after: tuple[int, int, int, int] | None) -> str:
    """In words, how a file's identity changed (for a one-sentence message)."""
    if after is None:
        return "it was removed"
    if before[:2] != after[:2]:
        return "another file was put in its place"
    if before[2] != after[2]:
        return f"its size went from {before[2]:,} to {after[2]:,} bytes"
    return "it was rewritten (its modification time changed)"


def validate_patch_dataset(
    handle: h5py.File, path: Path, dataset: str = "/" + PATCHES_DATASET
) -> h5py.Dataset:
    """Return ``dataset`` (default ``/patches``) of an open file, or raise a one-sentence error.

    Any 2-D floating dataset of any HDF5 file qualifies; the messages name the dataset.
    Soft links are followed (a cycle or a dangling link is refused with a sentence), a
    virtual dataset is read through its sources (each must exist), an external raw file
    must exist and be a regular file large enough for the data.
    """
    name = _shown(dataset)
    default = dataset == "/" + PATCHES_DATASET
    remedy = "give a patch file written by `streamae extract`" if default else "give a 2-D floating dataset"
    found = _follow(handle, path, dataset)
    if not isinstance(found, h5py.Dataset):
        below = found if isinstance(found, h5py.Group) else handle  # a group: its own datasets
        present = [printable(entry, 80) for entry in list_datasets(below)]
        listing = ", ".join(present[:10]) + (" ..." if len(present) > 10 else "")
        held = f"it holds {listing}" if present else "it holds no datasets"
        if handle.attrs.get("format") == MODEL_FORMAT:
            held = "it is a model file"
        if isinstance(found, h5py.Group):
            held = f"{name} is a group; " + held
        hint = remedy if default else f"choose one of its datasets with {setting('dataset', 'NAME')}"
        raise InputFileError(f"{path}: no {name} dataset ({held}); {hint}.")
    found_dataset = found
    redo = "extract the patches again" if default else "give a dataset of one example per row"
    if found_dataset.ndim != 2:
        raise InputFileError(
            f"{path}: {name} has shape {found_dataset.shape}, not (rows, features); "
            f"a patch file holds one flattened patch per row: {redo}."
        )
    if found_dataset.dtype.kind != "f" or found_dataset.dtype.itemsize not in (2, 4, 8):
        advice = (
            f"extract the patches again with a normalize mode such as {setting('normalize', 'unit')} "
            "(or convert them to float32)"
            if default
            else "convert it to float32 or float64"
        )
        raise InputFileError(
            f"{path}: {name} holds {found_dataset.dtype} values, not float16, float32 or float64; {advice}."
        )
    m, n = found_dataset.shape
    if found_dataset.is_virtual:
        _check_virtual_sources(found_dataset, path, name)
    elif found_dataset.external:
        _check_external_files(found_dataset, path, name)
    elif m >= 1 and n >= 1 and _stores_nothing(found_dataset):
        raise InputFileError(
            f"{path}: {name} declares shape {found_dataset.shape} but holds no stored data (it was "
            f"never written); {redo}."
        )
    if m < 1 or n < 1:
        raise InputFileError(f"{path}: {name} has shape {found_dataset.shape}, which holds no data; {redo}.")
    return found_dataset


def _shown(dataset: str) -> str:
    """A dataset path fit for a message (bounded, no control characters)."""
    return printable(dataset, 80)


def _follow(handle: h5py.File, path: Path, dataset: str = "/" + PATCHES_DATASET) -> object:
    """``dataset`` with its links followed by HDF5, or a sentence for a link that cannot be."""
    name = _shown(dataset)
    error: Exception | None = None
    try:
        found = handle.get(dataset)
    except (KeyError, OSError, RuntimeError, ValueError) as failure:
        found, error = None, failure
    if found is not None:
        return found
    try:
        link = handle.get(dataset, getlink=True)
    except (KeyError, OSError, RuntimeError, ValueError):
        link = None
    if link is None and error is None:
        return None  # no such name: the caller lists what the file holds
    if isinstance(link, h5py.SoftLink):
        target = printable(link.path, 120)
        raise InputFileError(
            f"{path}: {name} is a soft link to {target} that cannot be followed (a cycle of "
            f"links or a link to nothing); give a file whose {name} is a dataset."
        ) from error
    if isinstance(link, h5py.ExternalLink):
        target = printable(f"{link.filename}:{link.path}", 160)
        raise InputFileError(
            f"{path}: {name} is an external link to {target}, which cannot be opened; "
            f"check that file, or give a file whose {name} is a dataset."
        ) from error
    raise InputFileError(
        f"{path}: {name} cannot be opened ({printable(error)}); give a patch file written by "
        "`streamae extract`."
    ) from error


def _check_virtual_sources(dataset: h5py.Dataset, path: Path, name: str) -> None:
    """Every source of a virtual dataset must exist (else HDF5 reads fill values silently)."""
    for source in dataset.virtual_sources():
        source_name = source.file_name
        if source_name == ".":
            continue  # a dataset of this same file
        where = Path(source_name) if Path(source_name).is_absolute() else path.parent / source_name
        shown = printable(source_name, 120)
        if not where.exists():
            raise InputFileError(
                f"{path}: {name} is a virtual dataset whose source file {shown} is missing (looked "
                f"in {printable(where.parent, 120)}); put it back or give a patch file that holds its data."
            )
        if not where.is_file():
            raise InputFileError(
                f"{path}: {name} is a virtual dataset whose source {shown} is not a regular file; "
                "give a patch file that holds its data."
            )
        try:
            with h5py.File(where, "r") as other:
                present = isinstance(other.get(source.dset_name), h5py.Dataset)
        except (OSError, RuntimeError, ValueError):
            present = False
        if not present:
            raise InputFileError(
                f"{path}: {name} is a virtual dataset whose source {shown} holds no readable "
                f"dataset {printable(source.dset_name, 80)}; repair the source or give a patch file "
                "that holds its data."
            )


def _check_external_files(dataset: h5py.Dataset, path: Path, name: str) -> None:
    """The raw files of an external dataset must be regular files holding the declared bytes."""
    for raw_name, offset, size in dataset.external:
        text = os.fsdecode(raw_name)
        where = Path(text)  # HDF5 resolves them from the current folder
        shown = printable(text, 120)
        if not where.exists():
            raise InputFileError(
                f"{path}: {name} stores its values in the external raw file {shown}, which is "
                f"missing (looked in {printable(Path.cwd(), 120)}); run from the folder that holds it "
                "or extract the patches again."
            )
        if not where.is_file():
            raise InputFileError(
                f"{path}: {name} stores its values in the external raw file {shown}, which is not "
                "a regular file (a FIFO, a device or a folder); give a patch file that holds its data."
            )
        if where.stat().st_size < offset + min(size, dataset.size * dataset.dtype.itemsize):
            raise InputFileError(
                f"{path}: {name} stores its values in the external raw file {shown}, which holds "
                f"{where.stat().st_size:,} bytes, fewer than declared; restore that file or extract "
                "the patches again."
            )


def unwritten_chunks(dataset: h5py.Dataset) -> int:
    """How many chunks of a chunked dataset were never written (they read as the fill value)."""
    if dataset.chunks is None or dataset.is_virtual or dataset.external:
        return 0
    needed = 1
    for extent, chunk in zip(dataset.shape, dataset.chunks, strict=True):
        needed *= -(-extent // chunk)
    try:
        return max(0, needed - int(dataset.id.get_num_chunks()))
    except (AttributeError, OSError, RuntimeError):
        return 0


def _stores_nothing(dataset: h5py.Dataset) -> bool:
    """True for a dataset that was declared but never written (it would read as fill values)."""
    if dataset.external:
        return False
    try:
        return dataset.id.get_storage_size() == 0
    except (OSError, RuntimeError):
        return False


def read_layout(dataset: h5py.Dataset, path: Path) -> PatchLayout:
    """The :class:`PatchLayout` of an already validated dataset (``/patches`` or another)."""
    attributes = {key: decode_attribute(value) for key, value in dataset.file.attrs.items()}
    patch_shape = attributes.get("patch_shape")
    m, n = dataset.shape
    if isinstance(patch_shape, list) and all(isinstance(v, int) and v > 0 for v in patch_shape):
        patch_shape = tuple(patch_shape) if int(np.prod(patch_shape)) == n else None
    else:
        patch_shape = None
    return PatchLayout(
        path=path,
        n_rows=m,
        n_features=n,
        dtype=dataset.dtype,
        chunk_rows=dataset.chunks[0] if dataset.chunks is not None else None,
        patch_shape=patch_shape,
        attributes=attributes,
        dataset=dataset.name,
    )


def inspect_patch_file(
    path: str | os.PathLike,
    dataset: str = "/" + PATCHES_DATASET,
    *,
    file_locking: bool | None = None,
    content: bool = False,
) -> PatchLayout:
    """Open, validate and describe a patch file (or any file's 2-D ``dataset``).

    No values are read, unless ``content``: then the layout also carries the sampled
    content hash (:func:`content_fingerprint`, a few chunks) and the count of never-written
    chunks, as training stores and checks them.  ``file_locking=False`` opens without
    HDF5's file locks.
    """
    path = Path(path)
    with open_hdf5(path, file_locking=file_locking) as handle:
        found = validate_patch_dataset(handle, path, dataset)
        layout = read_layout(found, path)
        if content:
            layout = replace(
                layout, content=content_fingerprint(found), unwritten_chunks=unwritten_chunks(found)
            )
        return layout


def default_block_rows(layout: PatchLayout) -> int:
    """Rows per read when the caller does not choose: one HDF5 chunk, or ~4 MiB."""
    if layout.chunk_rows is not None:
        return layout.chunk_rows
    return max(1, DEFAULT_READ_BYTES // (layout.n_features * layout.dtype.itemsize))


def chunk_aligned_share(n_rows: int, chunk_rows: int, rank: int, size: int) -> tuple[int, int]:
    """The contiguous row range [start, stop) of rank ``rank`` among ``size``.

    Whole chunks are dealt out as evenly as possible, earlier ranks taking one more when
    they do not divide; a rank with no chunk gets an empty range.
    """
    n_chunks = -(-n_rows // chunk_rows)
    base, extra = divmod(n_chunks, size)
    first_chunk = rank * base + min(rank, extra)
    count = base + (1 if rank < extra else 0)
    start = min(n_rows, first_chunk * chunk_rows)
    stop = min(n_rows, (first_chunk + count) * chunk_rows)
    return start, stop


class ReadStats:
    """Running totals of a stream's reads: seconds inside HDF5 reads and bytes read.

    Updated by the reading threads (several at once when lanes read their own rows), read
    by the consumer: each update replaces one tuple under a lock, so a reader of
    :meth:`snapshot` sees a consistent pair and no count is lost.
    """

    def __init__(self) -> None:
        self._totals = (0.0, 0)
        self._lock = threading.Lock()

    def add(self, seconds: float, nbytes: int) -> None:
        """Count one read."""
        with self._lock:
            total_seconds, total_bytes = self._totals
            self._totals = (total_seconds + seconds, total_bytes + nbytes)

    def snapshot(self) -> tuple[float, int]:
        """(seconds, bytes) so far."""
        return self._totals

    def since(self, start: tuple[float, int]) -> tuple[float, int]:
        """(seconds, bytes) read since an earlier :meth:`snapshot`."""
        seconds, nbytes = self._totals
        return seconds - start[0], nbytes - start[1]


class _ClosedOnExit:
    """``with source:`` closes it at the end of the block (the sources define ``close``)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Source) -> _Source:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_Source = TypeVar("_Source", bound=_ClosedOnExit)


class PatchFile(_ClosedOnExit):
    """A patch file opened read-only for streaming; use as a context manager.

    ``block_rows`` sets the rows per read (default: one chunk); ``row_range`` restricts
    the stream to rows [start, stop) (an MPI rank's share); ``dtype`` is the type the
    blocks are delivered in (HDF5 converts while reading).  With ``prefetch`` a reader
    thread reads the next block into a second buffer while the caller works on the
    current one.  ``chunk_cache_bytes`` sets HDF5's chunk cache (default: two chunks when
    a chunk exceeds 1 MiB; :mod:`streamae.io.readpolicy` decides it for streaming).
    ``io_stats`` counts the time spent in reads and the bytes read, so
    the reading rate can be shown beside the computing rate.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        dtype: np.dtype | type = np.float32,
        block_rows: int | None = None,
        row_range: tuple[int, int] | None = None,
        file_locking: bool | None = None,
        prefetch: bool = False,
        chunk_cache_bytes: int | None = None,
        dataset: str = "/" + PATCHES_DATASET,
    ) -> None:
        self.path = Path(path)
        self.prefetch = bool(prefetch)
        self.io_stats = ReadStats()
        self._handle = open_hdf5(self.path, file_locking=file_locking)
        self.identity = file_identity(self.path)
        try:
            dataset = validate_patch_dataset(self._handle, self.path, dataset)
            self.layout = read_layout(dataset, self.path)
            chunk_bytes = self._chunk_bytes(dataset)
            if chunk_cache_bytes is None and chunk_bytes > MIN_CHUNK_CACHE_BYTES:
                chunk_cache_bytes = 2 * chunk_bytes  # two whole chunks
            if chunk_cache_bytes is not None:
                # Reopen the dataset with the chunk cache asked for (see io/readpolicy.py).
                self._handle.close()
                self._handle = open_hdf5(
                    self.path,
                    file_locking=file_locking,
                    rdcc_nbytes=int(chunk_cache_bytes),
                    rdcc_nslots=1009,
                )
                dataset = self._handle[self.layout.dataset]
        except BaseException:
            self._handle.close()
            raise
        self._dataset = dataset
        self.dtype = np.dtype(dtype)
        # Rows stored in another type (float16 files) are read as stored (in this machine's
        # byte order: HDF5 swaps) and decoded per block into the compute type
        # (io/convert.py), in a staging buffer per thread.
        stored = dataset.dtype.newbyteorder("=")
        self._staging = StagingBuffers(stored) if stored != self.dtype else None
        # Byte runs read by several threads where the dataset allows it (io/rawread.py).
        self._raw = RawRows.for_dataset(dataset, stored if self._staging else self.dtype)
        self.block_rows = int(block_rows or default_block_rows(self.layout))
        if self.block_rows < 1:
            raise ValueError("block_rows must be at least 1")
        start, stop = row_range if row_range is not None else (0, self.layout.n_rows)
        self.start, self.stop = int(start), int(stop)
        self._buffer = np.empty(
            (min(self.block_rows, max(1, self.stop - self.start)), self.layout.n_features),
            dtype=self.dtype,
        )
        self._spare: np.ndarray | None = None

    @staticmethod
    def _chunk_bytes(dataset: h5py.Dataset) -> int:
        if dataset.chunks is None:
            return 0
        return int(np.prod(dataset.chunks)) * dataset.dtype.itemsize

    @property
    def n_rows(self) -> int:
        """Rows this stream delivers (the whole file, or this rank's share)."""
        return self.stop - self.start

    def blocks(self, start: int | None = None, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_row, block)`` over the rows [start, stop), in order.

        The range defaults to the whole row range the file was opened on; a narrower one
        (see :class:`RowRanges`) must lie inside it, so the buffer holds any block.
        ``block`` is a (rows, n) view of a buffer reused for a later block: use it before
        asking for the next one.  The file must be the one opened, unchanged, at the start
        and at the end of every pass (:meth:`check_unchanged`).
        """
        start = self.start if start is None else start
        stop = self.stop if stop is None else stop
        self.check_unchanged()
        if self.prefetch and stop - start > self.block_rows:
            yield from self._prefetched_blocks(start, stop)
        else:
            for first in range(start, stop, self.block_rows):
                last = min(first + self.block_rows, stop)
                view = self._buffer[: last - first]
                self._read(first, last, view)
                yield first, view
        self.check_unchanged()

    def check_unchanged(self) -> None:
        """Raise :class:`DataError` if the file was replaced, truncated or rewritten since it
        was opened (one ``stat``: cheap enough for every pass boundary)."""
        try:
            now = file_identity(self.path)
        except OSError:
            now = None
        if now != self.identity:
            change = describe_change(self.identity, now)
            raise DataError(
                f"{self.path}: the file changed while it was being read ({change}), "
                "so results from it would be wrong and this run stops, keeping the last checkpoint; "
                "restore the data, then resume or train again."
            )

    @property
    def reads_in_parallel(self) -> bool:
        """True when several threads may call :meth:`read_rows` at once and gain from it:
        the rows are read as byte runs (io/rawread.py, no HDF5 lock) and no reader thread
        prefetches."""
        return self._raw is not None and not self.prefetch

    def start_pass(self) -> None:
        """Begin a pass of :meth:`read_rows` calls: the file must be the one opened."""
        self.check_unchanged()

    def read_rows(self, first: int, last: int, out: np.ndarray) -> None:
        """Rows [first, last) of this stream (0 is its first row) into ``out`` (last −
        first, n), by the calling thread alone; safe from several threads at once, between
        :meth:`start_pass` and :meth:`end_pass`."""
        self._read(self.start + first, self.start + last, out, parallel=False)

    def end_pass(self) -> None:
        """End a pass of :meth:`read_rows` calls: the file must still be the one opened."""
        self.check_unchanged()

    def _read(self, first: int, last: int, out: np.ndarray, parallel: bool = True, raw: bool = True) -> None:
        """Rows [first, last) of /patches into ``out`` (last − first, n), timed, decoded
        from the file's type into out's when they differ (read into a staging buffer)."""
        if self._staging is None:
            self._read_stored(first, last, out, parallel, raw)
            return
        stored = self._staging.get(last - first, out.shape[1])
        self._read_stored(first, last, stored, parallel, raw)
        convert_rows(stored, out)

    def _read_stored(self, first: int, last: int, out: np.ndarray, parallel: bool, raw: bool) -> None:
        """Rows [first, last) of /patches into ``out`` (last − first, n), timed; as byte
        runs where the dataset allows (``raw``, on ``parallel`` threads), else by HDF5."""
        started = time.perf_counter()
        if raw and self._raw is not None and self._raw.read(first, last, out, parallel=parallel):
            self.io_stats.add(time.perf_counter() - started, out.nbytes)
            return
        try:
            self._dataset.read_direct(out, np.s_[first:last], np.s_[0 : last - first])
        except (OSError, RuntimeError) as error:
            first, last, error = self._locate_failure(first, last, out, error)
            raise StorageError(
                f"{self.path}: reading rows {first}-{last - 1} of {_shown(self.layout.dataset)} "
                f"(chunk {first // (self.layout.chunk_rows or self.block_rows)}) failed ({error}); "
                "the file is truncated or damaged: extract it again or restore a copy."
            ) from error
        self.io_stats.add(time.perf_counter() - started, out.nbytes)

    def _locate_failure(
        self, first: int, last: int, out: np.ndarray, error: Exception
    ) -> tuple[int, int, Exception]:
        """The rows of the first chunk in [first, last) whose read fails, and its error.

        A read of several chunks (the read policy's blocks) fails as a whole; reading
        them one at a time names the damaged chunk, as a one-chunk read would.
        """
        chunk = self.layout.chunk_rows
        if not chunk or last - first <= chunk:
            return first, last, error
        start = first
        while start < last:
            stop = min(last, (start // chunk + 1) * chunk)
            try:
                self._dataset.read_direct(out, np.s_[start:stop], np.s_[start - first : stop - first])
            except (OSError, RuntimeError) as chunk_error:
                return start, stop, chunk_error
            start = stop
        return first, last, error

    def _prefetched_blocks(self, start: int, stop_row: int) -> Iterator[tuple[int, np.ndarray]]:
        """:meth:`blocks` with a reader thread and two buffers (see the class doc).

        The reader fills a free buffer and hands it over through ``ready``; the consumer
        gives it back through ``free`` when it asks for the next block.  Closing the
        generator early stops the reader before returning.
        """
        if self._spare is None:  # the second buffer, allocated once per file
            self._spare = np.empty_like(self._buffer)
        free: queue.Queue = queue.Queue()
        ready: queue.Queue = queue.Queue()
        free.put(self._buffer)
        free.put(self._spare)
        stop = threading.Event()

        def reader() -> None:
            try:
                for first in range(start, stop_row, self.block_rows):
                    buffer = free.get()
                    if stop.is_set():
                        return
                    last = min(first + self.block_rows, stop_row)
                    view = buffer[: last - first]
                    # From the device (prefetch's case) HDF5's own reads, one chunk after
                    # the other, kept the device busiest: 141% of `cat`'s cold rate against
                    # 61-81% for byte runs in one or two threads and 71% for lanes reading
                    # their own rows with read-ahead hints (bench_scale.py, 10^8 rows cold).
                    self._read(first, last, view, raw=False)
                    ready.put((first, view, buffer))
            except BaseException as error:  # noqa: BLE001 - handed to the consumer
                ready.put(error)
            ready.put(None)

        thread = threading.Thread(target=reader, name="streamae-reader", daemon=True)
        thread.start()
        try:
            while True:
                item = ready.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                first, view, buffer = item
                yield first, view
                free.put(buffer)
        finally:
            stop.set()
            free.put(None)  # wake a reader waiting for a buffer
            free.put(None)
            thread.join()

    def close(self) -> None:
        """Close the file (and stop the raw reader's threads)."""
        if self._raw is not None:
            self._raw.close()
        self._handle.close()


class RowRanges(_ClosedOnExit):
    """Some row ranges of an opened :class:`~streamae.io.patchfile.PatchFile`, as one source.

    ``blocks`` yields the file's blocks range after range, with their row numbers in the
    file (so messages name the file's rows).  The file must have been opened on a row
    range containing every range (its buffer is then large enough for any block).
    """

    def __init__(self, source: PatchFile, ranges: list[tuple[int, int]]) -> None:
        self._source = source
        self.ranges = [(int(a), int(b)) for a, b in ranges if b > a]
        self.dtype = source.dtype
        self.block_rows = source.block_rows
        self.layout = source.layout
        self.io_stats = getattr(source, "io_stats", None)

    @property
    def n_rows(self) -> int:
        """Rows this source delivers."""
        return sum(b - a for a, b in self.ranges)

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first_row, block)`` over every range in order (blocks reuse one buffer)."""
        for start, stop in self.ranges:
            yield from self._source.blocks(start, stop)

    def close(self) -> None:
        """Close the underlying file."""
        self._source.close()


class ArrayPatches(_ClosedOnExit):
    """An in-memory array with the streaming interface of :class:`PatchFile`.

    The in-core scheme and the tests use it; ``blocks`` yields views, copying nothing.
    """

    def __init__(self, data: np.ndarray, *, block_rows: int | None = None) -> None:
        if data.ndim != 2 or data.shape[0] < 1:
            raise ValueError(f"data must be a non-empty 2-D array, got shape {data.shape}")
        self.data = np.ascontiguousarray(data)
        self.dtype = self.data.dtype
        self.block_rows = int(block_rows or data.shape[0])
        self.start, self.stop = 0, data.shape[0]
        self.layout = PatchLayout(
            path=Path("<memory>"),
            n_rows=data.shape[0],
            n_features=data.shape[1],
            dtype=self.data.dtype,
            chunk_rows=None,
            patch_shape=None,
            attributes={},
        )

    @property
    def n_rows(self) -> int:
        """Rows this source delivers."""
        return self.stop - self.start

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_row, block)`` views of the array."""
        for first in range(self.start, self.stop, self.block_rows):
            yield first, self.data[first : min(first + self.block_rows, self.stop)]

    def close(self) -> None:
        """Nothing to close."""
