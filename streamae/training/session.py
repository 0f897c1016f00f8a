"""Training and gradient checking as library functions (the CLI calls these; no click here).

``train`` runs one :class:`_Session` through its phases: open the data (this process's
share of it under MPI, in one call to :func:`streamae.io.trainingdata.open_training_data`)
and read a checkpoint; plan the stages (the stop rules, the warm start, where a resumed run
begins); check the values once; run L-BFGS on the streamed objective
(:mod:`streamae.training.loop`), stage after stage, with checkpoints along the way
(:mod:`streamae.training.checkpoint`); write the model.  What a user sees while it runs goes
through a :class:`TrainingMonitor`, so the CLI, a notebook and a batch job can each show
progress their own way.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamae.compute.compilecache import compile_notice
from streamae.compute.lbfgs import LbfgsState, StopRules
from streamae.compute.objective import Evaluation, StreamedObjective, check_values
from streamae.compute.parameters import HYPERPARAMETER_NAMES, Hyperparameters, initialize, parameter_count
from streamae.compute.schemes import TwoPassObjective, make_objective
from streamae.errors import DataError, Interrupted, MissingInputError, UsageError
from streamae.io.atomic import OutputClaim, check_distinct_outputs, check_output_path, claim_output
from streamae.io.modelfile import Model, load_model, write_model
from streamae.io.patchfile import ArrayPatches
from streamae.io.trainingdata import HeldOutRequest, ReadRequest, TrainingData, open_training_data
from streamae.options import (
    TRAIN,
    TrainOptions,
    again_with,
    dataset_path,
    info_settings,
    said,
    setting,
)
from streamae.runtime.mpi import (
    Communicator,
    SingleProcess,
    abort_on_local_error,
    agreed_phase,
    mark_collective,
    one_rank_reports,
)
from streamae.runtime.process import configure
from streamae.runtime.signals import StopFlag, StopRequested, stop_on_signals
from streamae.runtime.threads import apply_threads, resolve_threads
from streamae.training.checkpoint import (
    CheckpointPolicy,
    Progress,
    ResumePoint,
    check_compatible,
    check_same_values,
    check_state_reproduced,
    resume_point,
)
from streamae.training.likely_mistakes import data_warnings, resume_warnings
from streamae.training.loop import CountedBlocks, Outputs, RunContext, Trainer, TrainingMonitor
from streamae.training.resume import Settings, resolve_settings, stored_settings
from streamae.training.runlog import format_header, run_header
from streamae.training.stopping import choose_tolerance
from streamae.training.validation import (
    HeldOutObjective,
    Validation,
    kept_iterate,
    parse_validation,
    refuse_state_with_early_stop,
    refuse_training_rows,
)
from streamae.training.warmstart import (
    Beginning,
    SampleFile,
    SampleStages,
    Stage,
    WarmPlan,
    begin_stage,
    plan_warm_start,
    stage_rules,
    where_to_begin,
)

__all__ = ["TrainingMonitor", "train"]


def warm_up_kernels(comm: Communicator, n_visible: int, hyper: Hyperparameters, dtype: type) -> None:
    """Collective: compile the kernels once into Numba's cache before all ranks use them.

    N ranks compiling the same functions into one cache directory at once waste N times
    the CPU and race on the cache files.  So rank 0 compiles first, on a tiny block;
    then the first rank of every other node does the same, which loads the cached code
    when NUMBA_CACHE_DIR is shared and compiles once per node when it is node-local;
    then everyone else loads it.  Waiting ranks sleep in the barriers.
    """
    if comm.size == 1:
        return  # compiled on first use; nothing to coordinate

    def compile_on_a_tiny_block() -> None:
        rows = np.full((8, n_visible), 0.5, dtype=dtype)
        tiny = ArrayPatches(rows)
        check_values(tiny, hyper, "<warm-up>")
        theta = initialize(n_visible, hyper.hidden, 0)
        with contextlib.ExitStack() as stack:
            objective = TwoPassObjective(tiny, hyper, n_visible=n_visible, dtype=dtype)
            _close_when_done(stack, objective)
            objective(theta)

    if comm.rank == 0:
        compile_on_a_tiny_block()
    comm.barrier()
    if comm.rank != 0 and comm.local_rank() == 0:
        compile_on_a_tiny_block()
    comm.barrier()


def _close_when_done(stack: contextlib.ExitStack, objective: StreamedObjective) -> None:
    """Stop the objective's worker threads when ``stack`` closes (if it has any)."""
    close = getattr(objective, "close", None)
    if close is not None:
        stack.callback(close)


