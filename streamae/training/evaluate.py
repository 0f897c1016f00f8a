"""J and ∇J at one point, as a library function (``streamae.objective``)."""

from __future__ import annotations

import os

import numpy as np

from streamae.compute.objective import Evaluation
from streamae.compute.parameters import HYPERPARAMETER_NAMES, Hyperparameters, initialize
from streamae.compute.schemes import TwoPassObjective
from streamae.errors import UsageError
from streamae.io.patchfile import ArrayPatches
from streamae.io.readpolicy import open_patches
from streamae.options import DEFAULT_DATASET, TRAIN, dataset_path
from streamae.runtime.process import configure

__all__ = ["objective"]


def objective(
    data: str | os.PathLike | np.ndarray,
    theta: np.ndarray | None = None,
    *,
    dtype: str = "float64",  # a check, not a training run: float64 by default
    block_rows: int | None = None,
    seed: int = TRAIN["seed"].default,
    dataset: str = DEFAULT_DATASET,
    **hyperparameters: object,
) -> Evaluation:
    """J, its terms, ∇J (p,) and ρ̂ (s,) at ``theta`` (default: the notes' initialisation).

    ``data`` is a patch file path (its 2-D ``dataset``, default ``/patches``) or an (m, n)
    array; a file is read by the one read policy (io/readpolicy.py).  The same streamed kernels as
    training compute it (the two-pass scheme).  ``hyperparameters`` are ``hidden``,
    ``rho``, ``beta``, ``lam``, ``decoder`` and ``activation``, with the defaults and
    checks of :data:`streamae.options.TRAIN`.
    """
    configure()  # the process set up for the kernels, unless the caller did it (idempotent)
    hyper = _hyperparameters(hyperparameters)
    compute_dtype = np.dtype(TRAIN["dtype"].check(dtype)).type
    if isinstance(data, np.ndarray):
        source = ArrayPatches(np.asarray(data, dtype=compute_dtype), block_rows=block_rows)
    else:
        source = open_patches(data, dtype=compute_dtype, block_rows=block_rows, dataset=dataset_path(dataset))
    with source:
        n = source.layout.n_features
        theta = initialize(n, hyper.hidden, seed) if theta is None else np.asarray(theta, dtype=np.float64)
        return TwoPassObjective(source, hyper, n_visible=n, dtype=compute_dtype)(theta)


def _hyperparameters(values: dict[str, object]) -> Hyperparameters:
    """The objective's hyperparameters from keyword ``values`` (the rest: TRAIN's defaults)."""
    unknown = sorted(set(values) - set(HYPERPARAMETER_NAMES))
    if unknown:
        raise UsageError(
            f"objective takes no parameter {unknown[0]!r}; its hyperparameters are "
            f"{', '.join(HYPERPARAMETER_NAMES)}.",
            parameter=unknown[0],
        )
    return Hyperparameters(**values)
