"""Weights out: a model's W1, b1, W2, b2 and hyperparameters as .npz, .mat or a folder of .npy.

The ``.mat`` file also holds ``theta`` in the MATLAB starter code's order,
``[W1(:); W2(:); b1(:); b2(:)]`` with MATLAB's column-major ``(:)``, as a (p, 1) column,
so the notes' own functions (``sparseAutoencoderCost``, ``display_network``) take it;
and the starter code's names ``visibleSize``, ``hiddenSize``, ``sparsityParam``,
``beta`` and ``lambda``.  A model trained on normalised data carries the normalisation's
arrays along (``zca_mean``, ``zca_matrix``, ...), so new data can be put in the same space.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from streamae.errors import UsageError
from streamae.io.atomic import atomic_folder_output, atomic_output, check_output_path
from streamae.io.modelfile import Model, load_model
from streamae.options import EXPORT_FORMATS, ExportOptions

FORMATS = EXPORT_FORMATS
# MATLAB v5 .mat files store each variable's size in 32 bits: scipy refuses past 2**32
# bytes, and MATLAB itself past 2**31 for one array; refuse before writing anything.
MAT_V5_LIMIT = 2**31


def matlab_theta(model: Model) -> np.ndarray:
    """theta (p, 1) float64 as the starter code packs it: [W1(:); W2(:); b1(:); b2(:)], column-major."""
    parts = [
        np.asarray(getattr(model, name), dtype=np.float64).ravel(order="F")
        for name in ("W1", "W2", "b1", "b2")
    ]
    return np.concatenate(parts)[:, None]


def export_arrays(model: Model) -> dict[str, np.ndarray]:
    """The arrays every format holds: weights, hyperparameters, patch shape, normalisation."""
    arrays = {name: np.asarray(getattr(model, name), dtype=np.float64) for name in ("W1", "b1", "W2", "b2")}
    arrays.update(
        hidden=np.asarray(model.n_hidden),
        inputs=np.asarray(model.n_visible),
        rho=np.asarray(model.hyper.rho),
        beta=np.asarray(model.hyper.beta),
        lam=np.asarray(model.hyper.lam),
        decoder=np.asarray(model.hyper.decoder),
        iterations=np.asarray(model.iterations),
    )
    if model.patch_shape is not None:
        arrays["patch_shape"] = np.asarray(model.patch_shape, dtype=np.int64)
    if model.normalization is not None:
        arrays["normalization"] = np.asarray(json.dumps(model.normalization))
    for name, values in model.normalization_arrays.items():
        arrays[name.replace("/", "_")] = np.asarray(values, dtype=np.float64)
    return arrays


def format_of(output: str | os.PathLike, fmt: str | None) -> str:
    """The export format: ``fmt`` if given, else from the name (.npz, .mat; anything else a folder)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise UsageError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}.", parameter="format")
        return fmt
    suffix = Path(output).suffix.lower()
    return {".npz": "npz", ".mat": "mat"}.get(suffix, "npy-dir")


def export_weights(
    model: Model | str | os.PathLike,
    output: str | os.PathLike,
    options: ExportOptions | None = None,
    **values: object,
) -> Path:
    """Write ``model`` (a :class:`Model` or a model file) to ``output``; returns the path.

    ``format`` is ``npz``, ``mat`` or ``npy-dir`` (a folder of ``<name>.npy`` plus
    ``hyperparameters.json``); default: from the name.  Written atomically; an existing
    output is replaced only with ``force``.  Options as keywords or an
    :class:`~streamae.options.ExportOptions` (see :data:`streamae.options.EXPORT`).
    """
    o = ExportOptions.build(options, values)
    format, force = o.format, o.force  # noqa: A001 - the parameter's natural name
    inputs = () if isinstance(model, Model) else (model,)
    loaded = model if isinstance(model, Model) else load_model(model)
    fmt = format_of(output, format)
    arrays = export_arrays(loaded)
    if fmt == "npy-dir":
        return _write_folder(Path(output), arrays, force=force, inputs=inputs)
    check_output_path(output, force=force, inputs=inputs)
    if fmt == "mat":
        sizes = {name: values.nbytes for name, values in arrays.items()}
        sizes["theta"] = sum(sizes[name] for name in ("W1", "W2", "b1", "b2"))
        check_matlab_sizes(output, sizes)
    with atomic_output(output, force=force, inputs=inputs) as temporary, open(temporary, "wb") as handle:
        if fmt == "npz":
            np.savez(handle, **arrays)
        else:
            from scipy.io import savemat

            # MATLAB's names for the starter code; b1 and b2 as columns, as it keeps them.
            matlab = dict(arrays)
            matlab.pop("lam")
            matlab.update(
                theta=matlab_theta(loaded),
                b1=loaded.b1[:, None],
                b2=loaded.b2[:, None],
                visibleSize=float(loaded.n_visible),
                hiddenSize=float(loaded.n_hidden),
                sparsityParam=loaded.hyper.rho,
                beta=loaded.hyper.beta,
                **{"lambda": loaded.hyper.lam},
            )
            savemat(handle, matlab, do_compression=False, oned_as="column")
    return Path(output)


def _write_folder(output: Path, arrays: dict[str, np.ndarray], *, force: bool, inputs: tuple = ()) -> Path:
    """A folder of .npy files plus hyperparameters.json, built beside ``output`` and swapped in.

    :func:`~streamae.io.atomic.atomic_folder_output` keeps the folder rules: never the input
    or a folder holding it, never a folder of other files, nothing left behind.
    """
    with atomic_folder_output(output, force=force, inputs=inputs) as folder:
        hyper = {}
        for name, values in arrays.items():
            if values.ndim == 0:
                hyper[name] = values.item()
            else:
                np.save(folder / f"{name}.npy", values)
        (folder / "hyperparameters.json").write_text(json.dumps(hyper, indent=2) + "\n")
    return output


def check_matlab_sizes(output: str | os.PathLike, sizes: dict[str, int]) -> None:
    """Refuse a .mat export with a variable (name -> bytes) past MATLAB v5's limit."""
    for name, size in sizes.items():
        if size >= MAT_V5_LIMIT:
            raise UsageError(
                f"{output}: the variable {name} takes {size:,} bytes, more than "
                f"a MATLAB v5 .mat file holds ({MAT_V5_LIMIT:,}); write .npz or a folder instead.",
                parameter="format",
            )
