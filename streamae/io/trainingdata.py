"""Training data, opened in one call: what a training session reads, and nothing it assembles.

:func:`open_training_data` opens this process's share of a patch file's 2-D dataset by the
one read policy (:mod:`streamae.io.readpolicy`), with the identity a checkpoint stores and
checks on resume (the layout's fingerprint, with a sampled content hash), the held-out
rows when asked (another file, or a seeded choice of whole chunks of this one, taken out
of the training stream) and the data's normalisation (kept in the model).  The session
gets a :class:`TrainingData` and never calls io's parts one at a time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamae.errors import InputFileError, UsageError
from streamae.io.normalization import read_normalization
from streamae.io.patchfile import (
    PatchFile,
    PatchLayout,
    RowRanges,
    chunk_aligned_share,
    default_block_rows,
    inspect_patch_file,
)
from streamae.io.readpolicy import open_patches
from streamae.options import setting
from streamae.text import printable


@dataclass(frozen=True)
class ReadRequest:
    """How to read: the compute ``dtype``, rows per read (``chunk_rows``, None: the read
    policy's choice), HDF5 file locking, and this process's place among ``size``."""

    dtype: type = np.float32
    chunk_rows: int | None = None
    file_locking: bool | None = None
    rank: int = 0
    size: int = 1


@dataclass(frozen=True)
class HeldOutRequest:
    """The held-out rows asked for: another ``file``'s ``dataset``, or a ``fraction`` of
    this file's chunks chosen with ``seed`` (at most one of the two)."""

    file: Path | None = None
    dataset: str | None = None
    fraction: float | None = None
    seed: int = 0


@dataclass
class TrainingData:
    """One process's training data, open.

    ``layout`` describes the whole dataset (its ``fingerprint`` is the identity stored in
    checkpoints); ``source`` streams this process's training rows in blocks of
    ``block_rows``; ``policy`` is the read policy chosen (None for sources without one).
    ``held_out`` streams this process's held-out rows (None without), ``held_name``
    names them in messages and ``held_record`` is what the model records of them.
    ``normalization`` is (description, arrays) of the data's normalisation; ``notes``
    warnings worth a line (never-written chunks).
    """

    path: Path
    layout: PatchLayout
    source: object
    block_rows: int
    policy: object = None
    held_out: object = None
    held_name: str | None = None
    held_record: dict | None = None
    normalization: tuple = (None, {})
    notes: list[str] = field(default_factory=list)


def open_training_data(
    path: str | os.PathLike,
    dataset: str,
    read: ReadRequest,
    held: HeldOutRequest | None,
    stack: contextlib.ExitStack,
) -> TrainingData:
    """Open ``dataset`` of ``path`` for training as ``read`` says; files close with ``stack``.

    Raises :class:`~streamae.errors.InputFileError` (missing or unreadable file, a file
    HDF5 cannot lock) and :class:`~streamae.errors.UsageError` (held-out data that does
    not fit the training data).
    """
    path = Path(path)
    with explained_lock_failure(path):
        # With the sampled content hash, stored in checkpoints and compared on resume.
        layout = inspect_patch_file(path, dataset, file_locking=read.file_locking, content=True)
        # Ranks share whole chunks (or whole blocks of the rows asked for).
        share = chunk_aligned_share(
            layout.n_rows, read.chunk_rows or default_block_rows(layout), read.rank, read.size
        )
        source = stack.enter_context(_open_share(path, layout, share, read))
    data = TrainingData(
        path=path,
        layout=layout,
        source=source,
        block_rows=source.block_rows,
        policy=getattr(source, "policy", None),
        normalization=read_normalization(path, file_locking=read.file_locking),
    )
    if layout.unwritten_chunks and read.rank == 0:
        data.notes.append(
            f"warning: {path}: {layout.unwritten_chunks} chunk(s) of {printable(layout.dataset, 80)} "
            "were never written and read as the fill value; check that the file was written completely"
        )
    if held is not None and held.fraction is not None:
        _hold_out_chunks(data, share, held, read, stack)
    elif held is not None and held.file is not None:
        _open_held_out_file(data, held, read, stack)
    return data


def _open_share(path: Path, layout: PatchLayout, share: tuple[int, int], read: ReadRequest) -> PatchFile:
    """This process's rows of ``layout``'s dataset, read by the one read policy."""
    return open_patches(
        path,
        dtype=np.dtype(read.dtype).type,
        block_rows=read.chunk_rows,
        row_range=share,
        file_locking=read.file_locking,
        dataset=layout.dataset,
        layout=layout,
    )


def _hold_out_chunks(
    data: TrainingData, share: tuple[int, int], held: HeldOutRequest, read: ReadRequest, stack
) -> None:
    """Narrow ``data.source`` to the rows not held out; open the held-out ones apart."""
    # Whole blocks of the rows per read asked for, else whole HDF5 chunks of the file
    # (not the read policy's blocks, which span many chunks).
    unit = read.chunk_rows or default_block_rows(data.layout)
    train_ranges, held_ranges, data.held_record = held_out_split(
        data.layout.n_rows, share, unit, held.fraction, held.seed
    )
    data.source = RowRanges(data.source, train_ranges)
    other = stack.enter_context(
        PatchFile(
            data.path,
            dtype=np.dtype(read.dtype).type,
            block_rows=data.block_rows,
            row_range=share,
            file_locking=read.file_locking,
            dataset=data.layout.dataset,
        )
    )
    data.held_out = RowRanges(other, held_ranges)
    rows, n_rows = data.held_record["rows"], data.layout.n_rows
    data.held_name = f"{data.path} ({rows / n_rows:.2%} of its {n_rows:,} rows, {held.fraction:g} asked)"


def held_out_split(
    n_rows: int, share: tuple[int, int], unit: int, fraction: float, seed: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int]], dict]:
    """(training ranges, held-out ranges, the model's record) of one share of rows.

    The held-out rows are round(fraction × n_rows) rows, whole blocks of ``unit`` rows of a
    seeded choice and the first rows of one more (:func:`held_out_ranges`); the record says
    which, and how many, so the split can be checked and made again.
    """
    held = held_out_ranges(n_rows, unit, fraction, seed)
    train_ranges, held_ranges = split_ranges(share, held)
    rows = sum(b - a for a, b in held)
    record = {"fraction": fraction, "rows": rows, "block_rows": unit, "ranges": [list(r) for r in held]}
    return train_ranges, held_ranges, record


