"""Feature vectors as a patch file: the rows of a 2-D array written as they are.

Any (m, n) array of numbers, in a ``.npy`` file or an HDF5 dataset (``FILE.h5:DATASET``),
becomes a patch file with patch shape ``(n,)`` and normalisation ``none``, so any
feature vectors can be trained on.  Rows are copied block by block (the ``.npy`` is
memory-mapped), so memory does not grow with m.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import h5py
import numpy as np

from streamae._version import __version__
from streamae.errors import InputFileError, MissingInputError, UsageError
from streamae.io.atomic import atomic_output, check_output_path, check_written, hdf5_output
from streamae.io.hdf5 import PATCH_FORMAT, PATCHES_DATASET, open_hdf5
from streamae.text import printable

# Rows copied at a time: about this many bytes of float32.
BLOCK_BYTES = 8 << 20
DEFAULT_CHUNK_BYTES = 1 << 20


def split_source(source: str | os.PathLike) -> tuple[Path, str | None]:
    """(file, dataset) of ``FILE.npy`` or ``FILE.h5:DATASET`` (dataset None for .npy)."""
    text = os.fspath(source)
    if Path(text).exists():
        return Path(text), None
    head, sep, dataset = text.rpartition(":")
    if sep and head and Path(head).exists():
        return Path(head), dataset
    raise MissingInputError(f"{text}: no such file; give FILE.npy or FILE.h5:DATASET.")


@contextlib.contextmanager
def _open_rows(path: Path, dataset: str | None):
    """The (m, n) array-like of rows, open for the duration."""
    if path.suffix.lower() == ".npy":
        if dataset is not None:
            raise UsageError(f"{path}: a .npy file holds one array; give it without ':{dataset}'.")
        try:
            rows = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise InputFileError(
                f"{path}: not a readable .npy file ({error}); save it with numpy.save."
            ) from error
        yield rows
        return
    if dataset is None:
        raise UsageError(f"{path}: give the dataset to read as {path}:DATASET.")
    with open_hdf5(path) as handle:
        found = handle.get(dataset)
        if not isinstance(found, h5py.Dataset):
            raise InputFileError(
                f"{path}: has no dataset '{printable(dataset, 60)}'; give FILE.h5:DATASET of a 2-D array."
            )
        if found.shape is None:  # a null dataspace: no shape, no values
            raise InputFileError(
                f"{path}:{printable(dataset, 60)}: the dataset has no shape (a null dataspace); give "
                "FILE.h5:DATASET of a 2-D array."
            )
        if found.size and found.id.get_storage_size() == 0 and found.fillvalue == 0:
            raise InputFileError(
                f"{path}:{printable(dataset, 60)}: the dataset declares {found.shape} values but was "
                "never written; write the data first or give another dataset."
            )
        yield found


def extract_vectors(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    chunk_rows: int | None = None,
    force: bool = False,
    compression: str = "none",
) -> dict:
    """Write the rows of ``source`` (FILE.npy or FILE.h5:DATASET, (m, n)) to the patch file ``output``.

    Returns a summary dict (path, rows, features, seconds).  Refuses arrays that are not
    2-D numbers and rows holding NaN or Inf (naming the first such row).
    """
    started = time.perf_counter()
    path, dataset = split_source(source)
    check_output_path(output, force=force, inputs=(path,))
    with _open_rows(path, dataset) as rows:
        where = f"{path}" + (f":{dataset}" if dataset else "")
        if len(rows.shape) != 2 or rows.shape[0] < 1 or rows.shape[1] < 1:
            raise InputFileError(
                f"{where}: holds an array of shape {tuple(rows.shape)}; give an (m, n) array of vectors."
            )
        if rows.dtype.kind not in "fiub":
            raise InputFileError(
                f"{where}: holds {rows.dtype} values, not numbers; give an array of numbers."
            )
        m, n = (int(v) for v in rows.shape)
        chunk = min(m, int(chunk_rows) if chunk_rows else max(1, DEFAULT_CHUNK_BYTES // (4 * n)))
        block = max(chunk, BLOCK_BYTES // (4 * n) // chunk * chunk)
        buffer = np.empty((min(block, m), n), dtype=np.float32)
        with atomic_output(output, force=force, inputs=(path,)) as temporary:
            with hdf5_output(temporary, rdcc_nbytes=max(1 << 20, 2 * chunk * n * 4)) as handle:
                packing = {} if compression == "none" else {"compression": compression}
                out = handle.create_dataset(
                    PATCHES_DATASET, shape=(m, n), dtype=np.float32, chunks=(chunk, n), **packing
                )
                for start in range(0, m, buffer.shape[0]):
                    stop = min(m, start + buffer.shape[0])
                    piece = buffer[: stop - start]
                    piece[...] = rows[start:stop]
                    finite = np.isfinite(piece).all(axis=1)
                    if not finite.all():
                        bad = start + int(np.flatnonzero(~finite)[0])
                        raise InputFileError(f"{where}: row {bad} holds NaN or Inf; remove or repair it.")
                    out.write_direct(piece, dest_sel=np.s_[start:stop])
                    check_written(handle)
                handle.attrs["format"] = PATCH_FORMAT
                handle.attrs["patch_shape"] = np.array([n], dtype=np.int64)
                handle.attrs["normalization"] = json.dumps({"mode": "none"})
                handle.attrs["sources"] = json.dumps([os.fspath(source)])
                handle.attrs["sampling"] = json.dumps({"mode": "vectors"})
                handle.attrs["streamae_version"] = __version__
    return {"path": Path(output), "rows": m, "features": n, "seconds": time.perf_counter() - started}
