"""Model files: the trained weights, their history and the optimizer's state, in HDF5.

Layout (DESIGN.md): ``/W1`` (s, n), ``/b1`` (s,), ``/W2`` (n, s), ``/b2`` (n,) float64;
attributes ``format``, the hyperparameters (``activation`` among them: sigmoid or tanh; a
file without it is sigmoid), ``patch_shape``, the data fingerprint,
``iterations``; ``/history/<name>`` one entry per iteration; ``/rho_hat`` (s,);
``/optimizer/*`` the L-BFGS state (checkpoints, or when asked to keep it); the
``normalization`` attribute (JSON, as in the patch file) and its arrays (``/zca/mean``,
``/zca/matrix``, ``/zscore/mean``, ``/zscore/std``) copied from the training data.  Files
are written atomically.  Files written before a field existed load without it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from streamae._version import __version__
from streamae.compute.parameters import Hyperparameters, pack
from streamae.errors import DataError, InputFileError, StorageError, UsageError
from streamae.io.atomic import OutputClaim, atomic_output, hdf5_output
from streamae.io.hdf5 import (
    MODEL_FORMAT,
    PATCH_FORMAT,
    check_declared_size,
    decode_attribute,
    list_datasets,
    open_hdf5,
)
from streamae.options import TRAIN

HISTORY_FIELDS = (
    "cost",
    "reconstruction",
    "weight_decay",
    "sparsity",
    "grad_norm",
    "seconds",
    "evaluations",
    "stage",
    "sample_rows",
)
# Added with the warm start: files written before lack them, and read as one stage on
# all the rows (what their runs were).
STAGE_FIELDS = ("stage", "sample_rows")
WEIGHT_DATASETS = ("W1", "b1", "W2", "b2")
# The normalisation arrays a patch file may hold, copied into the model under the same names.
NORMALIZATION_DATASETS = ("zca/mean", "zca/matrix", "zscore/mean", "zscore/std")
# /validation/<name>: one entry per held-out evaluation (the iteration it followed first).
VALIDATION_FIELDS = ("iteration", "cost", "reconstruction", "weight_decay", "sparsity", "rho_hat_mean")


@dataclass
class Model:
    """A trained (or checkpointed) sparse autoencoder.

    W1 (s, n), W2 (n, s), b1 (s,), b2 (n,) float64; ``history`` maps each of
    ``HISTORY_FIELDS`` to a (iterations,) array; ``rho_hat`` (s,) the mean hidden
    activation at the final parameters (in (−1, 1) for tanh units); ``optimizer`` the L-BFGS
    state arrays and scalars (see :mod:`streamae.compute.lbfgs`), or None.  ``validation``
    maps each of ``VALIDATION_FIELDS`` to one entry per held-out evaluation (empty without one).
    ``normalization`` is the training data's normalisation (the patch file's JSON
    description) and ``normalization_arrays`` its arrays by dataset name (``"zca/matrix"``
    (n, n), ...).

    ``encode(X)`` and ``reconstruct(X)`` take any number of rows (m, n) and stream them in
    blocks; ``save(path)`` writes the model file.
    """

    W1: np.ndarray
    W2: np.ndarray
    b1: np.ndarray
    b2: np.ndarray
    hyper: Hyperparameters
    patch_shape: tuple[int, ...] | None = None
    data: dict | None = None
    iterations: int = 0
    history: dict[str, np.ndarray] = field(default_factory=dict)
    rho_hat: np.ndarray | None = None
    optimizer: dict | None = None
    info: dict = field(default_factory=dict)
    validation: dict[str, np.ndarray] = field(default_factory=dict)
    normalization: dict | None = None
    normalization_arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __repr__(self) -> str:
        """A short summary: sizes, units, decoder, iterations, J and normalisation, never whole arrays."""
        cost = self.info.get("cost")
        mode = (self.normalization or {}).get("mode")
        return (
            f"Model({self.n_visible} inputs -> {self.n_hidden} hidden ({self.hyper.activation}), "
            f"{self.hyper.decoder} decoder, {self.iterations} iterations"
            + (f", J={cost:.6g}" if isinstance(cost, float) else "")
            # "none" is the absence of a normalisation: nothing to say about it.
            + (f", data normalised by {mode}" if isinstance(mode, str) and mode != "none" else "")
            + (", resumable" if self.optimizer is not None else "")
            + ")"
        )

    def encode(self, X: np.ndarray, *, block_rows: int | None = None, dtype: object = None) -> np.ndarray:
        """The hidden activations a2 (m, s) of the rows of X (m, n), computed block by block.

        ``dtype`` is the compute and output type (float32 or float64; default: X's when it
        is one of them, else float64).  Extra memory is a few blocks, whatever m is.
        """
        from streamae.compute.blocked import encode_rows

        return encode_rows(self, X, block_rows=block_rows, dtype=dtype)

    def reconstruct(
        self, X: np.ndarray, *, block_rows: int | None = None, dtype: object = None
    ) -> np.ndarray:
        """The decoder's output a3 (m, n) for the rows of X (m, n), block by block (see :meth:`encode`)."""
        from streamae.compute.blocked import reconstruct_rows

        return reconstruct_rows(self, X, block_rows=block_rows, dtype=dtype)

    def save(self, path: str | os.PathLike, *, force: bool = False) -> Path:
        """Write the model file ``path`` (atomically; an existing file only with ``force``).

        The written file is read back before it replaces anything: a model that
        :func:`load_model` would refuse (NaN weights, shapes that disagree) is never saved.
        """
        return write_model(path, self, force=force, verify=True)

    @property
    def n_visible(self) -> int:
        """Input size n."""
        return self.W1.shape[1]

    @property
    def n_hidden(self) -> int:
        """Hidden size s."""
        return self.W1.shape[0]

    @property
    def activation(self) -> str:
        """The hidden layer's nonlinearity: "sigmoid" or "tanh"."""
        return self.hyper.activation

    @property
    def theta(self) -> np.ndarray:
        """The parameters as one flat float64 vector (p,)."""
        return pack(self.W1, self.W2, self.b1, self.b2)


