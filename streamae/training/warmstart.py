"""Coarse-to-fine warm start: L-BFGS on growing fair samples, then on the full data.

On data larger than memory every L-BFGS iteration reads the whole file, and most of the
notes' 400 iterations are spent finding a region a small sample already reveals.  A warm
start runs L-BFGS on a sample of whole chunks spread over the file
(:mod:`streamae.io.chunksample`), hands the parameters to the next, larger sample, and
ends with the exact full-batch objective and the user's ``max_iter`` and tolerances.
Only the starting point of the last stage changes; its objective is the notes' own.

Choices (DESIGN.md, "Fewer passes"):

- ``auto`` (the default) above ``AUTO_MIN_ROWS_PER_PARAMETER`` (25) rows per parameter:
  the first sample holds about ``AUTO_ROWS_PER_PARAMETER`` (5) rows per parameter: small
  enough that L-BFGS runs its full budget on it for a few full-data evaluations' worth of
  rows, large enough that its optimum lies in the full one's basin; each next stage is
  ``AUTO_GROWTH`` (10) times larger; later stages stop below m / ``AUTO_LAST_FRACTION``
  (10), since a larger sample costs nearly as much as the data.  Up to 25 rows per
  parameter, two stages of a twentieth and a fifth of the rows (``AUTO_SMALL_FRACTIONS``),
  when the first holds at least ``AUTO_MIN_SAMPLE_ROWS`` (256) rows; below that the plain
  run.  :func:`choose_schedule` says which, and why, in the run header.  Measured
  (docs/time-to-model.md, full-data passes, deterministic), the default run against the
  notes' run: 10⁶ photo patches (304 rows per parameter) 71 passes to its stop at 1.00065
  x the notes' J400 against 411; 2·10⁵ (61) 174 at 0.9984 x against 417; 10⁵ (30) 187 at
  1.0002 x against 409; 5·10⁴ (15) 206 at 1.0004 x against 416 (a single 5-rows-per-
  parameter stage took 341 passes, the plain run 326); MNIST's 10⁴ digits (0.03 rows per
  parameter) 196 at 0.998 x against 408 (the plain run never stops before 400).
- A sample stage's iteration budget is ``max_iter`` capped so that the stage costs at
  most ``STAGE_BUDGET_FULL_EVALUATIONS`` (40) full-data evaluations' worth of rows
  (iterations × rows ≤ 40·m): a small first sample runs up to the notes' 400 iterations
  (cheap), a large later one, which starts close, fewer.  Measured on 2·10⁵ photo
  patches, one stage of 19,776 rows: a budget of 10 passes (102 iterations) took 283
  passes in all, 20 took 218, 40 (367 iterations, stopped by the tolerance) 174.  Its
  tolerances are the user's, the relative-progress rule included (on the sample's J).
- The final stage's ``max_iter`` counts full-data iterations only: the sample stages'
  iterations are reported apart (:func:`describe_iterations`).
- Iterations are numbered across stages (the history has one entry per iteration of
  any stage, with its ``stage`` and ``sample_rows``), so checkpoints and ``resume`` work
  in every stage as they do for a plain run: exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from streamae.compute.lbfgs import LbfgsState, StopRules
from streamae.errors import Interrupted, UsageError
from streamae.io.chunksample import ChunkSample, chunks_for_rows, rank_part, sample_rows, spread_chunks
from streamae.io.patchfile import PatchLayout, default_block_rows
from streamae.runtime.mpi import mark_collective
from streamae.training.checkpoint import Progress, ResumePoint
from streamae.training.loop import CountedBlocks, RunContext, Trainer

AUTO_ROWS_PER_PARAMETER = 5
# ``auto`` warm-starts above this many rows per parameter (its first sample is then less
# than a fifth of the data); up to it, it is the plain run (see choose_schedule).
AUTO_MIN_ROWS_PER_PARAMETER = 25
AUTO_GROWTH = 10
AUTO_LAST_FRACTION = 10
# Up to AUTO_MIN_ROWS_PER_PARAMETER: stages of m/20 and m/5 rows (measured: 5·10⁴ photo
# patches and the 10⁴ MNIST digits, docs/time-to-model.md), when m/20 holds at least
# AUTO_MIN_SAMPLE_ROWS rows: a smaller sample is mostly chunk rounding, and its ρ̂ noise.
AUTO_SMALL_FRACTIONS = (20, 5)
AUTO_MIN_SAMPLE_ROWS = 256
STAGE_BUDGET_FULL_EVALUATIONS = 40


@dataclass(frozen=True)
class Stage:
    """One stage: its number (1-based), the rows it trains on (all ranks together), the
    chunks of its sample (None: the full data) and its iteration budget (None: the
    user's ``max_iter``)."""

    number: int
    rows: int
    chunks: np.ndarray | None
    iterations: int | None

    @property
    def is_final(self) -> bool:
        """True for the last stage, the full data."""
        return self.chunks is None


@dataclass(frozen=True)
class WarmPlan:
    """The resolved schedule: the given text and the stages, the last being the full data."""

    schedule: str
    stages: tuple[Stage, ...]
    chunk_rows: int
    reason: str = ""  # which schedule runs and why, for the run header

    @property
    def sizes(self) -> list[int]:
        """Rows of every stage, the full data last (what the model file records)."""
        return [stage.rows for stage in self.stages]

    def record(self, stage: int, first_iteration: int, done: bool) -> dict:
        """The model file's ``info["warm_start"]``: the schedule and where training stands."""
        return {
            "schedule": self.schedule,
            "stages": self.sizes,
            "chunk_rows": self.chunk_rows,
            "stage": stage,
            "stage_first_iteration": first_iteration,
            "stage_done": done,
        }


def describe_iterations(history: dict, n_rows: int) -> str:
    """The iterations of a run in words, full-data ones apart from those on samples
    ("400 full-data iterations and 102 on samples", or "400 iterations" for a plain run):
    ``max_iter`` counts the former, so a report never shows a budget exceeded."""
    rows = np.asarray(history.get("sample_rows", []))
    full = int(np.sum(rows == n_rows))
    on_samples = int(rows.size - full)
    if on_samples == 0:
        return f"{full} iterations"
    return f"{full} full-data iterations and {on_samples} on samples"


def full_data_passes(history: dict, n_rows: int) -> np.ndarray:
    """Full-data passes at the end of each iteration of ``history`` (cumulative, (k,)):
    an evaluation on a sample of r rows counts r / ``n_rows``, one on all the rows 1."""
    evaluations = np.asarray(history.get("evaluations", []), dtype=np.float64)
    fractions = np.asarray(history.get("sample_rows", []), dtype=np.float64) / n_rows
    return np.cumsum(np.diff(evaluations, prepend=0.0) * fractions)


def parse_schedule(text: str) -> str | list[int]:
    """``"none"``, ``"auto"`` or the list of sample sizes in ``text`` ("20000,200000").

    Raises :class:`UsageError` naming the parameter ``warm_start``.
    """
    if not isinstance(text, str):
        raise UsageError(
            f"warm_start must be none, auto or sample sizes such as 20000,200000, got {text!r}.",
            parameter="warm_start",
        )
    word = text.strip().lower()
    if word in ("none", "auto"):
        return word
    parts = [part.strip().replace("_", "") for part in word.split(",")]
    if not all(part.isdigit() and int(part) > 0 for part in parts):
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise UsageError(
            f"warm_start must be none, auto or increasing sample sizes such as 20000,200000, got {shown!r}.",
            parameter="warm_start",
        )
    sizes = [int(part) for part in parts]
    if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)):
        raise UsageError(
            f"warm_start sample sizes must increase from stage to stage, got {text.strip()!r}.",
            parameter="warm_start",
        )
    return sizes


