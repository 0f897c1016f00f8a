"""Checkpoints: when to write one, and how to continue exactly from one.

A checkpoint is the model file itself, written atomically at an iteration boundary with
everything the next iteration depends on: the L-BFGS state (point, J, ∇J, correction
pairs oldest first, iteration and evaluation counters) and, for the model, the history
so far and J's terms and ρ̂ at the point.  An empty ``finished`` marks a run that has
not ended.

Why resuming is exact: an iteration is a deterministic function of the state, the stop
rules and J/∇J; J/∇J at a point are bit-for-bit reproducible for the same data, compute
dtype, block size and number of ranks (the kernels' sums do not depend on the thread
count).  Nothing else is carried from one iteration to the next.  Resuming with another
number of ranks or ``--chunk-rows`` continues correctly but only agrees to rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamae.compute.lbfgs import LbfgsState
from streamae.compute.objective import Evaluation
from streamae.compute.parameters import Hyperparameters
from streamae.errors import UsageError
from streamae.io.modelfile import HISTORY_FIELDS, Model

DEFAULT_CHECKPOINT_EVERY = 10

# Reasons a finished run may be continued by --resume with a larger --max-iter; any
# other reason (a convergence test met) means there is nothing left to do.
_CONTINUABLE_PREFIXES = ("reached ", "no iterations asked", "max_iter ")


@dataclass(frozen=True)
class CheckpointPolicy:
    """Write a checkpoint every ``every`` iterations (0: never by count) and/or every
    ``minutes`` minutes of wall time (None: never by time)."""

    every: int = DEFAULT_CHECKPOINT_EVERY
    minutes: float | None = None

    def __post_init__(self) -> None:
        if self.every < 0:
            raise UsageError(f"--checkpoint-every must be at least 0, got {self.every}.")
        if self.minutes is not None and not (math.isfinite(self.minutes) and self.minutes > 0):
            raise UsageError(f"--checkpoint-minutes must be a positive number, got {self.minutes}.")

    def due_by_count(self, iteration: int) -> bool:
        """True when iteration ``iteration`` ends a checkpoint interval."""
        return self.every > 0 and iteration % self.every == 0

    def due_by_time(self, seconds_since_last: float) -> bool:
        """True when ``minutes`` have passed since the last checkpoint."""
        return self.minutes is not None and seconds_since_last >= 60.0 * self.minutes


@dataclass
class Progress:
    """Where training stands besides the optimizer: the history and the current point's terms.

    ``history`` maps each of HISTORY_FIELDS to a list (one entry per iteration);
    ``current`` is J, ∇J (p,), its terms and ρ̂ (s,) at the state's point;
    ``seconds`` counts the training time of earlier runs (resume).
    """

    current: Evaluation
    history: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in HISTORY_FIELDS})
    seconds: float = 0.0


@dataclass
class ResumePoint:
    """The optimizer state and the progress read from a checkpoint."""

    state: LbfgsState
    progress: Progress
    ranks: int | None
    chunk_rows: int | None


def _flag(name: str) -> str:
    return {"lam": "--lambda"}.get(name, f"--{name}")


def check_compatible(
    model: Model, path: str | Path, *, hyper: Hyperparameters, fingerprint: dict, dtype: str
) -> None:
    """Refuse to resume ``model`` (read from ``path``) on other data or settings.

    Raises :class:`UsageError` with one sentence naming the first difference found:
    the data file's path, shape or dtype, a hyperparameter, or the compute dtype.
    """
    if model.optimizer is None:
        # A finished model drops the L-BFGS state (it is 100 pairs of parameter vectors).
        raise UsageError(
            f"{path}: a finished model without the optimizer state (dropped when its run ended, "
            "unless keep_state was asked), so it cannot be continued exactly; train afresh, or "
            "train with keep_state when a run may need to be continued after it finishes.",
            parameter="resume",
        )
    stored = model.data or {}
    for key, label in (("path", "the data file"), ("shape", "the data shape"), ("dtype", "the data dtype")):
        if stored.get(key) != fingerprint.get(key):
            raise UsageError(
                f"{path}: cannot resume: it was trained with {label} {_bounded(stored.get(key))}, not "
                f"{_bounded(fingerprint.get(key))}; resume with the same data or train afresh "
                "without --resume."
            )
    old = model.hyper
    for name in ("hidden", "rho", "beta", "lam", "decoder"):
        before, now = getattr(old, name), getattr(hyper, name)
        if before != now:
            raise UsageError(
                f"{path}: cannot resume: it was trained with {_flag(name)} {_bounded(before)}, "
                f"not {_bounded(now)}; "
                "resume with the same settings or train afresh without --resume."
            )
    before = model.info.get("dtype")
    if before is not None and before != dtype:
        raise UsageError(
            f"{path}: cannot resume: it was trained with --dtype {before}, not {dtype}; "
            "resume with the same settings or train afresh without --resume."
        )


def resume_point(model: Model, path: str | Path) -> ResumePoint:
    """The state and progress stored in ``model`` (already checked compatible)."""
    try:
        state = LbfgsState.from_arrays(model.optimizer or {})
        info = model.info
        current = Evaluation(
            cost=float(state.f),
            gradient=state.g.copy(),
            reconstruction=float(info["reconstruction"]),
            weight_decay=float(info["weight_decay"]),
            sparsity=float(info["sparsity"]),
            rho_hat=np.asarray(model.rho_hat, dtype=np.float64),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise UsageError(
            f"{path}: the optimizer state in the model file is incomplete ({error}); "
            "train without --resume (and --force to replace it)."
        ) from error
    if not np.array_equal(state.x, model.theta):
        raise UsageError(
            f"{path}: the optimizer state does not match the weights in the file; "
            "train without --resume (and --force to replace it)."
        )
    history = {name: [float(v) for v in model.history.get(name, [])] for name in HISTORY_FIELDS}
    if any(len(values) != state.iteration for values in history.values()):
        raise UsageError(
            f"{path}: the history holds a different number of iterations than the optimizer "
            f"state ({state.iteration}); train without --resume (and --force to replace it)."
        )
    if state.finished.startswith(_CONTINUABLE_PREFIXES):
        state.finished = ""  # the new --max-iter decides
    return ResumePoint(
        state=state,
        progress=Progress(current=current, history=history, seconds=float(model.info.get("seconds", 0.0))),
        ranks=model.info.get("ranks"),
        chunk_rows=model.info.get("chunk_rows"),
    )


def _bounded(value: object, limit: int = 200) -> str:
    """A stored value fit to quote in one line: control characters replaced, cut to ``limit``."""
    text = "".join(c if c.isprintable() else "?" for c in str(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."