def train(
    data: str | os.PathLike,
    output: str | os.PathLike | None = None,
    options: TrainOptions | None = None,
    *,
    monitor: TrainingMonitor | None = None,
    comm: Communicator | None = None,
    stop_signals: bool = True,
    stop: StopFlag | None = None,
    command: str | None = None,
    **values: object,
) -> Model:
    """Train the sparse autoencoder on the patch file ``data``; returns the model.

    Writes the model to ``output`` (atomically) when given.  The options come from
    ``options`` (a frozen :class:`~streamae.options.TrainOptions`) and/or keyword
    arguments, checked against :data:`streamae.options.TRAIN`: ``hidden``, ``rho``,
    ``beta``, ``lam`` (λ), ``max_iter``, ``decoder``, ``activation`` (the hidden
    layer's "sigmoid" or "tanh": ρ then targets the mean of (a2 + 1)/2), ``dtype``, ``chunk_rows``,
    ``threads``, ``seed``, ``grad_tol``, ``progress_tol``, ``lbfgs_pairs`` (L-BFGS
    correction pairs kept), ``resume``, ``checkpoint_every``, ``checkpoint_minutes``,
    ``scheme``, ``memory_budget`` (bytes, or text such as ``"8G"``), ``file_locking``,
    ``log`` (one JSON object per iteration), ``force``, ``dataset`` (the 2-D dataset of
    ``data`` to train on, default ``/patches``), the held-out evaluation's
    ``validation``/``validation_fraction``/``validate_every``/``early_stop`` and
    ``warm_start``.  A wrong value raises
    :class:`~streamae.errors.UsageError` naming the parameter.

    Checkpoints: the model file is rewritten every ``checkpoint_every`` iterations (0:
    only at the end; None: every 10, or less often when writing one would take more
    than 5% of the time since the last) and every ``checkpoint_minutes`` minutes; ``resume=True`` continues
    from the model file at ``output``, exactly where it stopped (refused if the data or
    the hyperparameters differ).  ``stop_signals`` catches SIGTERM, SIGINT and SIGUSR1
    while training: the run stops at the last completed iteration, writes a checkpoint
    and raises :class:`~streamae.errors.Interrupted`.  ``stop`` is the flag the handlers
    set (pass one to stop a run from another thread).  ``file_locking=False`` opens the
    data without HDF5 file locks (NFS, Lustre).  ``comm`` is the group of processes
    (default: this one alone); under MPI every rank calls ``train`` alike, and an error
    every rank raises is marked ``silent`` on all but rank 0
    (:func:`streamae.runtime.mpi.is_silent`), so it is reported once.

    Held-out evaluation (:mod:`streamae.training.validation`): ``validation`` is a file
    ``FILE[:DATASET]`` of rows never trained on, or ``validation_fraction`` holds
    round(fraction × rows) rows of ``data`` out of training (whole blocks, one split);
    their J terms are evaluated at the start and every ``validate_every`` iterations and stored in the model's
    ``validation`` history.  ``early_stop=K`` stops when the held-out J has not improved
    for K validations and keeps the best parameters (the model then holds no optimizer
    state: it is finished, not resumable).

    ``warm_start``: ``"none"`` (the notes' run), sample sizes such as ``"20000,200000"``
    or ``"auto"``: L-BFGS first runs on fair samples of the file (whole chunks spread
    over it), each stage starting from the previous one's parameters, and then on the
    full data with ``max_iter`` and the tolerances (see :mod:`streamae.training.warmstart`).

    Resuming takes the checkpoint's settings: with ``resume=True`` every setting not given
    (not among the keywords, or left at its default in ``options``) is the one the
    checkpoint was trained with (:mod:`streamae.training.resume`); a given one must agree
    where changing it would change the objective.  The finished model holds the weights,
    the history and what describes them (its data's normalisation among them); the
    L-BFGS state is written in checkpoints only and dropped at the end unless
    ``keep_state`` (a finished model without it cannot be resumed).  ``command`` is the
    command line the run header records (default: this process's).
    """
    configure()  # the process set up for the kernels, unless the caller did it (idempotent)
    if "memory" in values:  # the L-BFGS pairs' old name
        values["lbfgs_pairs"] = values.pop("memory")
    comm = comm or SingleProcess()
    with one_rank_reports(comm):
        o, settings = _resolve_options(output, options, values)
        session = _Session(
            data, output, o, monitor or TrainingMonitor(), comm, stop or StopFlag(), settings, command
        )
        return session.run(stop_signals)


