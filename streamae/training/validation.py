"""Held-out evaluation while training: J's terms on data the optimizer never sees.

The held-out rows come from another file (``validation="held.h5:/X"``) or from the
training file itself (``validation_fraction=f``: round(f × rows) rows, whole blocks of a
seeded choice and the first rows of one more, taken out of the training stream).  They
are evaluated with the training objective's own streamed kernels (a
:class:`~streamae.compute.schemes.SinglePassObjective` over the held-out rows: one read,
sums reduced over the MPI ranks like the training sums), so the held-out reconstruction
error, ρ̂ and sparsity term are the same quantities as the training ones, on other rows.
The gradient that pass also computes is not used: the cost of a validation is one
training evaluation over the held-out rows.

:class:`Validation` is the trainer's per-iteration hook: every ``validate_every``
iterations it evaluates, records the numbers, and with ``early_stop=K`` asks the loop
to stop once the held-out J has not improved (by ``min_improvement`` relative) for K
validations, remembering the parameters of the lowest held-out J.  Every rank computes
identical reduced numbers, so every rank takes the same decision at the same iteration.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamae.compute.objective import Evaluation
from streamae.compute.parameters import Hyperparameters
from streamae.compute.schemes import SinglePassObjective
from streamae.errors import UsageError
from streamae.io.modelfile import VALIDATION_FIELDS
from streamae.io.trainingdata import held_out_ranges, split_ranges
from streamae.options import said, setting
from streamae.text import printable

# The split of the training file's chunks is io's (it opens the two sides); named here too.
__all__ = ["HeldOutObjective", "Validation", "held_out_ranges", "parse_validation", "split_ranges"]


def parse_validation(text: str, default_dataset: str) -> tuple[Path, str]:
    """``FILE[:DATASET]`` → (file, dataset); the dataset defaults to the training one.

    The text after the last colon is a dataset only when it starts with "/" (so a path
    such as ``C:\\data.h5`` or ``a:b.h5`` stays a file name).
    """
    if not text:
        raise UsageError("validation must name a file (FILE or FILE:/DATASET).", parameter="validation")
    head, colon, tail = text.rpartition(":")
    if colon and head and tail.startswith("/"):
        return Path(head), tail
    if colon and head and not Path(text).exists() and Path(head).is_file():
        if not tail:  # "held.h5:": a dataset was meant but not given
            raise UsageError(
                f"{printable(text)}: names no dataset after the colon; give FILE:/DATASET or FILE alone.",
                parameter="validation",
            )
        return Path(head), "/" + tail  # "held.h5:X" names the dataset /X of an existing file
    return Path(text), default_dataset


def refuse_state_with_early_stop(keep_state: bool, early_stop: int | None) -> None:
    """Refuse keep_state with early_stop: an early stop keeps an earlier iterate than the
    L-BFGS state belongs to, so the state could not be kept honestly (it would be dropped)."""
    if keep_state and early_stop is not None:
        raise UsageError(
            f"{setting('keep_state', True)} cannot be honoured with {setting('early_stop', early_stop)}: an "
            "early stop keeps the "
            "best held-out parameters, not the last ones the L-BFGS state belongs to; leave one out.",
            parameter="keep_state",
        )


def refuse_training_rows(path: Path, dataset: str, data: object, data_dataset: str) -> None:
    """Refuse held-out data that is the training data itself (same file and dataset)."""
    try:
        same = Path(os.fspath(data)).exists() and os.path.samefile(path, os.fspath(data))
    except (OSError, TypeError):
        return  # not a path, or not there: the checks that open it say why
    if same and "/" + dataset.strip("/") == "/" + str(data_dataset).strip("/"):
        raise UsageError(
            f"{printable(path)}: the held-out data is the training data itself ({dataset}), so it "
            "would measure nothing held out; give another file or dataset, or use "
            f"{said('validation_fraction')}.",
            parameter="validation",
        )


class HeldOutObjective:
    """J's terms on the held-out rows at theta, streamed with the training kernels.

    ``source`` streams this rank's held-out rows; ``comm`` reduces the sums.  Returns an
    :class:`~streamae.compute.objective.Evaluation` (cost, reconstruction, weight decay,
    sparsity, ρ̂ (s,)); its gradient is a by-product and unused.
    """

    def __init__(self, source, hyper: Hyperparameters, *, n_visible: int, dtype, comm, threads=None) -> None:
        options = {"n_visible": n_visible, "dtype": dtype, "comm": comm}
        if threads is not None:
            options["threads"] = threads
        self._objective = SinglePassObjective(source, hyper, **options)
        self.n_rows = self._objective.n_rows

    def __call__(self, theta: np.ndarray) -> Evaluation:
        return self._objective(np.asarray(theta, dtype=np.float64))

    def close(self) -> None:
        """Stop the objective's worker threads."""
        self._objective.close()