def choose_schedule(
    schedule: str, n_rows: int, n_parameters: int, *, holds_out: bool = False
) -> tuple[str | list[int], str]:
    """The schedule a run follows and why, in words for the run header.

    ``auto`` (the default): :func:`auto_sizes`; the plain run when they are empty, or when
    ``holds_out`` (chunks of the file held out for validation, which a sample could contain).
    """
    parsed = parse_schedule(schedule)
    if parsed == "none":
        return parsed, "none, as asked: the notes' run, L-BFGS on the full data from the start"
    if parsed != "auto":
        return parsed, f"the sample sizes asked for ({schedule.strip()})"
    if holds_out:
        return "none", "auto chose none because validation_fraction holds chunks of the file out"
    ratio = n_rows / max(1, n_parameters)
    counts = f"{_ratio(ratio)} rows per parameter ({n_rows:,} rows, {n_parameters:,} parameters)"
    threshold = f"{AUTO_MIN_ROWS_PER_PARAMETER} rows per parameter"
    sizes = auto_sizes(n_rows, n_parameters)
    if not sizes:
        return "none", (
            f"auto chose none because the data holds {counts}, not above {threshold}, and a "
            f"twentieth of it is below {AUTO_MIN_SAMPLE_ROWS} rows: too small a sample to learn from"
        )
    stages = f"{len(sizes)} sample stage(s) of {', '.join(f'{s:,}' for s in sizes)} rows"
    if ratio <= AUTO_MIN_ROWS_PER_PARAMETER:
        return sizes, (
            f"auto chose {stages} (a twentieth and a fifth of the data) because the data holds "
            f"{counts}, not above {threshold}: iterations on a sample cost a fraction of a pass"
        )
    return sizes, (
        f"auto chose {stages} because the data holds {counts}, above {threshold}: the stages "
        "find the model's region in a few passes' worth of rows"
    )