def _resolve_options(
    output: str | os.PathLike | None, options: TrainOptions | None, values: dict[str, object]
) -> tuple[TrainOptions, Settings]:
    """The options in effect: on resume, the settings not given come from the checkpoint."""
    checked = TrainOptions.build(options, values)  # every value checked before the file is read
    given = {name: value for name, value in values.items() if value is not None}
    if options is not None:  # a frozen options object: what differs from the defaults was given
        given = {
            **{k: v for k, v in options.as_dict().items() if v != TRAIN[k].default and v is not None},
            **given,
        }
    stored = None
    if checked.resume and output is not None and Path(output).is_file():
        try:
            stored = stored_settings(output)
        except Exception:  # noqa: BLE001 - an unreadable file is reported by the opening checks
            stored = None
    settings = resolve_settings(given, stored, output)
    if not settings.from_checkpoint:
        return checked, settings
    return checked.replace(**{name: settings[name] for name in settings.from_checkpoint}), settings


class _Session:
    """One run of :func:`train`, phase by phase, with its state on the object.

    The phases, in order: :meth:`open` (the outputs claimed, the data opened, a
    checkpoint read), :meth:`plan` (the stop rules, the warm-start stages and where a
    resumed run begins among them), :meth:`check` (the values scanned, a resumed run's
    data compared, warnings, the held-out evaluation set up), :meth:`run_stages` (the
    sample stages, then the full data) and :meth:`write` (the model).  Every rank runs
    every phase; a phase that may fail on some ranks only runs agreed
    (:func:`~streamae.runtime.mpi.agreed_phase`).
    """

    def __init__(
        self,
        data: str | os.PathLike,
        output: str | os.PathLike | None,
        options: TrainOptions,
        monitor: TrainingMonitor,
        comm: Communicator,
        stop: StopFlag,
        settings: Settings | None = None,
        command: str | None = None,
    ) -> None:
        self.data = Path(data)
        self.output = output
        self.o = options
        self.monitor = monitor
        self.comm = comm
        self.stop = stop
        self.settings = settings
        self.command = command
        self.hyper = Hyperparameters(**{name: getattr(options, name) for name in HYPERPARAMETER_NAMES})
        self.dtype = np.dtype(options.dtype).type
        self.policy = CheckpointPolicy(every=options.checkpoint_every, minutes=options.checkpoint_minutes)
        # Set by the phases, in this order.
        self.training: TrainingData | None = None
        self.claim: OutputClaim | None = None
        self.resumed: ResumePoint | None = None
        self.threads = 1
        self.rules: StopRules | None = None
        self.plan: WarmPlan | None = None
        self.beginning: Beginning | None = None
        self.header: dict | None = None
        self.tolerance_reason = ""
        self.counted: CountedBlocks | None = None
        self.held_out: Validation | None = None
        self.info: dict = {}
        self.fingerprint: dict = {}
        self.trainers: list[Trainer] = []  # every stage's, the current one last
        self.log_begun = False  # later stages append to the log the first began
        self.header_due = True  # the run header opens this call's part of the log

    def run(self, stop_signals: bool) -> Model:
        """Every phase, with signal handling and every file closed at the end."""
        # A collective (MPI_Comm_split_type): before the agreed phase, which must hold none.
        local_ranks = self.comm.local_size()  # also caches local_rank() for the warm-up
        with (
            abort_on_local_error(self.comm),
            stop_on_signals(self.stop) if stop_signals else contextlib.nullcontext(self.stop),
            contextlib.ExitStack() as stack,
        ):
            with agreed_phase(self.comm):
                self.open(stack)
                self.threads = resolve_threads(self.o.threads, local_ranks=local_ranks)
                apply_threads(self.threads)
            if self.comm.size > 1:
                self.resumed = self.comm.broadcast(self.resumed)
            with agreed_phase(self.comm):
                self.plan_stages()
            self.announce()
            self.check(stack)
            model = self.run_stages(stack)
            self.write(model)
        self.monitor.on_finish(model, model.info.get("finished", ""))
        return model

    # --- open the data ------------------------------------------------------------------

    def open(self, stack: contextlib.ExitStack) -> None:
        """Claim the outputs (rank 0), open this rank's share of the data, read the checkpoint."""
        o, comm = self.o, self.comm
        held = _held_out_request(o, self.data)
        if o.resume and self.output is None:
            raise UsageError(
                f"{setting('resume', True)} needs a model file to continue from ({said('output')}).",
                parameter="resume",
            )
        if comm.rank == 0:
            self.claim = _claim_outputs(self.data, self.output, o)
        read = ReadRequest(
            dtype=self.dtype,
            chunk_rows=o.chunk_rows,
            file_locking=o.file_locking,
            rank=comm.rank,
            size=comm.size,
        )
        self.training = open_training_data(self.data, dataset_path(o.dataset), read, held, stack)
        if o.resume and comm.rank == 0:
            previous = load_model(self.output)
            check_compatible(
                previous, self.output, options=o.as_dict(), fingerprint=self.training.layout.fingerprint
            )
            self.resumed = resume_point(previous, self.output)

    # --- plan the stages ----------------------------------------------------------------

    def plan_stages(self) -> None:
        """The stop rules, the warm-start stages, and the stage at which this run begins."""
        layout = self.training.layout
        n_parameters = parameter_count(layout.n_features, self.o.hidden)
        tolerance, self.tolerance_reason = choose_tolerance(self.o.tolerance, layout.n_rows, n_parameters)
        self.o = o = self.o.replace(tolerance=tolerance)  # stored, and taken again on resume
        self.rules = StopRules(
            max_iter=o.max_iter,
            grad_tol=o.grad_tol,
            progress_tol=o.progress_tol,
            tolerance=o.tolerance,
            window=o.tolerance_window,
        )
        holds_out = o.validation_fraction is not None
        self.plan = plan_warm_start(o.warm_start, layout, n_parameters, o.max_iter, holds_out=holds_out)
        stored = self.resumed.warm_start if self.resumed is not None else None
        self.beginning = where_to_begin(self.plan, self.resumed, stored, self.output)

    def announce(self) -> None:
        """The run header, the resume notes and the data; the kernels compiled once."""
        o, layout = self.o, self.training.layout
        effective = {
            **{k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in o.as_dict().items()},
            "chunk_rows": self.training.block_rows,
            "output": None if self.output is None else os.fspath(self.output),
        }
        self.header = run_header(
            settings=effective,
            data=layout.fingerprint,
            threads=self.threads,
            ranks=self.comm.size,
            command=self.command,
        )
        self.header["warm_start"] = self.plan.reason  # which schedule runs, "chosen because ..."
        self.header["tolerance"] = self.tolerance_reason
        self.monitor.on_message(format_header(self.header))
        for note in self.settings.notes if self.settings is not None else ():
            self.monitor.on_message(f"resume: {note}")
        warm_up_kernels(self.comm, layout.n_features, self.hyper, self.dtype)
        self.monitor.on_message(
            f"{self.data}: {layout.n_rows:,} patches of {layout.n_features} values "
            f"({layout.dtype}), {o.hidden} {o.activation} hidden units, {o.dtype}"
            + (f", {self.comm.size} MPI ranks" if self.comm.size > 1 else "")
        )
        for note in self.training.notes:
            self.monitor.on_message(note)

    # --- check or resume ----------------------------------------------------------------

    def check(self, stack: contextlib.ExitStack) -> None:
        """Scan the values (training, held out) once; compare a resumed run's data; warn."""
        training, resumed = self.training, self.resumed
        self.counted = CountedBlocks(training.source, self.monitor, self.stop, abandon=self.comm.size == 1)
        self.counted.label = "checking values"
        try:
            summary = check_values(self.counted, self.hyper, str(self.data), self.comm)
            if resumed is not None:
                check_same_values(resumed, self.output, summary)
            if training.held_out is not None:
                check_values(training.held_out, self.hyper, training.held_name, self.comm)
        except DataError as error:
            raise mark_collective(error) from None  # found on the reduced summary: all ranks
        except StopRequested:  # one process only: under MPI a pass is never abandoned
            raise Interrupted(
                f"stopped by {self.stop.signal_name} while checking the values; nothing new was written."
            ) from None
        self.counted.label = "J and gradient"
        warnings = data_warnings(self.hyper, training.layout.n_features, summary.minimum, summary.maximum)
        if resumed is not None:
            warnings += resume_warnings(self.o.max_iter, resumed.state.iteration)
        for text in warnings:
            self.monitor.on_message(f"warning: {text}")
        notice = compile_notice()  # said before the wait, and only when the cache is cold
        if notice is not None:
            self.monitor.on_message(notice)
        if training.policy is not None:
            self.monitor.on_message(
                f"reading {training.policy.block_rows:,} rows per read; {training.policy.reason}"
            )
        self.held_out = self._validation(stack)
        self.fingerprint = {**training.layout.fingerprint, "range": [summary.minimum, summary.maximum]}
        self.info = self._stored_info()

    def _validation(self, stack: contextlib.ExitStack) -> Validation | None:
        """The held-out evaluation hook (None without held-out rows)."""
        training, o = self.training, self.o
        if training.held_out is None:
            return None
        evaluator = HeldOutObjective(
            training.held_out,
            self.hyper,
            n_visible=training.layout.n_features,
            dtype=self.dtype,
            comm=self.comm,
        )
        _close_when_done(stack, evaluator)
        self.monitor.on_message(
            f"held out: {evaluator.n_rows:,} rows of {training.held_name}, evaluated every "
            f"{o.validate_every} iteration(s)"
            + (
                f", early stop after {o.early_stop} without an improvement of "
                f"{o.early_stop_min_improvement:g} relative"
                if o.early_stop
                else ""
            )
        )
        return Validation(
            evaluator,
            every=o.validate_every,
            early_stop=o.early_stop,
            min_improvement=o.early_stop_min_improvement,
        )

    def _stored_info(self) -> dict:
        """The model's ``info``: the settings a resume takes when not given them (the
        options stored under ``info/``, training/resume.py) and how the run was spread."""
        info = {
            **info_settings(TRAIN, self.o.as_dict()),
            "ranks": self.comm.size,
            "chunk_rows": self.training.block_rows,  # as used (asked_chunk_rows: as asked)
            "threads": self.threads,
        }
        record = self.training.held_record
        if record is not None:
            info["validation"] = {**record, "every": self.o.validate_every, "early_stop": self.o.early_stop}
        return info

    # --- run ----------------------------------------------------------------------------

    def run_stages(self, stack: contextlib.ExitStack) -> Model:
        """The sample stages left, then the full data; returns the model at the end."""
        o, resumed, beginning = self.o, self.resumed, self.beginning
        self.log_begun = resumed is not None
        if resumed is not None:
            _note_resume(
                self.monitor, resumed, self.comm.size, self.training.block_rows, self.output, o.max_iter
            )
        x0 = initialize(self.training.layout.n_features, o.hidden, o.seed)
        if self.held_out is not None and resumed is None:
            self.held_out.record(0, x0)  # the starting point: the baseline to improve on
        elif self.held_out is not None:
            self.held_out.restore(resumed.validation, resumed.state.iteration, resumed.state.x)
        samples = SampleStages(
            self.plan,
            source=SampleFile(self.data, self.dtype, o.file_locking, self.training.layout.dataset),
            context=RunContext(comm=self.comm, monitor=self.monitor, stop=self.stop, policy=self.policy),
            rules=self.rules,
            memory=o.lbfgs_pairs,
            build_objective=self.objective,
            make_trainer=self.trainer,
            save_stage_end=self.save_stage_end,
        )
        carried = samples.run(beginning.stage, x0, resumed, beginning.first_iteration, beginning.closed)
        return self._run_final(stack, x0, carried)

    def _run_final(self, stack: contextlib.ExitStack, x0: np.ndarray, carried) -> Model:
        """The last stage: the full data, the user's max_iter and tolerances."""
        final, beginning, resumed = self.plan.stages[-1], self.beginning, self.resumed
        if len(self.plan.stages) > 1:
            self.monitor.on_message(
                f"warm start: stage {final.number} of {final.number}: all {final.rows:,} rows"
            )
        objective = self.objective(self.counted)
        _close_when_done(stack, objective)
        continuing = resumed is not None and beginning.stage == final.number and not beginning.closed
        first = beginning.first_iteration if continuing else (carried[0].iteration if carried else 0)
        trainer = self.trainer(objective, stage_rules(final, first, self.rules), final, first)
        if continuing:
            state, progress = self._continue(objective)
        else:
            start = x0 if carried is None else carried[0].x
            state, progress = begin_stage(trainer, start, self.o.lbfgs_pairs, carried)
        trainer.run(state, progress)
        record = self.plan.record(final.number, first, bool(state.finished))
        model = self.model(state, progress, objective, record, keep_state=self.o.keep_state)
        self.monitor.on_message(trainer.time_split.summary())
        held_out = self.held_out
        if held_out is not None and held_out.stopped_early:
            model = _best_model(model, held_out, objective)
            self.monitor.on_message(
                f"early stop: kept the parameters of iteration {held_out.best_iteration} "
                f"(held-out J {held_out.best_cost:.6g}), the best of "
                f"{len(held_out.history['cost'])} validations"
            )
        return model

    def _continue(self, objective: StreamedObjective) -> tuple[LbfgsState, Progress]:
        """The checkpoint's state and progress, once J and ∇J at its point are reproduced."""
        state, progress = self.resumed.state, self.resumed.progress
        try:
            # J and ∇J are reduced numbers: every rank sees the same and raises alike.
            check_state_reproduced(state, objective(state.x), self.output)
        except UsageError as error:
            raise mark_collective(error) from None
        except StopRequested:
            raise Interrupted(
                f"stopped by {self.stop.signal_name} while checking the checkpoint; nothing new was written."
            ) from None
        return state, progress

    def objective(self, source) -> StreamedObjective:
        """The objective over ``source`` by the scheme asked (a stage's sample or the data)."""
        built = make_objective(
            source,
            self.hyper,
            n_visible=self.training.layout.n_features,
            dtype=self.dtype,
            comm=self.comm,
            scheme=self.o.scheme,
            memory_budget=self.o.memory_budget,
        )
        self.monitor.on_message(f"scheme: {built.scheme}, {_scheme_reason(built.reason, self.settings)}")
        return built

    def trainer(
        self, objective: StreamedObjective, rules: StopRules, stage: Stage, first_iteration: int
    ) -> Trainer:
        """The trainer of one stage: its records carry the stage, its checkpoints record it."""
        last = stage is self.plan.stages[-1]
        trainer = Trainer(
            objective,
            rules,
            RunContext(comm=self.comm, monitor=self.monitor, stop=self.stop, policy=self.policy),
            Outputs(
                save=self._checkpoint(objective, self.plan.record(stage.number, first_iteration, False)),
                log=self.o.log,
                append_log=self.log_begun,
                resume_hint=(
                    f"the checkpoint {self.output} holds it; continue with {again_with(resume=True)} "
                    "(the other settings come from the checkpoint)."
                ),
                header=self.header if self.header_due else None,
            ),
            tags={"stage": stage.number, "sample_rows": stage.rows},
            # Held-out evaluation (and early stopping) belongs to the full-data stage.
            after_iteration=self.held_out.after_iteration if self.held_out is not None and last else None,
        )
        self.trainers.append(trainer)
        self.log_begun = True
        self.header_due = False
        return trainer

    def save_stage_end(
        self, objective, state: LbfgsState, progress: Progress, stage: Stage, first_iteration: int
    ) -> None:
        """Write the checkpoint that closes a sample stage (a collective)."""
        with agreed_phase(self.comm):
            save = self._checkpoint(objective, self.plan.record(stage.number, first_iteration, True))
            if save is not None and self.comm.rank == 0:
                save(state, progress)

    def _checkpoint(self, objective: StreamedObjective, record: dict) -> _Checkpoint | None:
        return _Checkpoint(self, objective, record) if self.output is not None else None

    # --- write the model ----------------------------------------------------------------

    def model(
        self,
        state: LbfgsState,
        progress: Progress,
        objective: StreamedObjective,
        record: dict,
        *,
        keep_state: bool,
    ) -> Model:
        """The model file's contents at ``state``: weights, history, ρ̂, info, and the optimizer
        state when ``keep_state`` (checkpoints always; a finished model only when asked)."""
        current: Evaluation = progress.current
        info = {
            **self.info,
            "scheme": objective.scheme,
            "warm_start": record,
            "time_split": self.trainers[-1].time_split.as_info(),
        }
        description, arrays = self.training.normalization
        return Model(
            **_split(state.x, objective.n_visible, objective.n_hidden),
            hyper=objective.hyper,
            patch_shape=self.training.layout.patch_shape,
            data=self.fingerprint,
            iterations=state.iteration,
            history={name: np.asarray(values) for name, values in progress.history.items()},
            rho_hat=current.rho_hat,
            optimizer=state.to_arrays() if keep_state else None,
            normalization=description,
            normalization_arrays=arrays,
            info={
                **info,
                "finished": state.finished,
                **_terms(current),
                "seconds": progress.seconds,
                "evaluations": state.evaluations,
            },
            validation=self.held_out.arrays() if self.held_out is not None else {},
        )

    def write(self, model: Model) -> None:
        """Write the finished model (rank 0; a collective)."""
        with agreed_phase(self.comm):
            if self.output is not None and self.comm.rank == 0:
                # The opening checks ran already; replacing our own checkpoint is expected.  Read
                # back before it replaces anything: never a model info/export/--resume refuse.
                write_model(
                    self.output, model, force=True, inputs=(self.data,), claim=self.claim, verify=True
                )