def held_out_ranges(n_rows: int, unit: int, fraction: float, seed: int) -> list[tuple[int, int]]:
    """The sorted row ranges [start, stop) held out of training: round(fraction × n_rows) rows.

    The rows are cut into units of ``unit`` rows (the blocks training reads); a seeded
    permutation of the units is taken whole while the remaining count allows, and the first
    unit that does not fit whole gives its first rows.  So exactly the asked count is held
    (at least one row and all but one: both sets must hold rows), spread over the file, and
    at most one unit is split between the two sides.
    """
    if n_rows < 2:
        raise UsageError(
            f"validation_fraction needs at least two rows to hold one out, but the data has {n_rows}; "
            "give a validation file instead.",
            parameter="validation_fraction",
        )
    remaining = min(n_rows - 1, max(1, round(fraction * n_rows)))
    n_units = -(-n_rows // unit)
    # A generator of its own, seeded apart from the initial weights' (same seed, other stream).
    order = np.random.default_rng([seed, 0x5A11D]).permutation(n_units)
    ranges = []
    for index in order:
        start = int(index) * unit
        take = min(min(start + unit, n_rows) - start, remaining)
        ranges.append((start, start + take))
        remaining -= take
        if remaining == 0:
            break
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):  # adjacent units read as one range
        if merged and merged[-1][1] == first:
            merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


def split_ranges(
    share: tuple[int, int], held: list[tuple[int, int]]
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(training ranges, held-out ranges) of one rank's ``share`` [start, stop) of the rows.

    ``held`` are the sorted, disjoint held-out ranges of the whole file; the held-out side is
    their overlap with the share, the training side the rest of it, each as few ranges as
    possible (so the training stream of a file with nothing held out is the share itself).
    """
    start, stop = share
    train: list[tuple[int, int]] = []
    held_out: list[tuple[int, int]] = []
    cursor = start
    for first, last in held:
        first, last = max(first, start), min(last, stop)
        if first >= last:
            continue
        if first > cursor:
            train.append((cursor, first))
        held_out.append((first, last))
        cursor = last
    if cursor < stop:
        train.append((cursor, stop))
    return train, held_out


def _open_held_out_file(data: TrainingData, held: HeldOutRequest, read: ReadRequest, stack) -> None:
    """Open this process's share of the held-out file, read by the training data's policy."""
    with explained_lock_failure(held.file):
        layout = inspect_patch_file(held.file, held.dataset, file_locking=read.file_locking)
    if layout.n_features != data.layout.n_features:
        raise UsageError(
            f"{held.file}: {layout.dataset} holds rows of {layout.n_features} values but the training "
            f"data {data.path} holds rows of {data.layout.n_features}; give held-out data of the same "
            "width.",
            parameter="validation",
        )
    share = chunk_aligned_share(
        layout.n_rows, read.chunk_rows or default_block_rows(layout), read.rank, read.size
    )
    data.held_out = stack.enter_context(_open_share(held.file, layout, share, read))
    data.held_name = str(held.file)
    data.held_record = {"path": str(held.file.resolve()), "dataset": layout.dataset, "rows": layout.n_rows}


@contextlib.contextmanager
def explained_lock_failure(path: Path) -> Iterator[None]:
    """Say what to do when HDF5 cannot lock the file (NFS, Lustre, a writer holding it)."""
    try:
        yield
    except InputFileError as error:
        if "unable to lock file" not in str(error):
            raise
        raise InputFileError(
            f"{path}: HDF5 could not lock the file (a file system without locks, such as NFS or "
            f"Lustre, or another program writing it); pass {setting('file_locking', False)} or set "
            "HDF5_USE_FILE_LOCKING=FALSE if nothing writes it."
        ) from error
