"""The normalisation stored in a patch file: its JSON description and its arrays.

``streamae extract`` writes the ``normalization`` attribute (the mode and its
parameters) and, for zscore and zca, the arrays ``/zscore/mean``, ``/zscore/std``,
``/zca/mean`` and ``/zca/matrix``.  Training copies them into the model, and
``extract`` reuses them to put new data in the same space (``normalize_like``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from streamae.errors import InputFileError
from streamae.io.hdf5 import check_declared_size, decode_attribute, open_hdf5
from streamae.text import printable

ARRAYS = {"zscore": ("zscore/mean", "zscore/std"), "zca": ("zca/mean", "zca/matrix")}


def expected_shapes(mode: str, n: int) -> dict[str, tuple[int, ...]]:
    """The shape of each array a ``mode`` stores, for patches of ``n`` values."""
    if mode == "zscore":
        return {"zscore/mean": (n,), "zscore/std": (n,)}
    if mode == "zca":
        return {"zca/mean": (n,), "zca/matrix": (n, n)}
    return {}


def validate_normalization(path: Path, description: dict, arrays: dict[str, np.ndarray], n: int) -> None:
    """Refuse a stored normalisation that cannot be applied to patches of ``n`` values.

    Shapes against ``n``, every value finite, σ (ufldl) and the z-score std not negative, the
    ZCA epsilon positive: a damaged reference gives one sentence, never NaN patches or an
    out-of-bounds read.
    """
    mode = description["mode"]
    where = f"{printable(path)}: the stored {printable(mode, 20)} normalisation"
    fix = "extract that file again, or give another one"
    for name, shape in expected_shapes(mode, n).items():
        values = arrays.get(name)
        if values is None or values.shape != shape:
            found = "nothing" if values is None else f"shape {values.shape}"
            raise InputFileError(f"{where} has {found} in /{name}, not {shape}; {fix}.")
        if not np.isfinite(values).all():
            raise InputFileError(f"{where} holds NaN or Inf in /{name}; {fix}.")
    if mode == "zscore" and (arrays["zscore/std"] < 0).any():
        raise InputFileError(f"{where} holds a negative /zscore/std; {fix}.")
    numbers = {"sigma": description.get("sigma")} if mode == "ufldl" else {}
    if mode == "zca" and description.get("epsilon") is not None:
        numbers["epsilon"] = description.get("epsilon")
    for key, value in numbers.items():
        if not isinstance(value, int | float) or not np.isfinite(value) or value < 0:
            raise InputFileError(f"{where} has {key} = {printable(value, 30)}, not a number ≥ 0; {fix}.")


def read_normalization(
    path: str | os.PathLike, *, file_locking: bool | None = None, n_features: int | None = None
) -> tuple[dict | None, dict[str, np.ndarray]]:
    """(description, arrays by dataset name) of the patch file ``path``; (None, {}) when unrecorded.

    Raises :class:`InputFileError` when the description names arrays the file lacks; with
    ``n_features`` also when an array's declared shape does not fit patches of that many
    values (checked before reading it) or the values cannot be applied
    (:func:`validate_normalization`).  ``file_locking=False`` opens the file without HDF5
    locks (NFS, Lustre).
    """
    path = Path(path)
    description, arrays = _read(path, file_locking, n_features)
    if description is not None and n_features is not None:
        validate_normalization(path, description, arrays, n_features)
    return description, arrays


def _read(path: Path, file_locking: bool | None, n: int | None) -> tuple[dict | None, dict[str, np.ndarray]]:
    with open_hdf5(path, file_locking=file_locking) as handle:
        text = decode_attribute(handle.attrs.get("normalization"))
        try:
            description = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            description = None
        if not isinstance(description, dict) or not isinstance(description.get("mode"), str):
            return None, {}
        arrays = {}
        for name in ARRAYS.get(description["mode"], ()):
            dataset = handle.get(name)
            if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind not in "fiu":
                raise InputFileError(
                    f"{path}: the normalization attribute names /{name} but the file has no such "
                    "array of numbers; extract the patches again."
                )
            wanted = expected_shapes(description["mode"], n).get(name) if n is not None else None
            if wanted is not None and dataset.shape != wanted:
                raise InputFileError(
                    f"{printable(path)}: /{name} has shape {dataset.shape}, not {wanted} for patches of "
                    f"{n} values; extract that file again, or give another one."
                )
            check_declared_size(dataset, path, "extract that file again")
            arrays[name] = np.asarray(dataset[()], dtype=np.float64)
    return description, arrays