@dataclass
class _Checkpoint:
    """The trainer's ``save``: writes the checkpoint of a state of ``objective``'s stage."""

    session: _Session
    objective: StreamedObjective
    record: dict

    def __call__(self, state: LbfgsState, progress: Progress) -> str:
        session = self.session
        model = session.model(state, progress, self.objective, self.record, keep_state=True)
        write_model(session.output, model, force=True, inputs=(session.data,), claim=session.claim)
        return str(session.output)


def _terms(current: Evaluation) -> dict:
    """J and its three terms at the current point, for the model's info."""
    return {
        "cost": current.cost,
        "reconstruction": current.reconstruction,
        "weight_decay": current.weight_decay,
        "sparsity": current.sparsity,
    }


def _held_out_request(o: TrainOptions, data: str | os.PathLike | None = None) -> HeldOutRequest | None:
    """The held-out rows the options ask for, checked against each other (None: none)."""
    if o.validation is not None and o.validation_fraction is not None:
        raise UsageError(
            "validation and validation_fraction both choose the held-out rows; give one of them.",
            parameter="validation_fraction",
        )
    refuse_state_with_early_stop(o.keep_state, o.early_stop)
    if o.validation is None and o.validation_fraction is None:
        for name in ("early_stop", "validate_every"):  # neither means anything without held-out data
            if getattr(o, name) != TRAIN[name].default:
                raise UsageError(
                    f"{name} needs held-out data; give {said('validation')} or "
                    f"{said('validation_fraction')} too.",
                    parameter=name,
                )
        return None
    if o.validation_fraction is not None:
        if o.warm_start.strip().lower() not in ("none", "auto"):  # auto is none then (warmstart.py)
            # A stage's sample is drawn from every chunk of the file, held-out ones too.
            raise UsageError(
                "warm_start cannot be combined with validation_fraction (a stage's sample could "
                "hold held-out rows); give the held-out rows as a separate validation file.",
                parameter="warm_start",
            )
        return HeldOutRequest(fraction=o.validation_fraction, seed=o.seed)
    dataset = dataset_path(o.dataset)
    path, held_dataset = parse_validation(o.validation, dataset)
    if data is not None:
        refuse_training_rows(path, dataset_path(held_dataset), data, dataset)
    return HeldOutRequest(file=path, dataset=dataset_path(held_dataset))


