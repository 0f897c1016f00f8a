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
from streamae.io.hdf5 import decode_attribute, open_hdf5

ARRAYS = {"zscore": ("zscore/mean", "zscore/std"), "zca": ("zca/mean", "zca/matrix")}


def read_normalization(
    path: str | os.PathLike, *, file_locking: bool | None = None
) -> tuple[dict | None, dict[str, np.ndarray]]:
    """(description, arrays by dataset name) of the patch file ``path``; (None, {}) when unrecorded.

    Raises :class:`InputFileError` when the description names arrays the file lacks.
    ``file_locking=False`` opens the file without HDF5 locks (NFS, Lustre).
    """
    path = Path(path)
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
            arrays[name] = np.asarray(dataset[()], dtype=np.float64)
    return description, arrays