def write_model(
    path: str | os.PathLike,
    model: Model,
    *,
    force: bool,
    inputs: tuple[str | os.PathLike, ...] = (),
    claim: OutputClaim | None = None,
    verify: bool = False,
) -> Path:
    """Write ``model`` to ``path`` atomically; returns the path.

    ``inputs`` are paths the output must not overwrite (the training data); ``claim``
    is the output as checked at the start of a run (see :class:`OutputClaim`).  ``verify``:
    read the new file back with :func:`load_model`'s checks before it is renamed into place,
    and refuse (a :class:`DataError`, the old file untouched) what they would refuse.
    """
    with atomic_output(path, force=force, inputs=inputs, claim=claim) as temporary:
        with hdf5_output(temporary) as handle:
            _write_contents(handle, model)
        if verify:
            _verify_written(temporary, Path(path))
    return Path(path)


def _verify_written(temporary: Path, target: Path) -> None:
    """Read ``temporary`` back as :func:`load_model` would; a refusal becomes a DataError."""
    try:
        with open_hdf5(temporary) as handle:
            _read_contents(handle, target)
    except InputFileError as error:
        reason = str(error).split(": ", 1)[-1]
        raise DataError(
            f"{target}: the model was not written, because the file would be refused when read "
            f"({reason.rstrip('.')}); check the model's arrays (a previous file there is untouched)."
        ) from None


def _write_contents(handle: h5py.File, model: Model) -> None:
    attrs = handle.attrs
    attrs["format"] = MODEL_FORMAT
    attrs["streamae_version"] = __version__
    for key, value in model.hyper.as_attributes().items():
        attrs[key] = value
    if model.patch_shape is not None:
        attrs["patch_shape"] = np.asarray(model.patch_shape, dtype=np.int64)
    attrs["data"] = json.dumps(model.data or {})
    attrs["iterations"] = int(model.iterations)
    attrs["info"] = json.dumps(model.info)
    for name in WEIGHT_DATASETS:
        handle.create_dataset(name, data=np.asarray(getattr(model, name), dtype=np.float64))
    history = handle.create_group("history")
    for name in HISTORY_FIELDS:
        values = model.history.get(name, np.zeros(0))
        history.create_dataset(name, data=np.asarray(values, dtype=np.float64))
    if model.validation:
        group = handle.create_group("validation")
        for name in VALIDATION_FIELDS:
            group.create_dataset(name, data=np.asarray(model.validation.get(name, []), dtype=np.float64))
    if model.rho_hat is not None:
        handle.create_dataset("rho_hat", data=np.asarray(model.rho_hat, dtype=np.float64))
    if model.normalization is not None:
        attrs["normalization"] = json.dumps(model.normalization)
    for name, values in model.normalization_arrays.items():
        if name in NORMALIZATION_DATASETS:
            handle.create_dataset(name, data=np.asarray(values, dtype=np.float64))
    if model.optimizer is not None:
        group = handle.create_group("optimizer")
        for key, value in model.optimizer.items():
            if isinstance(value, np.ndarray):
                group.create_dataset(key, data=value)
            else:
                group.attrs[key] = value