def _claim_outputs(data: Path, output: str | os.PathLike | None, o: TrainOptions) -> OutputClaim | None:
    """Check the model file and the log as outputs (rank 0); the model file's claim."""
    check_distinct_outputs({"output": output, "log": o.log})
    claim = None
    if output is not None:
        if o.resume and not Path(output).exists():
            raise MissingInputError(
                f"{output}: no such model file to resume from; train without {setting('resume', True)} first."
            )
        # Resuming replaces the checkpoint it continues from: that is the point of it.
        claim = claim_output(output, force=o.force or o.resume, inputs=(data,))
    if o.log is not None:
        # The log follows the rules of every output; resuming appends to it.
        check_output_path(o.log, force=o.force or o.resume, inputs=(data,))
    return claim


def _scheme_reason(reason: str, settings: Settings | None) -> str:
    """Why the scheme runs: chosen (and why), taken from the checkpoint, or asked for."""
    if reason != "asked for":
        return f"chosen because {reason}"
    if settings is not None and "scheme" in settings.from_checkpoint:
        return "the checkpoint's (pass scheme to choose again)"
    return "as asked"


def _note_resume(
    monitor: TrainingMonitor,
    resumed: ResumePoint,
    ranks: int,
    block_rows: int,
    output: object,
    max_iter: int | None = None,
) -> None:
    """Tell the monitor where training continues (up to ``max_iter``), and when it will not be exact."""
    hook = getattr(monitor, "on_resume", None)  # newer than some monitors
    if hook is not None:
        hook(resumed.state.iteration, max_iter)
    monitor.on_message(f"resuming from {output} at iteration {resumed.state.iteration}")
    changed = []
    if resumed.ranks is not None and resumed.ranks != ranks:
        changed.append(f"{resumed.ranks} MPI ranks before, {ranks} now")
    if resumed.chunk_rows is not None and resumed.chunk_rows != block_rows:
        changed.append(f"{resumed.chunk_rows} rows per block before, {block_rows} now")
    if changed:
        monitor.on_message(
            "note: " + "; ".join(changed) + ": sums are added in another order, so the "
            "continuation agrees with an uninterrupted run to rounding, not bit for bit"
        )


def _best_model(model: Model, held_out: Validation, objective: StreamedObjective) -> Model:
    """``model`` with the best held-out parameters in place of the last ones (collective).

    ρ̂ is recomputed at those parameters over the training rows (one forward pass on
    every rank); the optimizer state belongs to the last point, so it is dropped.
    """
    best = held_out.best_theta
    model.rho_hat, kept = kept_iterate(objective, best)  # J and |∇J| of the point kept
    for name, values in _split(best, objective.n_visible, objective.n_hidden).items():
        setattr(model, name, values)
    model.optimizer = None
    model.info = {
        **model.info,
        **kept,
        "best_iteration": held_out.best_iteration,
        "best_validation_cost": held_out.best_cost,
        "kept": "the parameters of the best held-out J (early stop)",
    }
    return model


def _split(theta: np.ndarray, n_visible: int, n_hidden: int) -> dict[str, np.ndarray]:
    from streamae.compute.parameters import unpack

    params = unpack(theta, n_visible, n_hidden)
    return {name: getattr(params, name).copy() for name in ("W1", "W2", "b1", "b2")}