@dataclass
class Validation:
    """The trainer's held-out hook: evaluate, record, keep the best, decide early stopping.

    ``evaluate(theta) -> Evaluation``; ``every``: validate after every ``every``-th
    iteration; ``early_stop``: stop after this many validations without an improvement
    (None: never).  An improvement is a held-out J below ``(1 − min_improvement)`` times
    the J of the last improvement, so wiggles of the held-out J near its floor do not keep
    a run going (nor does a lower J by 1e-5 relative reset the count).  ``history`` maps
    VALIDATION_FIELDS to lists; ``best_theta`` is a copy of the parameters with the lowest
    held-out J so far (improvement or not), ``best_iteration`` their iteration.
    """

    evaluate: object
    every: int = 1
    early_stop: int | None = None
    min_improvement: float = 0.0
    history: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in VALIDATION_FIELDS})
    best_cost: float = math.inf
    best_theta: np.ndarray | None = None
    best_iteration: int | None = None
    improved_cost: float = math.inf
    since_best: int = 0
    stopped_early: bool = False

    def record(self, iteration: int, theta: np.ndarray) -> Evaluation:
        """Evaluate at theta (after ``iteration`` iterations) and remember the numbers."""
        evaluation = self.evaluate(theta)
        values = {
            "iteration": float(iteration),
            "cost": evaluation.cost,
            "reconstruction": evaluation.reconstruction,
            "weight_decay": evaluation.weight_decay,
            "sparsity": evaluation.sparsity,
            "rho_hat_mean": float(np.mean(evaluation.rho_hat)),
        }
        for name in VALIDATION_FIELDS:
            self.history[name].append(float(values[name]))
        self._count(iteration, theta, evaluation.cost)
        return evaluation

    def _count(self, iteration: int, theta: np.ndarray, cost: float) -> None:
        """Keep the lowest J's parameters; count the validations since the last improvement."""
        if cost < self.best_cost:
            self.best_cost = cost
            self.best_theta = np.array(theta, dtype=np.float64, copy=True)
            self.best_iteration = iteration
        # Relative: J > 0 (every term is nonnegative), so (1 - min_improvement) * J is below J.
        if math.isinf(self.improved_cost) or cost < (1.0 - self.min_improvement) * self.improved_cost:
            self.improved_cost = cost
            self.since_best = 0
        else:
            self.since_best += 1

    def after_iteration(self, iteration: int, theta: np.ndarray, record: dict) -> str | None:
        """The loop's hook: validate when due, add the numbers to ``record``; a stop reason or None."""
        if iteration % self.every != 0:
            return None
        evaluation = self.record(iteration, theta)
        record["validation_cost"] = evaluation.cost
        record["validation_reconstruction"] = evaluation.reconstruction
        record["validation_sparsity"] = evaluation.sparsity
        record["validation_rho_hat_mean"] = float(np.mean(evaluation.rho_hat))
        if self.early_stop is not None and self.since_best >= self.early_stop:
            self.stopped_early = True
            return (
                f"early stop: the held-out J has not improved by {self.min_improvement:g} relative "
                f"for {self.early_stop} validations; kept the parameters of iteration "
                f"{self.best_iteration}, the lowest held-out J"
            )
        return None

    def restore(self, arrays: dict[str, np.ndarray], iteration: int, theta: np.ndarray) -> None:
        """Continue the held-out ``arrays`` of a checkpoint taken after ``iteration``, at ``theta``.

        The history goes on where it stopped.  The checkpoint keeps no earlier parameters,
        so early stopping counts afresh from ``theta`` (evaluated once, not recorded).
        """
        for name in VALIDATION_FIELDS:
            self.history[name] = [float(v) for v in np.asarray(arrays.get(name, []), dtype=np.float64)]
        if self.early_stop is not None:
            self.best_cost = self.improved_cost = self.evaluate(theta).cost
            self.best_theta = np.array(theta, dtype=np.float64, copy=True)
            self.best_iteration = iteration

    def arrays(self) -> dict[str, np.ndarray]:
        """The history as float64 arrays (for the model file)."""
        return {name: np.asarray(values, dtype=np.float64) for name, values in self.history.items()}


def kept_iterate(objective, theta: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """(ρ̂ (s,), the info entries) of the parameters an early stop keeps: J, its terms and |∇J|.

    One full evaluation of the training objective at ``theta`` (collective under MPI), so the
    model file, the finish line and ``info`` report the point the file holds, not the last one.
    """
    evaluation = objective(np.asarray(theta, dtype=np.float64))
    return evaluation.rho_hat, {
        "cost": float(evaluation.cost),
        "reconstruction": float(evaluation.reconstruction),
        "weight_decay": float(evaluation.weight_decay),
        "sparsity": float(evaluation.sparsity),
        "grad_norm": float(np.linalg.norm(evaluation.gradient)),
    }
