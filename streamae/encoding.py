"""Features for new data: stream every row of a patch file through a trained encoder.

``encode`` reads the patch file block by block (rows per read from the read
policy, io/readpolicy.py), computes a2 = f(x W1ᵀ + b1), f the model's own hidden
activation (sigmoid, or tanh for a model trained with it), with a row-major kernel of its own,
:func:`~streamae.compute.kernels.hidden_activation` (through ``np.exp``/``np.tanh``; training's
:func:`~streamae.compute.kernels.hidden_forward` works on a2ᵀ with the vectorised ``exp32``,
so the two agree to rounding, not bit for bit), and writes each block into an (m, s)
dataset chunked like the input.  Every buffer is allocated once for the
block size, so memory does not depend on m.  With ``reconstruct`` the decoder's output
a3 (m, n) is written as well.

The features file: ``/features`` (m, s), optionally ``/reconstruction`` (m, n), both in
the compute dtype; ``/mean_activation`` (s,) float64, the mean of a2 over these rows;
attributes ``format = "streamae.features/1"``, ``model`` and ``data`` (JSON
fingerprints of the two inputs), ``patch_shape``, ``dtype`` and ``streamae_version``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamae._version import __version__
from streamae.compute.blocked import Encoder
from streamae.errors import DataError, UsageError
from streamae.io.atomic import atomic_output, check_output_path, check_written, hdf5_output
from streamae.io.hdf5 import FEATURES_FORMAT
from streamae.io.modelfile import Model, load_model
from streamae.io.patchfile import MIN_CHUNK_CACHE_BYTES, default_block_rows, inspect_patch_file
from streamae.io.readpolicy import open_patches
from streamae.options import DEFAULT_DATASET, ENCODE, EncodeOptions, dataset_path, setting
from streamae.runtime.process import configure
from streamae.text import printable

FEATURES_DATASET = "features"
RECONSTRUCTION_DATASET = "reconstruction"
MEAN_ACTIVATION_DATASET = "mean_activation"


@dataclass(frozen=True)
class EncodeResult:
    """What :func:`encode` wrote: the path, m rows, s features, ρ̂ of the data (s,).

    ``reconstruction`` is the mean ½‖a3 − x‖² over the rows when a3 was written, else None.
    """

    path: Path
    n_rows: int
    n_hidden: int
    mean_activation: np.ndarray
    reconstruction: float | None


def model_fingerprint(path: Path | None, model: Model) -> dict:
    """The model attributes a features file records: path (None for a model in memory), sizes,
    decoder, activation, iterations."""
    return {
        "path": None if path is None else str(path.resolve()),
        "hidden": model.n_hidden,
        "inputs": model.n_visible,
        "decoder": model.hyper.decoder,
        "activation": model.hyper.activation,
        "iterations": model.iterations,
    }


def encode(
    model: Model | str | os.PathLike,
    data: np.ndarray | str | os.PathLike,
    output: str | os.PathLike | None = None,
    options: EncodeOptions | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    **values: object,
) -> EncodeResult | np.ndarray:
    """The hidden activations a2 of every row of ``data`` through ``model``.

    ``model`` is a :class:`Model` or a model file.  ``data`` is an (m, n) array, whose
    a2 (m, s) is returned (computed block by block, see :meth:`Model.encode`; dtype
    default: the array's), or a patch file, whose a2 (m, s) is written to the features
    file ``output`` and an :class:`EncodeResult` returned.

    The hidden activation is the model's own (its file says sigmoid or tanh); ``activation``,
    when given, must match it (features of a tanh model put through a sigmoid mean nothing).

    ``options`` (a frozen :class:`~streamae.options.EncodeOptions`) and/or keyword
    arguments give ``reconstruct`` (also write a3 as /reconstruction, or return a3 for an
    array), ``block_rows`` (rows read and encoded at a time; default: one chunk of the
    input), ``dtype`` and ``force``, checked against :data:`streamae.options.ENCODE`.
    ``progress(done, total)`` is called after each block.  Everything is checked
    before any work: the model, the patch file, that their input sizes agree and that
    ``output`` may be written.  ``dataset`` names the 2-D dataset of the patch file to
    encode (default ``/patches``).
    """
    configure()  # the process set up for the kernels, unless the caller did it (idempotent)
    o = EncodeOptions.build(options, values)
    model_path = None if isinstance(model, Model) else Path(model)
    model = model if model_path is None else load_model(model_path)
    model_name = "the model" if model_path is None else str(model_path)
    _check_activation(o.activation, model, model_name)
    if not isinstance(data, str | os.PathLike):
        return _encode_array(model, data, output, o, chosen_dtype="dtype" in values)
    if output is None:
        raise UsageError(f"{data}: give the features file to write (output).", parameter="output")
    data_path, dataset = Path(data), dataset_path(o.dataset)
    layout = _checked_layout(model, model_name, data_path, dataset)
    inputs = (data_path,) if model_path is None else (model_path, data_path)
    check_output_path(output, force=o.force, inputs=inputs)
    return _write_features(model_path, model, data_path, dataset, layout, output, o, progress)


def _check_activation(activation: str | None, model: Model, model_name: str) -> None:
    """Refuse an activation other than the model's own."""
    if activation is not None and activation != model.hyper.activation:
        raise UsageError(
            f"{model_name} was trained with {model.hyper.activation} hidden units, not {activation}; "
            "leave the activation out (the model's is used) or give "
            f"{setting('activation', model.hyper.activation)}.",
            parameter="activation",
        )


def _encode_array(model: Model, data, output, o: EncodeOptions, *, chosen_dtype: bool) -> np.ndarray:
    """a2 (m, s) (or a3 (m, n) with reconstruct) of an (m, n) array, in the array's dtype unless
    a dtype was chosen (a keyword, or an options object whose dtype is not the default), so
    ``encode(m, X)`` and ``encode(m, X, options=EncodeOptions())`` agree."""
    if output is not None:
        raise UsageError(
            "output is written only for a patch file; for an array the features are returned.",
            parameter="output",
        )
    chosen = chosen_dtype or o.dtype != ENCODE["dtype"].default
    method = model.reconstruct if o.reconstruct else model.encode
    return method(np.asarray(data), block_rows=o.block_rows, dtype=o.dtype if chosen else None)


def _checked_layout(model: Model, model_name: str, data_path: Path, dataset: str):
    """The patch file's layout, checked against the model: sizes, patch shape, normalisation."""
    layout = inspect_patch_file(data_path, dataset)
    if layout.n_features != model.n_visible:
        raise UsageError(
            f"{model_name} takes inputs of {model.n_visible} values but {data_path} holds "
            f"patches of {layout.n_features}; encode data extracted with the model's patch "
            "shape."
        )
    if model.patch_shape and layout.patch_shape and _as_3d(model.patch_shape) != _as_3d(layout.patch_shape):
        raise UsageError(
            f"{model_name} was trained on {'x'.join(map(str, model.patch_shape))} patches but "
            f"{data_path} holds {'x'.join(map(str, layout.patch_shape))} patches of the same size; "
            "encode data extracted with the model's patch shape."
        )
    check_same_normalization(model, model_name, data_path)
    return layout


def check_same_normalization(model: Model, model_name: str, data_path: Path) -> None:
    """Refuse data normalised another way than the model's training data (a mode that differs,
    or zscore/zca statistics that differ): its features would mean nothing."""
    from streamae.io.normalization import read_normalization

    trained = model.normalization
    if not isinstance(trained, dict) or not isinstance(trained.get("mode"), str):
        return  # a model that records none: nothing to compare
    described, arrays = read_normalization(data_path, n_features=model.n_visible)
    if described is None:
        return
    fix = f"extract it with {setting('normalize_like', 'TRAINING_PATCHES')} (the model's training data)"
    if described["mode"] != trained["mode"]:
        raise UsageError(
            f"{data_path}: its patches are normalised with {printable(described['mode'], 20)} but "
            f"{model_name} was trained on {printable(trained['mode'], 20)} patches; {fix}."
        )
    for name, values in arrays.items():
        mine = model.normalization_arrays.get(name)
        if mine is not None and (np.shape(mine) != np.shape(values) or not np.allclose(mine, values)):
            raise UsageError(
                f"{data_path}: its /{name} differs from the one {model_name} was trained with, so the "
                f"patches are in another space; {fix}."
            )


def _write_features(model_path, model, data_path, dataset, layout, output, o, progress) -> EncodeResult:
    """Stream every block of the patch file through the encoder into a new features file."""
    compute = np.dtype(o.dtype)
    m, n, s = layout.n_rows, layout.n_features, model.n_hidden
    inputs = (data_path,) if model_path is None else (model_path, data_path)
    # The one read policy (io/readpolicy.py): rows per read, prefetch, chunk cache.
    with open_patches(data_path, dtype=compute, block_rows=o.block_rows, dataset=dataset) as source:
        rows = min(source.block_rows, m)
        # Chunk the outputs along rows like the input, so row blocks map onto the same chunks.
        chunk_rows = min(layout.chunk_rows or default_block_rows(layout), m)
        chunk_bytes = chunk_rows * max(n, s) * compute.itemsize
        encoder = Encoder(model, rows, compute)
        with atomic_output(output, force=o.force, inputs=inputs) as temporary:
            # A chunk cache holding two output chunks, so writes of blocks that straddle
            # chunks do not flush half-filled chunks.
            cache = max(MIN_CHUNK_CACHE_BYTES, 2 * chunk_bytes * (2 if o.reconstruct else 1))
            with hdf5_output(temporary, rdcc_nbytes=cache, rdcc_nslots=1009) as handle:
                features = handle.create_dataset(
                    FEATURES_DATASET, shape=(m, s), dtype=compute, chunks=(chunk_rows, s)
                )
                outputs = None
                if o.reconstruct:
                    outputs = handle.create_dataset(
                        RECONSTRUCTION_DATASET, shape=(m, n), dtype=compute, chunks=(chunk_rows, n)
                    )
                for first, x in source.blocks():
                    check_finite(x, first, data_path, dataset)
                    a2 = encoder.hidden_layer(x)
                    features.write_direct(a2, dest_sel=np.s_[first : first + x.shape[0]])
                    if outputs is not None:
                        a3 = encoder.output_layer(a2, x)
                        outputs.write_direct(a3, dest_sel=np.s_[first : first + x.shape[0]])
                    check_written(handle)  # a full disk ends the run now, not after the last block
                    if progress is not None:
                        progress(first + x.shape[0], m)
                mean_activation = encoder.sum_a2 / m
                handle.create_dataset(MEAN_ACTIVATION_DATASET, data=mean_activation)
                reconstruction = encoder.squared_error / m if o.reconstruct else None
                _write_attributes(handle, model_path, model, layout, compute, reconstruction)
    return EncodeResult(
        path=Path(output),
        n_rows=m,
        n_hidden=s,
        mean_activation=mean_activation,
        reconstruction=reconstruction,
    )


def check_finite(x: np.ndarray, first: int, path: Path, dataset: str = DEFAULT_DATASET) -> None:
    """Refuse a block holding NaN or ±Inf, naming the first bad row of the file.

    Features of a non-finite row are NaN (or saturated without a trace), so a features
    file holding them would be silently wrong.  One float64 sum of the block is the cheap
    test (NaN and ±Inf propagate; float32 values cannot overflow it); only a block that
    fails it is searched for the row.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        total = x.sum(dtype=np.float64)
    if np.isfinite(total):
        return
    rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if rows.size == 0:
        return  # finite values whose sum overflowed (near 1e307): nothing to refuse
    bad = int(rows[0])
    raise DataError(
        f"{path}: {printable(dataset, 80)} row {first + bad} holds NaN or Inf; remove or repair that row "
        "(or extract the patches again)."
    )


def _as_3d(shape: tuple[int, ...]) -> tuple[int, ...]:
    """(h, w) as (h, w, 1), so that 8x8 and 8x8x1 compare equal."""
    return tuple(shape) + (1,) * (3 - len(shape))


def _write_attributes(handle, model_path, model, layout, compute, reconstruction) -> None:
    attrs = handle.attrs
    attrs["format"] = FEATURES_FORMAT
    attrs["streamae_version"] = __version__
    attrs["model"] = json.dumps(model_fingerprint(model_path, model))
    attrs["data"] = json.dumps(layout.fingerprint)
    attrs["dtype"] = str(compute)
    shape = layout.patch_shape or model.patch_shape
    if shape is not None:
        attrs["patch_shape"] = np.asarray(shape, dtype=np.int64)
    if reconstruction is not None:
        attrs["reconstruction"] = float(reconstruction)