def load_model(path: str | os.PathLike) -> Model:
    """Read and validate a model file written by ``streamae train``.

    Raises :class:`~streamae.errors.InputFileError` naming the file and what is wrong
    (not a model file, a missing dataset, weights of inconsistent shapes).
    """
    path = Path(path)
    with open_hdf5(path) as handle:
        return _read_contents(handle, path)


def _read_contents(handle: h5py.File, path: Path) -> Model:
    fmt = decode_attribute(handle.attrs.get("format"))
    if fmt != MODEL_FORMAT:
        if fmt == PATCH_FORMAT or "patches" in handle:
            raise InputFileError(
                f"{path}: this is a patch file, not a model file; give the model written by `streamae train`."
            )
        held = ", ".join(list_datasets(handle)[:10]) or "no datasets"
        raise InputFileError(
            f"{path}: not a streamae model file (it holds {held}); give the model written by "
            "`streamae train`."
        )
    missing = [name for name in WEIGHT_DATASETS if not isinstance(_get(handle, name), h5py.Dataset)]
    if missing:
        raise InputFileError(
            f"{path}: the model file has no /{', /'.join(missing)}; it is incomplete, train it again."
        )
    weights = {name: _numbers(handle[name], path) for name in WEIGHT_DATASETS}
    _check_weight_shapes(weights, path)
    attrs = {key: decode_attribute(value) for key, value in handle.attrs.items()}
    hyper = _read_hyperparameters(attrs, weights["W1"].shape[0], path)
    history = {}
    if isinstance(_get(handle, "history"), h5py.Group):
        for name in HISTORY_FIELDS:
            if isinstance(_get(handle["history"], name), h5py.Dataset):
                history[name] = _numbers(handle["history"][name], path, shape=(None,))
    validation = {}
    if isinstance(_get(handle, "validation"), h5py.Group):
        for name in VALIDATION_FIELDS:
            if isinstance(_get(handle["validation"], name), h5py.Dataset):
                validation[name] = _numbers(handle["validation"][name], path, shape=(None,))
    _fill_stage_fields(history, attrs)
    rho_hat = None
    if isinstance(_get(handle, "rho_hat"), h5py.Dataset):
        rho_hat = _numbers(handle["rho_hat"], path, shape=(weights["W1"].shape[0],))
    optimizer = None
    if isinstance(handle.get("optimizer"), h5py.Group):
        group = handle["optimizer"]
        optimizer = {}
        for key in group:
            if isinstance(_get(group, key), h5py.Dataset):
                check_declared_size(group[key], path, "train it again")
            optimizer[key] = np.asarray(group[key][()])
        optimizer.update({key: decode_attribute(value) for key, value in group.attrs.items()})
    patch_shape = attrs.get("patch_shape")
    n = weights["W1"].shape[1]
    if not (
        isinstance(patch_shape, list)
        and all(isinstance(v, int) and v > 0 for v in patch_shape)
        and int(np.prod(patch_shape)) == n
    ):
        patch_shape = None
    return Model(
        **weights,
        hyper=hyper,
        patch_shape=tuple(patch_shape) if patch_shape else None,
        data=_json_or_none(attrs.get("data")),
        iterations=int(attrs.get("iterations", 0)) if _is_int(attrs.get("iterations")) else 0,
        history=history,
        rho_hat=rho_hat,
        optimizer=optimizer,
        info=_json_or_none(attrs.get("info")) or {},
        normalization=_json_or_none(attrs.get("normalization")),
        normalization_arrays=_normalization_arrays(handle, path, n),
        validation=validation,
    )


def _fill_stage_fields(history: dict[str, np.ndarray], attrs: dict) -> None:
    """Give a file written before the warm start its one stage on all the rows."""
    if "cost" not in history or all(name in history for name in STAGE_FIELDS):
        return
    iterations = history["cost"].shape[0]
    shape = (_json_or_none(attrs.get("data")) or {}).get("shape")
    rows = shape[0] if isinstance(shape, list) and shape and _is_int(shape[0]) else 0
    history.setdefault("stage", np.ones(iterations))
    history.setdefault("sample_rows", np.full(iterations, float(rows)))