def _ratio(ratio: float) -> str:
    """Rows per parameter as the header shows them: 304, 16.6, 0.03."""
    return f"{ratio:,.0f}" if ratio >= 50 else f"{ratio:,.1f}" if ratio >= 1 else f"{ratio:.2g}"


def auto_sizes(n_rows: int, n_parameters: int) -> list[int]:
    """``auto``'s sample sizes: above 25 rows per parameter, 5·p, then ×10 per stage while
    below m/10; up to it, m/20 and m/5 when m/20 ≥ 256 rows (empty: the plain run)."""
    if n_rows <= AUTO_MIN_ROWS_PER_PARAMETER * n_parameters:
        first, last = (n_rows // fraction for fraction in AUTO_SMALL_FRACTIONS)
        return [first, last] if first >= AUTO_MIN_SAMPLE_ROWS else []
    size = AUTO_ROWS_PER_PARAMETER * n_parameters
    sizes = [size]
    size *= AUTO_GROWTH
    while size * AUTO_LAST_FRACTION < n_rows:
        sizes.append(size)
        size *= AUTO_GROWTH
    return sizes


def stage_budget(max_iter: int, rows: int, n_rows: int) -> int:
    """A sample stage's iterations: ``max_iter``, at most 40 full evaluations' worth of rows."""
    return max(1, min(max_iter, -(-STAGE_BUDGET_FULL_EVALUATIONS * n_rows // rows)))


def plan_warm_start(
    schedule: str, layout: PatchLayout, n_parameters: int, max_iter: int, *, holds_out: bool = False
) -> WarmPlan:
    """The stages of ``schedule`` on the file ``layout`` describes.

    Sample sizes are rounded up to whole chunks; a size that would need every chunk is
    an error for a given list (it is not a sample) and ends ``auto``'s list.  With
    ``max_iter`` 0 there are no sample stages (nothing is trained).
    """
    parsed = parse_schedule(schedule)
    chosen, reason = choose_schedule(schedule, layout.n_rows, n_parameters, holds_out=holds_out)
    m = layout.n_rows
    unit = layout.chunk_rows or default_block_rows(layout)
    n_chunks = -(-m // unit)
    sizes = [] if chosen == "none" else chosen
    stages: list[Stage] = []
    last_count = 0
    for size in sizes if max_iter > 0 else []:
        count = chunks_for_rows(size, unit, m)
        if count >= n_chunks:
            if parsed == "auto":
                break
            raise UsageError(
                f"warm_start sample size {size:,} needs all {n_chunks:,} chunks of {unit:,} rows of "
                f"{layout.path} ({m:,} rows), so it is not a sample; give sizes below {m - unit + 1:,}.",
                parameter="warm_start",
            )
        if count <= last_count:
            continue  # rounds to the same chunks as the previous stage: nothing new to learn
        chunks = spread_chunks(n_chunks, count)
        rows = sample_rows(chunks, unit, m)
        stages.append(Stage(len(stages) + 1, rows, chunks, stage_budget(max_iter, rows, m)))
        last_count = count
    stages.append(Stage(len(stages) + 1, m, None, None))
    if parsed == "auto" and len(stages) == 1 and sizes:
        reason = "auto chose none because its first sample rounds to every chunk of the file"
    return WarmPlan(schedule=schedule.strip().lower(), stages=tuple(stages), chunk_rows=unit, reason=reason)


@dataclass(frozen=True)
class Beginning:
    """Where a run begins: the stage, whether the resumed checkpoint closed the stage
    before it (so the stage begins afresh from the checkpoint's point), and the first
    iteration of a stage being continued."""

    stage: int
    closed: bool = False
    first_iteration: int = 0


def where_to_begin(plan: WarmPlan, resumed: ResumePoint | None, stored: object, path: object) -> Beginning:
    """The stage (1-based) at which this run begins.

    A fresh run begins at stage 1.  A resumed run continues the stored stage, or begins
    the next one when the stored stage was done.  The stored schedule must be the same
    unless the checkpoint is already in the full-data stage (older files record none
    and count as a plain run there).
    """
    final = len(plan.stages)
    if resumed is None:
        return Beginning(1)
    if not stored:
        return Beginning(final)  # an older (or plain) checkpoint: the full data
    sizes, stage = (stored.get("stages"), stored.get("stage")) if isinstance(stored, dict) else (None, None)
    first = stored.get("stage_first_iteration", 0) if isinstance(stored, dict) else None
    if not (
        isinstance(sizes, list)
        and isinstance(stage, int)
        and 1 <= stage <= len(sizes)
        and isinstance(first, int)
        and 0 <= first <= resumed.state.iteration
    ):
        raise UsageError(
            f"{path}: the warm-start record in the model file is damaged; train afresh without resume.",
            parameter="warm_start",
        )
    if stage == len(sizes):  # in the full-data stage: the earlier stages no longer matter
        return Beginning(final, first_iteration=first)
    if sizes != plan.sizes:
        raise UsageError(
            f"{path}: cannot resume: it was trained with the warm-start stages {sizes[:8]} "
            f"(schedule {str(stored.get('schedule'))[:60]!r}), not {plan.sizes[:8]}; resume with "
            "the same warm_start or train afresh without resume.",
            parameter="warm_start",
        )
    if stored.get("stage_done"):
        return Beginning(stage + 1, closed=True)
    return Beginning(stage, first_iteration=first)


def stage_rules(stage: Stage, first_iteration: int, rules: StopRules) -> StopRules:
    """The stop rules of ``stage`` beginning at ``first_iteration`` (iterations count on
    over the stages; the stage's budget counts its own, named in the finish line)."""
    budget = rules.max_iter if stage.iterations is None else stage.iterations
    return dataclasses.replace(
        rules,
        max_iter=first_iteration + budget,
        first_iteration=first_iteration,
        counted=_counted(stage),
    )


def _counted(stage: Stage) -> str:
    """How a stage's finish line names its iterations."""
    if not stage.is_final:
        return f"iterations on the {stage.rows:,}-row sample"
    return "full-data iterations" if stage.number > 1 else "iterations"


def begin_stage(
    trainer: Trainer, x: np.ndarray, memory: int, before: tuple[LbfgsState, Progress] | None
) -> tuple[LbfgsState, Progress]:
    """A fresh L-BFGS state at ``x`` on the trainer's objective, continuing the counts.

    The iteration and evaluation counters, the history and the training time carry on
    from ``before`` (the previous stage's end); the correction pairs start empty, since
    they describe another objective.
    """
    try:
        state, progress = trainer.start(x, memory)
    except Interrupted as error:
        if before is None or trainer.save is None:
            raise
        # The previous stage's end was written: say so rather than "nothing was written".
        name = trainer.stop.signal_name or "a signal on another rank"
        raise mark_collective(
            Interrupted(f"stopped by {name} after iteration {before[0].iteration}; {trainer.resume_hint}")
        ) from error
    if before is not None:
        previous_state, previous_progress = before
        state.iteration = previous_state.iteration
        state.evaluations += previous_state.evaluations
        previous_progress.current = progress.current
        progress = previous_progress
    return state, progress


@dataclass(frozen=True)
class SampleFile:
    """The file the samples are drawn from: its path, the compute type the blocks are
    delivered in, whether HDF5 locks it, and the dataset."""

    path: object
    dtype: type
    file_locking: bool | None
    dataset: str


@dataclass
class SampleStages:
    """The sample stages of a run, built from what the session provides.

    ``context`` is the run's shared :class:`RunContext` (ranks, monitor, stop flag);
    ``build_objective(source)`` makes the objective over a block source (the session's
    scheme choice: in-core holds a sample that fits); ``make_trainer(objective, rules,
    stage, first_iteration)`` a :class:`Trainer` whose records carry the stage and whose
    checkpoints record it; ``save_stage_end(objective, state, progress, stage,
    first_iteration)`` writes the checkpoint that closes a stage (a collective).
    """

    plan: WarmPlan
    source: SampleFile
    context: RunContext
    rules: StopRules
    memory: int
    build_objective: Callable
    make_trainer: Callable
    save_stage_end: Callable

    def run(
        self,
        first: int,
        x0: np.ndarray,
        resumed: ResumePoint | None,
        resumed_first_iteration: int,
        resumed_closed: bool,
    ) -> tuple[LbfgsState, Progress] | None:
        """Run the sample stages from stage ``first``; returns the state where the last ended.

        With ``resumed`` in stage ``first`` (not ``resumed_closed``), that stage continues exactly
        where it stopped (it began at ``resumed_first_iteration``); a closed stage's
        checkpoint hands its point to the next.  Without ``resumed`` the first stage
        begins at ``x0``.  Returns ``resumed``'s state and progress unchanged when no
        sample stage is left, and None when there is none and nothing was resumed.
        """
        carried = (resumed.state, resumed.progress) if resumed is not None else None
        for stage in self.plan.stages[:-1]:
            if stage.number < first:
                continue
            if resumed is not None and stage.number == first and not resumed_closed:
                carried = self._run_stage(stage, carried, resumed_first_iteration, continuing=True)
            else:
                start = carried[0].iteration if carried is not None else 0
                carried = self._run_stage(stage, carried, start, continuing=False, x0=x0)
        return carried

    def _run_stage(
        self,
        stage: Stage,
        carried: tuple[LbfgsState, Progress] | None,
        first_iteration: int,
        *,
        continuing: bool,
        x0: np.ndarray | None = None,
    ) -> tuple[LbfgsState, Progress]:
        comm, monitor = self.context.comm, self.context.monitor
        mine = rank_part(stage.chunks, comm.rank, comm.size)
        monitor.on_message(
            f"warm start: stage {stage.number} of {len(self.plan.stages)}: {stage.rows:,} rows in "
            f"{len(stage.chunks)} chunks spread over the file, at most {stage.iterations} iterations"
        )
        with contextlib.ExitStack() as stack:
            sample = stack.enter_context(
                ChunkSample(
                    self.source.path,
                    mine,
                    chunk_rows=self.plan.chunk_rows,
                    dtype=self.source.dtype,
                    file_locking=self.source.file_locking,
                    dataset=self.source.dataset,
                )
            )
            counted = CountedBlocks(sample, monitor, self.context.stop, abandon=comm.size == 1)
            objective = self.build_objective(counted)
            close = getattr(objective, "close", None)
            if close is not None:
                stack.callback(close)
            rules = stage_rules(stage, first_iteration, self.rules)
            trainer = self.make_trainer(objective, rules, stage, first_iteration)
            if continuing:
                state, progress = carried
            else:
                x = x0 if carried is None else carried[0].x
                state, progress = begin_stage(trainer, x, self.memory, carried)
            trainer.run(state, progress)
            monitor.on_message(
                f"warm start: stage {stage.number} ended at iteration {state.iteration} "
                f"({state.finished or 'stopped'}); J on its sample {state.f:.6g}"
            )
            self.save_stage_end(objective, state, progress, stage, first_iteration)
        return state, progress
