"""Weights out: a model's W1, b1, W2, b2 and hyperparameters as .npz, .mat or a folder of .npy.

Every format holds the same names: ``W1`` (s, n), ``b1`` (s,), ``W2`` (n, s), ``b2`` (n,);
the hyperparameters ``hidden``, ``inputs``, ``rho``, ``beta``, ``lambda``, ``decoder``,
``activation`` (sigmoid or tanh: a tanh model's a2 = tanh(W1 x + b1)) and ``iterations``;
``patch_shape`` (h, w, c) when the rows are patches; the normalisation (``normalization``,
its JSON description, and its arrays ``zca_mean``, ``zca_matrix``, ``zscore_mean``,
``zscore_std``).  The folder keeps the arrays as ``<name>.npy`` and the scalars in
``hyperparameters.json``.

Two layouts of the n inputs (see docs/export.md):

- ``.npz`` and the folder: NumPy's C order of the patch, (h, w, c) with the colour
  innermost, exactly as the patch file's rows and the model file's W1 columns.
- ``.mat``: the notes' layout, so the MATLAB code takes it as it is: each channel's pixels in
  MATLAB's column-major order (``patch(:)``), the channels one after another (planar
  R, G, B, as the linear-decoder exercise stacks them).  ``W1``'s columns, ``W2``'s rows,
  ``b2`` and the normalisation's arrays are permuted alike, and ``theta`` is packed as the
  starter code packs it, ``[W1(:); W2(:); b1(:); b2(:)]`` with MATLAB's column-major
  ``(:)``, as a (p, 1) column, so ``sparseAutoencoderCost``, ``display_network`` and
  ``displayColorNetwork`` take it.  The starter code's own names ``visibleSize``,
  ``hiddenSize`` and ``sparsityParam`` are there too, as aliases of ``inputs``, ``hidden``
  and ``rho``.  A NumPy port that reshapes theta in C order must reshape with
  ``order="F"`` (and C-order patches must be permuted), or it evaluates another model.
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


def notes_order(patch_shape: tuple[int, ...] | None, n: int) -> np.ndarray:
    """perm (n,): the notes' input i is the C-order input ``perm[i]``.

    The notes' order is planar channels, each channel's (h, w) pixels column-major.
    Without a patch shape (rows that are not patches) the order is left as it is.
    """
    if patch_shape is None or len(patch_shape) > 3 or int(np.prod(patch_shape)) != n:
        return np.arange(n)
    h, w, c = tuple(patch_shape) + (1,) * (3 - len(patch_shape))
    # C-order index of (row, column, channel); walk channel, then column, then row fastest.
    return np.arange(n).reshape(h, w, c).transpose(2, 1, 0).ravel()


def matlab_theta(model: Model) -> np.ndarray:
    """theta (p, 1) float64 as the starter code packs it, ``[W1(:); W2(:); b1(:); b2(:)]``.

    W1 and W2 in the notes' input order (:func:`notes_order`), then MATLAB's column-major ``(:)``.
    """
    arrays = matlab_weights(model)
    parts = [arrays[name].ravel(order="F") for name in ("W1", "W2", "b1", "b2")]
    return np.concatenate(parts)[:, None]


def matlab_weights(model: Model) -> dict[str, np.ndarray]:
    """W1 (s, n), W2 (n, s), b1 (s,), b2 (n,) float64 with the inputs in the notes' order."""
    perm = notes_order(model.patch_shape, model.n_visible)
    return {
        "W1": np.asarray(model.W1, dtype=np.float64)[:, perm],
        "W2": np.asarray(model.W2, dtype=np.float64)[perm, :],
        "b1": np.asarray(model.b1, dtype=np.float64),
        "b2": np.asarray(model.b2, dtype=np.float64)[perm],
    }


def hyperparameters(model: Model) -> dict[str, object]:
    """The scalars every format holds, under the one set of names (``lambda``, not ``lam``).

    Every option that model files store as an attribute, under that attribute's name (from
    :data:`streamae.options.TRAIN`, so a new hyperparameter is exported with no change
    here), plus ``inputs`` and ``iterations``.
    """
    from streamae.options import TRAIN

    values: dict[str, object] = {"hidden": int(model.n_hidden), "inputs": int(model.n_visible)}
    for option in TRAIN:
        if option.stored_path[:1] == ("attrs",) and option.name != "hidden":
            value = getattr(model.hyper, option.name)
            values[option.stored_path[1]] = value if isinstance(value, str) else float(value)
    values["iterations"] = int(model.iterations)
    return values


def export_arrays(model: Model) -> dict[str, np.ndarray]:
    """The arrays every format holds, in NumPy's C order: weights, hyperparameters, normalisation."""
    arrays = {name: np.asarray(getattr(model, name), dtype=np.float64) for name in ("W1", "b1", "W2", "b2")}
    arrays.update({name: np.asarray(value) for name, value in hyperparameters(model).items()})
    if model.patch_shape is not None:
        arrays["patch_shape"] = np.asarray(model.patch_shape, dtype=np.int64)
    if model.normalization is not None:
        arrays["normalization"] = np.asarray(json.dumps(model.normalization))
    for name, values in model.normalization_arrays.items():
        arrays[name.replace("/", "_")] = np.asarray(values, dtype=np.float64)
    return arrays


def matlab_arrays(model: Model) -> dict[str, object]:
    """The ``.mat``'s arrays: :func:`export_arrays`' in the notes' layout, theta, the starter code's names.

    b1 and b2 are columns, as the starter code keeps them; a normalisation array over the
    inputs (n,) or (n, n) is permuted like W1's columns.
    """
    perm = notes_order(model.patch_shape, model.n_visible)
    matlab: dict[str, object] = dict(export_arrays(model))
    weights = matlab_weights(model)
    matlab.update(W1=weights["W1"], W2=weights["W2"], b1=weights["b1"][:, None], b2=weights["b2"][:, None])
    for name, values in model.normalization_arrays.items():
        values = np.asarray(values, dtype=np.float64)
        matlab[name.replace("/", "_")] = values[np.ix_(perm, perm)] if values.ndim == 2 else values[perm]
    matlab.update(
        theta=matlab_theta(model),
        visibleSize=float(model.n_visible),
        hiddenSize=float(model.n_hidden),
        sparsityParam=float(model.hyper.rho),
    )
    return matlab


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

            savemat(handle, matlab_arrays(loaded), do_compression=False, oned_as="column")
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
