"""Checkpoints: when to write one, and how to continue exactly from one.

A checkpoint is the model file itself, written atomically at an iteration boundary with
everything the next iteration depends on: the L-BFGS state (point, J, ∇J, correction
pairs as they lie in the ring with the slot of the oldest, iteration and evaluation
counters) and, for the model, the history
so far and J's terms and ρ̂ at the point.  An empty ``finished`` marks a run that has
not ended.

Why resuming is exact: an iteration is a deterministic function of the state, the stop
rules and J/∇J; J/∇J at a point are bit-for-bit reproducible for the same data, compute
dtype, block size and number of ranks (the kernels' sums do not depend on the thread
count).  Nothing else is carried from one iteration to the next.  Resuming with another
number of ranks or ``chunk_rows`` continues correctly but only agrees to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamae.compute.lbfgs import LbfgsState
from streamae.compute.objective import Evaluation
from streamae.errors import DataError, UsageError
from streamae.io.modelfile import HISTORY_FIELDS, Model
from streamae.options import (
    CHECKPOINT_TIME_SHARE,
    DEFAULT_CHECKPOINT_EVERY,
    TRAIN,
    resumable,
    setting,
    stored_value,
)
from streamae.text import printable

# Reasons a finished run may be continued by resuming with a larger max_iter (or a
# smaller tolerance: the relative-progress rule, "J fell by", is checked again on resume);
# any other reason (an absolute convergence test met) means there is nothing left to do.
_CONTINUABLE_PREFIXES = ("reached ", "no iterations asked", "max_iter ", "J fell by ")


@dataclass(frozen=True)
class CheckpointPolicy:
    """Write a checkpoint every ``every`` iterations (0: never by count; None: the
    default, every DEFAULT_CHECKPOINT_EVERY iterations or less often, so that writing
    checkpoints takes at most CHECKPOINT_TIME_SHARE of the time) and/or every
    ``minutes`` minutes of wall time (None: never by time)."""

    every: int | None = None
    minutes: float | None = None

    def __post_init__(self) -> None:
        TRAIN["checkpoint_every"].check(self.every)
        TRAIN["checkpoint_minutes"].check(self.minutes)

    def due(
        self, iteration: int, iterations_since: int, seconds_since: float, last_write_seconds: float
    ) -> bool:
        """True when a checkpoint is due after ``iteration``.

        ``iterations_since`` and ``seconds_since`` count from the end of the last
        checkpoint (or the start of the run), whose write took ``last_write_seconds``
        (0 before the first).
        """
        if self.minutes is not None and seconds_since >= 60.0 * self.minutes:
            return True
        if self.every is None:
            # The cost of the last write stands for the next: it grows with the pairs
            # stored, which change by at most DEFAULT_CHECKPOINT_EVERY between writes.
            return (
                iterations_since >= DEFAULT_CHECKPOINT_EVERY
                and last_write_seconds <= CHECKPOINT_TIME_SHARE * seconds_since
            )
        return self.every > 0 and iteration % self.every == 0


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
    data: dict = field(default_factory=dict)
    # The held-out evaluations so far (VALIDATION_FIELDS → (evaluations,)), continued on resume.
    validation: dict = field(default_factory=dict)
    # The warm-start record (stage, its first iteration, whether it was done), or None.
    warm_start: dict | None = None


def check_compatible(
    model: Model, path: str | Path, *, options: Mapping[str, object], fingerprint: dict
) -> None:
    """Refuse to resume ``model`` (read from ``path``) on other data or settings.

    ``options`` are the run's settings by parameter name.  Raises :class:`UsageError`
    with one sentence naming the first difference found: the data file's path, shape or
    dtype, or a setting declared ``on_resume="same"`` (a hyperparameter, the compute
    dtype, the L-BFGS pairs, the held-out fraction).
    """
    if model.optimizer is None:
        # A finished model drops the L-BFGS state (it is 100 pairs of parameter vectors).
        raise UsageError(
            f"{path}: a finished model without the optimizer state (dropped when its run ended, "
            f"unless keep_state was asked), so it cannot be continued exactly; train afresh, or "
            "train with keep_state when a run may need to be continued after it finishes.",
            parameter="resume",
        )
    _check_same_data(model.data or {}, fingerprint, path)
    sections = {"attrs": model.hyper.as_attributes(), "info": model.info, "data": model.data or {}}
    for option in resumable(TRAIN):
        before = stored_value(option, sections)
        now = options.get(option.name)
        if option.on_resume != "same" or option.stored_path[0] == "data" or before is None:
            continue
        if before != now and not (_is_number(before) and _is_number(now) and float(before) == float(now)):
            raise UsageError(
                f"{path}: cannot resume: it was trained with "
                f"{setting(option.name, before, _bounded(before))}, not {_bounded(now)}; resume with "
                f"the same settings or train afresh without {setting('resume', True)}.",
                parameter=option.name,
            )


def _check_same_data(stored: dict, fingerprint: dict, path: str | Path) -> None:
    """Refuse a checkpoint trained on another file, dataset, shape, dtype or content."""
    for key, label in (
        ("path", "the data file"),
        ("dataset", "the dataset"),  # absent (None) for /patches in either
        ("shape", "the data shape"),
        ("dtype", "the data dtype"),
    ):
        if stored.get(key) != fingerprint.get(key):
            raise UsageError(
                f"{path}: cannot resume: it was trained with {label} {_bounded(stored.get(key))}, not "
                f"{_bounded(fingerprint.get(key))}; resume with the same data or train afresh "
                f"without {setting('resume', True)}."
            )
    # Checkpoints written before content fingerprints existed hold none: resumed as before.
    if "content" in stored and fingerprint.get("content") is not None:
        if stored["content"] != fingerprint["content"]:
            raise UsageError(
                f"{path}: cannot resume: the values in {_bounded(fingerprint.get('path'))} are not the "
                "ones it was trained on (the file's sampled content differs), though its name and "
                f"shape are the same; resume with the original data or train afresh without "
                f"{setting('resume', True)}."
            )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def resume_point(model: Model, path: str | Path) -> ResumePoint:
    """The state and progress stored in ``model`` (already checked compatible).

    Every field of the optimizer state is validated first (:func:`validate_optimizer`).
    """
    validate_optimizer(model.optimizer or {}, model.theta.shape[0], path)
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
            f"train without {setting('resume', True)} (and {setting('force', True)} to replace it)."
        ) from error
    if not np.array_equal(state.x, model.theta):
        raise UsageError(
            f"{path}: the optimizer state does not match the weights in the file; "
            f"train without {setting('resume', True)} (and {setting('force', True)} to replace it)."
        )
    history = {name: [float(v) for v in model.history.get(name, [])] for name in HISTORY_FIELDS}
    if any(len(values) != state.iteration for values in history.values()):
        raise UsageError(
            f"{path}: the history holds a different number of iterations than the optimizer "
            f"state ({state.iteration}); train without {setting('resume', True)} "
            f"(and {setting('force', True)} to replace it)."
        )
    if state.finished.startswith(_CONTINUABLE_PREFIXES):
        state.finished = ""  # the new max_iter decides
    return ResumePoint(
        state=state,
        progress=Progress(current=current, history=history, seconds=float(model.info.get("seconds", 0.0))),
        ranks=model.info.get("ranks"),
        chunk_rows=model.info.get("chunk_rows"),
        data=dict(model.data or {}),
        validation=dict(model.validation),
        warm_start=model.info.get("warm_start"),
    )


# The largest L-BFGS memory a checkpoint may declare: far above any useful value (the
# notes use 100), and small enough that a damaged number cannot ask for terabytes.
MAX_LBFGS_MEMORY = 10_000
# Largest bytes the correction pairs of a checkpoint may ask for (two (memory, p) arrays).
MAX_PAIR_BYTES = 64 << 30


def _damaged(path: str | Path, what: str) -> UsageError:
    return UsageError(
        f"{path}: the optimizer state in the checkpoint is damaged ({what}); train without "
        f"{setting('resume', True)} (and {setting('force', True)} to replace it)."
    )


def validate_optimizer(arrays: dict, p: int, path: str | Path) -> None:
    """Refuse a damaged optimizer state before anything is built from it.

    Checks every field a checkpoint stores: x and g (p,) and finite, f finite, the
    correction pairs (k, p) each with k <= memory, finite and of positive curvature
    (y·s > 0), memory within [1, MAX_LBFGS_MEMORY] and its buffers of a size that can
    be allocated, counters non-negative integers.
    """
    for key in ("x", "g", "s_pairs", "y_pairs", "f", "memory", "iteration", "evaluations"):
        if key not in arrays:
            raise _damaged(path, f"/optimizer/{key} is missing")
    vectors = {}
    for key in ("x", "g"):
        value = np.asarray(arrays[key])
        if value.dtype.kind not in "fiu" or value.shape != (p,):
            raise _damaged(path, f"{key} has shape {value.shape} and type {value.dtype}, not ({p},) numbers")
        if not np.all(np.isfinite(value)):
            raise _damaged(path, f"{key} holds NaN or infinite values")
        vectors[key] = value
    f = _scalar(arrays["f"], path, "f")
    if not math.isfinite(f):
        raise _damaged(path, f"f = {f} is not finite")
    counters = {key: _integer(arrays[key], path, key) for key in ("memory", "iteration", "evaluations")}
    memory = counters["memory"]
    if not 1 <= memory <= MAX_LBFGS_MEMORY:
        raise _damaged(path, f"memory = {memory} is outside 1-{MAX_LBFGS_MEMORY}")
    if 2 * memory * p * 8 > MAX_PAIR_BYTES:
        raise _damaged(path, f"memory = {memory} pairs of {p} values would need {2 * memory * p * 8:,} bytes")
    if counters["iteration"] < 0 or counters["evaluations"] < 0:
        raise _damaged(path, "a negative iteration or evaluation count")
    pairs = {}
    for key in ("s_pairs", "y_pairs"):
        value = np.asarray(arrays[key])
        if value.dtype.kind not in "fiu" or value.ndim != 2 or value.shape[1] != p:
            raise _damaged(path, f"{key} has shape {value.shape}, not (pairs, {p})")
        if value.shape[0] > memory:
            raise _damaged(path, f"{key} holds {value.shape[0]} pairs, more than memory = {memory}")
        if not np.all(np.isfinite(value)):
            raise _damaged(path, f"{key} holds NaN or infinite values")
        pairs[key] = value.astype(np.float64)
    if pairs["s_pairs"].shape != pairs["y_pairs"].shape:
        raise _damaged(path, "s_pairs and y_pairs hold different numbers of pairs")
    # The slot of the oldest pair (absent in older checkpoints: the pairs oldest first).
    oldest = _integer(arrays.get("oldest", 0), path, "oldest")
    stored = pairs["s_pairs"].shape[0]
    if not (oldest == 0 or 0 < oldest < stored == memory):
        raise _damaged(path, f"oldest = {oldest} names no slot of a full ring of {stored} of {memory} pairs")
    curvature = np.einsum("ij,ij->i", pairs["s_pairs"], pairs["y_pairs"])
    if np.any(~(curvature > 0.0)):
        raise _damaged(path, "a correction pair has no positive curvature (y·s <= 0), e.g. all zeros")


def _scalar(value: object, path: str | Path, key: str) -> float:
    try:
        array = np.asarray(value)
        if array.size != 1 or array.dtype.kind not in "fiu":
            raise TypeError
        return float(array.reshape(()))
    except (TypeError, ValueError):
        raise _damaged(path, f"{key} is not a number") from None


def _integer(value: object, path: str | Path, key: str) -> int:
    number = _scalar(value, path, key)
    if not math.isfinite(number) or number != int(number):
        raise _damaged(path, f"{key} = {_bounded(number)} is not a whole number")
    return int(number)


# A fresh evaluation at the checkpoint's point must agree with its stored J and ∇J this
# closely.  Exactly equal for the same ranks and block size; otherwise sums are added in
# another order (float32 kernels, float64 sums): far below this.
REPRODUCED_TOLERANCE = 1e-6


def check_state_reproduced(state: LbfgsState, fresh: Evaluation, path: str | Path) -> None:
    """Refuse a checkpoint whose J and ∇J do not match a fresh evaluation at its point."""
    scale = max(1.0, abs(fresh.cost))
    if not abs(fresh.cost - state.f) <= REPRODUCED_TOLERANCE * scale:
        raise _damaged(path, f"J = {state.f:.10g} stored, {fresh.cost:.10g} evaluated at its point")
    gradient_scale = max(1.0, float(np.linalg.norm(fresh.gradient)))
    difference = float(np.linalg.norm(fresh.gradient - state.g))
    if not difference <= REPRODUCED_TOLERANCE * 100 * gradient_scale:
        raise _damaged(path, f"its gradient differs from the one evaluated at its point by {difference:.3g}")


def check_same_values(resumed: ResumePoint, path: str | Path, summary: object) -> None:
    """Refuse to resume when the value range of the data differs from the checkpoint's.

    ``summary`` is the value scan of this run (minimum and maximum); checkpoints without
    a stored range (older files) are resumed as before.
    """
    stored = resumed.data.get("range")
    if not (isinstance(stored, list) and len(stored) == 2):
        return
    now = [float(summary.minimum), float(summary.maximum)]
    if [float(v) for v in stored] != now:
        raise DataError(
            f"{path}: cannot resume: the data now holds values in [{now[0]:.6g}, {now[1]:.6g}], "
            f"the checkpoint was trained on [{float(stored[0]):.6g}, {float(stored[1]):.6g}], so the "
            f"file changed; resume with the original data or train afresh without {setting('resume', True)}."
        )


def _bounded(value: object, limit: int = 200) -> str:
    """A stored value fit to quote in one line: control characters replaced, cut to ``limit``."""
    return printable(value, limit, mark="?")
