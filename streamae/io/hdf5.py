"""HDF5 plumbing every reader shares: open read-only with one-sentence errors, list
datasets, decode attributes, and the format strings that name streamae's files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from streamae.errors import InputFileError
from streamae.io.inputs import check_regular_input
from streamae.text import printable

PATCHES_DATASET = "patches"
PATCH_FORMAT = "streamae.patches/1"
MODEL_FORMAT = "streamae.model/1"
FEATURES_FORMAT = "streamae.features/1"


def open_hdf5(path: str | os.PathLike, *, file_locking: bool | None = None, **kwargs) -> h5py.File:
    """Open an existing HDF5 file read-only, turning failures into one-sentence errors.

    ``file_locking=False`` opens without HDF5's file locks (NFS, Lustre); ``None`` keeps
    the library default, which also honours ``HDF5_USE_FILE_LOCKING``.
    """
    # Missing, a folder, a FIFO (which would block h5py forever), a device, a socket or a
    # name too long: one sentence each, before anything opens it.
    path = check_regular_input(path, "an HDF5 file")
    if not os.access(path, os.R_OK):
        raise InputFileError(f"{path}: the file is not readable; check its permissions.")
    options = dict(kwargs)
    if file_locking is not None:
        options["locking"] = file_locking
    try:
        return h5py.File(path, "r", **options)
    except OSError as error:
        if path.stat().st_size == 0:
            raise InputFileError(
                f"{path}: the file is empty, not an HDF5 file; give a patch file written by "
                "`streamae extract`."
            ) from error
        if not h5py.is_hdf5(path):
            raise InputFileError(
                f"{path}: not an HDF5 file; give a patch file written by `streamae extract`."
            ) from error
        raise InputFileError(
            f"{path}: the HDF5 file cannot be opened ({error}); it may be truncated or "
            "corrupt; extract it again."
        ) from error


def list_datasets(group: h5py.Group) -> list[str]:
    """Names (full paths) of every dataset below ``group``, sorted."""
    names: list[str] = []

    def visit(name: str, item: object) -> None:
        if isinstance(item, h5py.Dataset):
            names.append(group.name.rstrip("/") + "/" + name)  # full paths: /g/x below /g

    group.visititems(visit)
    return sorted(names)


def decode_attribute(value: object) -> object:
    """An HDF5 attribute as a plain Python value (bytes and numpy scalars unwrapped)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def json_attribute(value: object, default: object = None) -> object:
    """Parse a JSON-valued attribute (such as ``normalization``); ``default`` if not JSON."""
    text = decode_attribute(value)
    if not isinstance(text, str):
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def check_declared_size(dataset: h5py.Dataset, path: Path, remedy: str = "write it again") -> None:
    """Refuse, before reading, a dataset whose declared size its file cannot back.

    A 17 KB file may declare a 1 GiB dataset never written (HDF5 then reads zeros, after
    allocating it all): refused (``remedy`` says what to do) when an uncompressed dataset
    stores fewer bytes than it declares (external and virtual data are stored elsewhere and
    read through their own checks), or when reading it as float64 would take more memory
    than is available.
    """
    if dataset.shape is None:
        raise InputFileError(
            f"{path}: {printable(dataset.name, 80)} has no shape (a null dataspace); the file is "
            f"damaged, {remedy}."
        )
    declared = int(dataset.size) * int(dataset.dtype.itemsize)
    stored = int(dataset.id.get_storage_size())
    elsewhere = dataset.external is not None or dataset.is_virtual
    if declared and dataset.compression is None and not elsewhere and stored < declared:
        raise InputFileError(
            f"{path}: {printable(dataset.name, 80)} declares {declared:,} bytes but the file stores "
            f"{stored:,}; the file is damaged or was never completely written, {remedy}."
        )
    available = _available_memory()
    if available is not None and int(dataset.size) * 8 > available:
        raise InputFileError(
            f"{path}: {printable(dataset.name, 80)} declares {dataset.shape} values, more than the "
            f"{available:,} bytes of memory available; {remedy}."
        )


def _available_memory() -> int | None:
    """Bytes of memory available now (MemAvailable), or None where it cannot be told."""
    from streamae.runtime.memory import available_memory

    try:
        return available_memory()
    except (ValueError, OSError):
        return None
