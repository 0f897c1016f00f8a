"""The sparse autoencoder's parameters and hyperparameters, and the notes' initialisation.

Parameters travel as one flat float64 vector ``theta`` (the optimizer's view), laid out
as the notes' ``[W1(:); W2(:); b1; b2]`` but in C order: W1 (s, n), W2 (n, s), b1 (s,),
b2 (n,).  :func:`unpack` returns views into ``theta``, copying nothing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from streamae.options import TRAIN

HYPERPARAMETER_NAMES = ("hidden", "rho", "beta", "lam", "decoder", "activation")


@dataclass(frozen=True)
class Hyperparameters:
    """The objective's settings; defaults follow the notes' exercise (declared in
    :data:`streamae.options.TRAIN`).

    ``activation`` is the hidden layer's nonlinearity: "sigmoid" (inactive near 0) or
    "tanh" (inactive near −1; ρ then targets the mean of (a2 + 1)/2).
    """

    hidden: int = TRAIN["hidden"].default
    rho: float = TRAIN["rho"].default
    beta: float = TRAIN["beta"].default
    lam: float = TRAIN["lam"].default
    decoder: str = TRAIN["decoder"].default
    activation: str = TRAIN["activation"].default

    def __post_init__(self) -> None:
        # Checked by the options' specs, so messages name the parameter ("hidden must be ...").
        for name in HYPERPARAMETER_NAMES:
            object.__setattr__(self, name, TRAIN[name].check(getattr(self, name)))

    def as_attributes(self) -> dict:
        """The hyperparameters as model-file attributes (``lam`` stored as ``lambda``)."""
        values = asdict(self)
        values["lambda"] = values.pop("lam")
        return values


@dataclass(frozen=True)
class Parameters:
    """Views of W1 (s, n), W2 (n, s), b1 (s,), b2 (n,) into one flat vector."""

    W1: np.ndarray
    W2: np.ndarray
    b1: np.ndarray
    b2: np.ndarray


def parameter_count(n_visible: int, n_hidden: int) -> int:
    """Length of theta for ``n_visible`` inputs and ``n_hidden`` hidden units."""
    return 2 * n_visible * n_hidden + n_hidden + n_visible


def unpack(theta: np.ndarray, n_visible: int, n_hidden: int) -> Parameters:
    """Split theta (p,) into views W1 (s, n), W2 (n, s), b1 (s,), b2 (n,)."""
    n, s = n_visible, n_hidden
    if theta.shape != (parameter_count(n, s),):
        raise ValueError(f"theta has shape {theta.shape}, expected ({parameter_count(n, s)},)")
    W1 = theta[: s * n].reshape(s, n)
    W2 = theta[s * n : 2 * s * n].reshape(n, s)
    b1 = theta[2 * s * n : 2 * s * n + s]
    b2 = theta[2 * s * n + s :]
    return Parameters(W1=W1, W2=W2, b1=b1, b2=b2)


def pack(W1: np.ndarray, W2: np.ndarray, b1: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """Concatenate W1 (s, n), W2 (n, s), b1 (s,), b2 (n,) into theta (p,) float64."""
    return np.concatenate([W1.ravel(), W2.ravel(), b1.ravel(), b2.ravel()]).astype(np.float64)


def initialize(n_visible: int, n_hidden: int, seed: int = 0) -> np.ndarray:
    """The notes' initialisation: W uniform in ±sqrt(6 / (n + s + 1)), biases 0.

    Returns theta (p,) float64.  The same seed always gives the same vector.
    """
    radius = math.sqrt(6.0 / (n_visible + n_hidden + 1))
    rng = np.random.default_rng(seed)
    W1 = rng.uniform(-radius, radius, size=(n_hidden, n_visible))
    W2 = rng.uniform(-radius, radius, size=(n_visible, n_hidden))
    return pack(W1, W2, np.zeros(n_hidden), np.zeros(n_visible))
