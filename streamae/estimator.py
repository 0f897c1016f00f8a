"""A scikit-learn estimator: the sparse autoencoder as a transformer (``streamae.SparseAutoencoder``).

Needs scikit-learn (``pip install "streamae[sklearn]"``).  The rest of streamae never
imports this module: ``streamae.SparseAutoencoder`` is looked up lazily, on first use.

    from sklearn.pipeline import make_pipeline
    from sklearn.linear_model import LogisticRegression
    X, y = streamae.load_digits()
    pipeline = make_pipeline(streamae.SparseAutoencoder(hidden=196, rho=0.1, lam=3e-3), LogisticRegression())
    pipeline.fit(X[:5000], y[:5000]).score(X[5000:], y[5000:])

``fit`` trains exactly what ``streamae train`` trains (full-batch L-BFGS on the notes'
objective, the same streamed kernels): an array is written to a temporary patch file and
streamed from it; a path to a patch file is streamed as it is, out of core.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from streamae.options import TRAIN

__all__ = ["SparseAutoencoder"]


class SparseAutoencoder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """The UFLDL sparse autoencoder: ``transform`` gives the hidden activations a2.

    Parameters (the names and defaults of ``streamae train``, :data:`streamae.options.TRAIN`):
    ``hidden`` units s, sparsity target ``rho``, sparsity weight ``beta``, weight decay
    ``lam`` (λ), ``decoder`` ("sigmoid" or "linear"), ``activation`` ("sigmoid" or
    "tanh"), ``max_iter`` L-BFGS iterations, compute ``dtype`` ("float32" or "float64"),
    ``seed`` of the initial weights, ``block_rows`` rows per read (None: the read policy's).
    A sigmoid decoder reproduces values in (0, 1) only: scale the data there (pixels / 255)
    or take the linear decoder.  Values are checked when ``fit`` runs, not before.

    ``fit(X)``: X is an (m, n) array or the path of a patch file (``streamae extract``'s
    output, streamed out of core as ``train`` streams it).  Fitted attributes:
    ``W1_`` (s, n), ``b1_`` (s,), ``W2_`` (n, s), ``b2_`` (n,) float64, ``components_``
    (= ``W1_``), ``rho_hat_`` (s,) the mean activation on the training rows, ``cost_`` J at
    the end, ``n_iter_``, ``history_`` (J and its terms per iteration), ``model_`` the
    :class:`~streamae.io.modelfile.Model` (``model_.save(path)`` writes a model file), and
    ``n_features_in_`` (``feature_names_in_`` when X has string column names).

    ``transform(X)`` → a2 (m, s); ``inverse_transform(A)`` → the decoder's output (m, n)
    for hidden activations A (m, s); ``reconstruct(X)`` → a3 (m, n), the two in a row;
    ``score(X)`` → −J(W, b; X), the notes' objective on the rows X (higher is better, so
    ``GridSearchCV`` ranks held-out folds by it).

    scikit-learn's ``check_estimator`` (tests/test_estimator.py) runs on the linear decoder:
    its data lies outside (0, 1), which the default sigmoid decoder cannot reproduce and
    refuses with a ValueError naming the value, as ``streamae train`` does.  With
    ``beta=0`` every check passes.  With the sparsity term every check passes except three
    whose data (normal around 100) saturates every unit at the initial weights, so that
    ρ̂ rounds to 1 and J is infinite, which ``fit`` refuses (ValueError) rather than
    fitting through: ``check_fit_idempotent``, ``check_fit_check_is_fitted`` and
    ``check_n_features_in``.  ``check_array_api_input`` skips itself (no array-API support
    is claimed).
    """

    def __init__(
        self,
        hidden: int = TRAIN["hidden"].default,
        *,
        rho: float = TRAIN["rho"].default,
        beta: float = TRAIN["beta"].default,
        lam: float = TRAIN["lam"].default,
        decoder: str = TRAIN["decoder"].default,
        activation: str = TRAIN["activation"].default,
        max_iter: int = TRAIN["max_iter"].default,
        dtype: str = TRAIN["dtype"].default,
        seed: int = TRAIN["seed"].default,
        block_rows: int | None = None,
    ) -> None:
        self.hidden = hidden
        self.rho = rho
        self.beta = beta
        self.lam = lam
        self.decoder = decoder
        self.activation = activation
        self.max_iter = max_iter
        self.dtype = dtype
        self.seed = seed
        self.block_rows = block_rows

    # --- fitting ---------------------------------------------------------------------------

    def fit(self, X, y=None) -> SparseAutoencoder:
        """Train on X (an (m, n) array, or the path of a patch file); ``y`` is ignored."""
        _configure()
        from streamae.errors import StreamaeError
        from streamae.training.session import train

        options = {name: getattr(self, name) for name in _TRAIN_PARAMETERS}
        options["chunk_rows"] = self.block_rows
        try:
            if isinstance(X, str | os.PathLike):
                model = train(X, None, stop_signals=False, **options)
            else:
                X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=1)
                with tempfile.TemporaryDirectory(prefix="streamae-fit-") as folder:
                    path = _write_rows(Path(folder) / "rows.h5", X, self.dtype)
                    model = train(path, None, stop_signals=False, **options)
        except StreamaeError as error:
            raise ValueError(str(error)) from error
        self._set_fitted(model)
        return self

    def _set_fitted(self, model) -> None:
        self.model_ = model
        self.W1_, self.b1_, self.W2_, self.b2_ = model.W1, model.b1, model.W2, model.b2
        self.components_ = self.W1_
        self.rho_hat_ = model.rho_hat
        self.cost_ = float(model.info.get("cost", np.nan))
        self.n_iter_ = int(model.iterations)
        self.history_ = dict(model.history)
        self.n_features_in_ = model.n_visible
        self._n_features_out = model.n_hidden

    # --- using the fitted model ----------------------------------------------------------

    def transform(self, X) -> np.ndarray:
        """The hidden activations a2 (m, s) of the rows of X (m, n)."""
        X = self._rows(X)
        return self.model_.encode(X, block_rows=self.block_rows, dtype=X.dtype)

    def reconstruct(self, X) -> np.ndarray:
        """The decoder's output a3 (m, n) for the rows of X (m, n): encode, then decode."""
        X = self._rows(X)
        return self.model_.reconstruct(X, block_rows=self.block_rows, dtype=X.dtype)

    def inverse_transform(self, X) -> np.ndarray:
        """The decoder's output (m, n) for hidden activations X (m, s): f(X W2ᵀ + b2)."""
        check_is_fitted(self)
        A = check_array(X, dtype=np.float64)
        if A.shape[1] != self.W1_.shape[0]:
            raise ValueError(f"inverse_transform takes (m, {self.W1_.shape[0]}) activations, got {A.shape}.")
        z3 = A @ self.W2_.T + self.b2_
        return z3 if self.model_.hyper.decoder == "linear" else 1.0 / (1.0 + np.exp(-z3))

    def score(self, X, y=None) -> float:
        """−J on the rows X: the notes' objective (all three terms) at the fitted weights."""
        from streamae.errors import StreamaeError
        from streamae.training.evaluate import objective

        X = self._rows(X)
        hyper = self.model_.hyper
        try:
            evaluation = objective(
                X,
                self.model_.theta,
                hidden=hyper.hidden,
                rho=hyper.rho,
                beta=hyper.beta,
                lam=hyper.lam,
                decoder=hyper.decoder,
                activation=hyper.activation,
                dtype="float64",
            )
        except StreamaeError as error:
            raise ValueError(str(error)) from error
        return -float(evaluation.cost)

    def _rows(self, X) -> np.ndarray:
        _configure()
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return X

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _configure() -> None:
    """Set the process up for the kernels before a module that defines them is imported."""
    from streamae.runtime.process import configure

    configure()  # idempotent


# The estimator's parameters that are streamae.train's options under the same names.
_TRAIN_PARAMETERS = ("hidden", "rho", "beta", "lam", "decoder", "activation", "max_iter", "dtype", "seed")


def _write_rows(path: Path, X: np.ndarray, dtype: str) -> Path:
    """X (m, n) as a patch file of the compute dtype (rows as they are, no normalisation)."""
    import h5py

    from streamae.io.hdf5 import PATCH_FORMAT

    rows = np.asarray(X, dtype=np.dtype(dtype))
    with h5py.File(path, "w") as handle:
        chunk = max(1, min(rows.shape[0], (1 << 20) // max(1, rows.shape[1] * rows.itemsize)))
        handle.create_dataset("patches", data=rows, chunks=(chunk, rows.shape[1]))
        handle.attrs["format"] = PATCH_FORMAT
        handle.attrs["patch_shape"] = np.asarray([rows.shape[1]], dtype=np.int64)
        handle.attrs["normalization"] = json.dumps({"mode": "none"})  # the rows as given
    return path
