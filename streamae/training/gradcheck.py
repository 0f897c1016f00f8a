"""The gradient check as a library function (``streamae.gradcheck``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from streamae.compute.objective import check_values
from streamae.compute.parameters import HYPERPARAMETER_NAMES, Hyperparameters, initialize
from streamae.compute.schemes import TwoPassObjective
from streamae.io.patchfile import ArrayPatches, PatchFile, inspect_patch_file
from streamae.options import GRADCHECK_THRESHOLD, GradcheckOptions, dataset_path
from streamae.runtime.process import configure

__all__ = ["GRADCHECK_THRESHOLD", "GradientCheck", "gradcheck"]


@dataclass(frozen=True)
class GradientCheck:
    """The result of a central-difference check: analytic and numeric gradients (p,)."""

    analytic: np.ndarray
    numeric: np.ndarray

    @property
    def relative_difference(self) -> float:
        """‖num − ana‖ / ‖num + ana‖, the notes' measure."""
        return float(
            np.linalg.norm(self.numeric - self.analytic) / np.linalg.norm(self.numeric + self.analytic)
        )


def gradcheck(
    data: str | os.PathLike | None = None,
    options: GradcheckOptions | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    **values: object,
) -> GradientCheck:
    """Compare the streamed float64 ∇J with central differences of J.

    On the first ``rows`` rows of the patch file ``data``, or on a small random problem
    (``rows`` × ``n_visible`` values in [0, 1]) when ``data`` is None.  The rows are
    streamed in several blocks on purpose (``block_rows``, default a third of them).
    ``options`` (a :class:`~streamae.options.GradcheckOptions`) or keyword arguments
    give ``rows``, ``hidden``, ``n_visible``, ``rho``, ``beta``, ``lam``, ``decoder``,
    ``block_rows``, ``epsilon`` and ``seed`` (see :data:`streamae.options.GRADCHECK`).
    """
    configure()  # the process set up for the kernels, unless the caller did it (idempotent)
    o = GradcheckOptions.build(options, values)
    rows, hidden, n_visible, seed, epsilon = o.rows, o.hidden, o.n_visible, o.seed, o.epsilon
    # Every hyperparameter gradcheck declares (the others keep TRAIN's defaults).
    hyper = Hyperparameters(**{name: getattr(o, name) for name in HYPERPARAMETER_NAMES if name in o.spec})
    block_rows = o.block_rows or max(1, -(-rows // 3))
    if data is None:
        generator = np.random.default_rng(seed)
        values = generator.uniform(0.05, 0.95, size=(rows, n_visible))
        source = ArrayPatches(values, block_rows=block_rows)
    else:
        dataset = dataset_path(o.dataset)
        layout = inspect_patch_file(data, dataset)
        rows = min(rows, layout.n_rows)
        source = PatchFile(
            data, dtype=np.float64, block_rows=block_rows, row_range=(0, rows), dataset=dataset
        )
        n_visible = layout.n_features
    with source:
        check_values(source, hyper, str(data or "<random>"))
        objective = TwoPassObjective(source, hyper, n_visible=n_visible, dtype=np.float64)
        theta = initialize(n_visible, hidden, seed)
        # Nudge the biases off zero so their gradients are checked at a generic point.
        theta[2 * n_visible * hidden :] = np.random.default_rng(seed + 1).normal(
            0.0, 0.1, size=hidden + n_visible
        )
        analytic = objective(theta).gradient
        numeric = np.empty_like(theta)
        for index in range(theta.shape[0]):
            original = theta[index]
            theta[index] = original + epsilon
            plus = objective(theta).cost
            theta[index] = original - epsilon
            minus = objective(theta).cost
            theta[index] = original
            numeric[index] = (plus - minus) / (2.0 * epsilon)
            if progress is not None:
                progress(index + 1, theta.shape[0])
    return GradientCheck(analytic=analytic, numeric=numeric)