def _normalization_arrays(handle: h5py.File, path: Path, n: int) -> dict[str, np.ndarray]:
    """The normalisation arrays the file holds, shape-checked against the n inputs."""
    shapes = {"zca/mean": (n,), "zca/matrix": (n, n), "zscore/mean": (n,), "zscore/std": (n,)}
    found = {}
    for name, shape in shapes.items():
        group, _, leaf = name.partition("/")
        if isinstance(_get(handle, group), h5py.Group) and isinstance(
            _get(handle[group], leaf), h5py.Dataset
        ):
            found[name] = _numbers(handle[name], path, shape=shape)
    return found


def _get(group: h5py.Group, name: str) -> object:
    """``group[name]``, or None when it is missing or a link that leads nowhere."""
    try:
        return group.get(name)
    except (KeyError, OSError):  # a dangling soft or external link
        return None


def _numbers(dataset: h5py.Dataset, path: Path, shape: tuple[int | None, ...] | None = None) -> np.ndarray:
    """A dataset's values as float64, refusing strings, compounds, complex numbers and bad shapes.

    ``shape`` is the expected shape, None standing for any length.  Checking the dtype
    first matters: NumPy would fail on strings with a bare ValueError, and would cast
    complex values to real, silently dropping their imaginary part.
    """
    name = dataset.name
    if dataset.dtype.kind not in "fiu":
        raise InputFileError(
            f"{path}: {name} holds {_brief(dataset.dtype)} values, not numbers; the model file is "
            "damaged, train it again."
        )
    if shape is not None and (
        len(dataset.shape) != len(shape)
        or any(want is not None and want != have for want, have in zip(shape, dataset.shape, strict=True))
    ):
        wanted = tuple("any" if v is None else v for v in shape)
        raise InputFileError(
            f"{path}: {name} has shape {dataset.shape}, not {wanted}; the model file is damaged, "
            "train it again."
        )
    check_declared_size(dataset, path, "train it again")
    try:
        return np.asarray(dataset[()], dtype=np.float64)
    except OSError as error:
        raise StorageError(
            f"{path}: reading {name} failed ({_brief(error)}); the file may be truncated or damaged, "
            "train it again or restore a copy."
        ) from error


def _brief(value: object, limit: int = 60) -> str:
    """``str(value)`` cut to ``limit`` characters, so a hostile attribute cannot flood the terminal."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_weight_shapes(weights: dict[str, np.ndarray], path: Path) -> None:
    W1 = weights["W1"]
    if W1.ndim != 2 or W1.size == 0:
        raise InputFileError(
            f"{path}: /W1 has shape {W1.shape}, not (hidden, inputs); the model file is damaged, "
            "train it again."
        )
    s, n = W1.shape
    expected = {"W2": (n, s), "b1": (s,), "b2": (n,)}
    for name, shape in expected.items():
        if weights[name].shape != shape:
            raise InputFileError(
                f"{path}: /{name} has shape {weights[name].shape} but /W1 is {W1.shape}, "
                f"so /{name} should be {shape}; the model file is damaged, train it again."
            )
    for name, values in weights.items():
        if not np.all(np.isfinite(values)):
            raise InputFileError(
                f"{path}: /{name} holds NaN or Inf; the model file is damaged, train it again "
                "(from a checkpoint before the values diverged)."
            )


def _read_hyperparameters(attrs: dict, hidden: int, path: Path) -> Hyperparameters:
    """The hyperparameters of the model file: every option TRAIN stores as an attribute.

    An attribute missing (files written before it existed) takes the option's default;
    ``hidden`` is the weights' own.  One out of the option's range is damage.
    """
    values: dict = {}
    for option in TRAIN:
        if option.stored_path[:1] != ("attrs",):
            continue
        attribute = option.stored_path[1]
        value = hidden if option.name == "hidden" else attrs.get(attribute, option.default)
        try:
            values[option.name] = option.check(value)
        except UsageError:
            # Said in the file's words: an attribute out of range, not a parameter to change.
            raise InputFileError(
                f"{path}: the attribute {attribute} is {_brief(repr(value))}, not "
                f"{option.describe_range()}; the model file is damaged, train it again."
            ) from None
    return Hyperparameters(**values)


def _json_or_none(text: object) -> dict | None:
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
