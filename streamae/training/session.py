"""Training and gradient checking as library functions (the CLI calls these; no click here).

``train`` opens the patch file (this process's share of it under MPI), checks the
values once, runs L-BFGS on the streamed objective (:mod:`streamae.training.loop`) and writes
the model file, with checkpoints along the way (:mod:`streamae.training.checkpoint`).  What a
user sees while it runs goes through a :class:`TrainingMonitor`, so the CLI, a notebook
and a batch job can each show progress their own way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamae.compute.compilecache import compile_notice
from streamae.compute.lbfgs import LbfgsState, StopRules
from streamae.compute.objective import Evaluation, StreamedObjective, check_values
from streamae.compute.parameters import Hyperparameters, initialize
from streamae.compute.schemes import TwoPassObjective, make_objective
from streamae.errors import DataError, InputFileError, Interrupted, MissingInputError, UsageError
from streamae.io.atomic import OutputClaim, check_distinct_outputs, check_output_path, claim_output
from streamae.io.modelfile import Model, load_model, write_model
from streamae.io.normalization import read_normalization
from streamae.io.patchfile import (
    ArrayPatches,
    PatchFile,
    PatchLayout,
    RowRanges,
    chunk_aligned_share,
    default_block_rows,
    inspect_patch_file,
)
from streamae.io.readpolicy import open_patches
from streamae.options import DEFAULT_DATASET, TRAIN, VALIDATION, TrainOptions, dataset_path
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
from streamae.text import printable
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
from streamae.training.loop import CountedBlocks, Trainer, TrainingMonitor
from streamae.training.resume import Settings, resolve_settings, stored_settings
from streamae.training.runlog import format_header, run_header
from streamae.training.validation import (
    HeldOutObjective,
    Validation,
    parse_validation,
    split_held_out,
)
from streamae.training.warmstart import (
    SampleStages,
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


@dataclass
class _Setup:
    """What every rank knows after the (agreed) opening phase."""

    layout: PatchLayout
    source: PatchFile
    block_rows: int
    resumed: ResumePoint | None
    stored_warm_start: dict | None = None
    claim: OutputClaim | None = None
    notes: list[str] = field(default_factory=list)


def _open(
    data: Path,
    output: str | os.PathLike | None,
    log: str | os.PathLike | None,
    *,
    hyper: Hyperparameters,
    dtype: str,
    chunk_rows: int | None,
    force: bool,
    resume: bool,
    file_locking: bool | None,
    comm: Communicator,
    stack: contextlib.ExitStack,
    dataset: str = DEFAULT_DATASET,
) -> _Setup:
    """Check the outputs (rank 0), open this rank's share of the data, read the checkpoint."""
    if resume and output is None:
        raise UsageError("resume=True needs a model file to continue from (output).", parameter="resume")
    claim = None
    notes: list[str] = []
    if comm.rank == 0:
        check_distinct_outputs({"output": output, "log": log})
        if output is not None:
            if resume and not Path(output).exists():
                raise MissingInputError(
                    f"{output}: no such model file to resume from; train without resume=True first."
                )
            # Resuming replaces the checkpoint it continues from: that is the point of it.
            claim = claim_output(output, force=force or resume, inputs=(data,))
        if log is not None:
            # The log follows the rules of every output; resuming appends to it.
            check_output_path(log, force=force or resume, inputs=(data,))
    with _explained_lock_failure(data):
        # With the sampled content hash, stored in checkpoints and compared on resume.
        layout = inspect_patch_file(data, dataset, file_locking=file_locking, content=True)
        if layout.unwritten_chunks and comm.rank == 0:
            notes.append(
                f"warning: {data}: {layout.unwritten_chunks} chunk(s) of {printable(layout.dataset, 80)} "
                "were never written and read as the fill value; check that the file was written completely"
            )
        # Ranks share whole chunks (or whole blocks of the rows asked for); each reads its
        # share by the one read policy (io/readpolicy.py), as the benchmarks do.
        share = chunk_aligned_share(
            layout.n_rows, chunk_rows or default_block_rows(layout), comm.rank, comm.size
        )
        source = stack.enter_context(
            open_patches(
                data,
                dtype=np.dtype(dtype).type,
                block_rows=chunk_rows,
                row_range=share,
                file_locking=file_locking,
                dataset=dataset,
                layout=layout,
            )
        )
        block_rows = source.block_rows
    resumed = None
    stored_warm_start = None
    if resume and comm.rank == 0:
        previous = load_model(output)
        check_compatible(previous, output, hyper=hyper, fingerprint=layout.fingerprint, dtype=dtype)
        resumed = resume_point(previous, output)
        stored_warm_start = previous.info.get("warm_start")
    return _Setup(
        layout=layout,
        source=source,
        block_rows=block_rows,
        resumed=resumed,
        stored_warm_start=stored_warm_start,
        claim=claim,
        notes=notes,
    )


@contextlib.contextmanager
def _explained_lock_failure(data: Path) -> Iterator[None]:
    """Say what to do when HDF5 cannot lock the file (NFS, Lustre, a writer holding it)."""
    try:
        yield
    except InputFileError as error:
        if "unable to lock file" not in str(error):
            raise
        raise InputFileError(
            f"{data}: HDF5 could not lock the file (a file system without locks, such as NFS or "
            "Lustre, or another program writing it); pass file_locking=False or set "
            "HDF5_USE_FILE_LOCKING=FALSE if nothing writes it."
        ) from error


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
        return _train(data, output, o, monitor, comm, stop_signals, stop, settings, command)


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


def _train(
    data: str | os.PathLike,
    output: str | os.PathLike | None,
    o: TrainOptions,
    monitor: TrainingMonitor | None,
    comm: Communicator,
    stop_signals: bool,
    stop: StopFlag | None,
    settings: Settings | None = None,
    command: str | None = None,
) -> Model:
    """:func:`train` with its options checked."""
    hidden, rho, beta, lam, decoder = o.hidden, o.rho, o.beta, o.lam, o.decoder
    activation = o.activation
    max_iter, dtype, chunk_rows, threads, seed = o.max_iter, o.dtype, o.chunk_rows, o.threads, o.seed
    grad_tol, progress_tol, memory = o.grad_tol, o.progress_tol, o.lbfgs_pairs
    log, force, resume, file_locking = o.log, o.force, o.resume, o.file_locking
    checkpoint_every, checkpoint_minutes = o.checkpoint_every, o.checkpoint_minutes
    scheme, memory_budget, dataset, warm_start = o.scheme, o.memory_budget, o.dataset, o.warm_start
    validation, validation_fraction = o.validation, o.validation_fraction
    validate_every, early_stop = o.validate_every, o.early_stop
    keep_state = o.keep_state
    monitor = monitor or TrainingMonitor()
    stop = stop or StopFlag()
    data = Path(data)
    # A collective (MPI_Comm_split_type): before the agreed phase, which must hold none.
    local_ranks = comm.local_size()  # also caches local_rank() for the warm-up
    with (
        abort_on_local_error(comm),
        stop_on_signals(stop) if stop_signals else contextlib.nullcontext(stop),
        contextlib.ExitStack() as stack,
    ):
        with agreed_phase(comm):
            hyper = Hyperparameters(
                hidden=hidden, rho=rho, beta=beta, lam=lam, decoder=decoder, activation=activation
            )
            compute_dtype = np.dtype(dtype).type
            dataset = dataset_path(dataset)
            held_options = _held_out_options(validation, validation_fraction, validate_every, early_stop)
            policy = CheckpointPolicy(every=checkpoint_every, minutes=checkpoint_minutes)
            rules = StopRules(max_iter=max_iter, grad_tol=grad_tol, progress_tol=progress_tol)
            setup = _open(
                data,
                output,
                log,
                hyper=hyper,
                dtype=dtype,
                chunk_rows=chunk_rows,
                force=force,
                resume=resume,
                file_locking=file_locking,
                comm=comm,
                stack=stack,
                dataset=dataset,
            )
            held_source, held_name, held_info = _held_out_source(
                held_options, setup, data, dataset, dtype, chunk_rows, seed, file_locking, comm, stack
            )
            if warm_start != "none" and held_options["validation_fraction"] is not None:
                # A stage's sample is drawn from every chunk of the file, held-out ones too.
                raise UsageError(
                    "warm_start cannot be combined with validation_fraction (a stage's sample could "
                    "hold held-out rows); give the held-out rows as a separate validation file.",
                    parameter="warm_start",
                )
            n_parameters = 2 * setup.layout.n_features * hidden + hidden + setup.layout.n_features
            plan = plan_warm_start(warm_start, setup.layout, n_parameters, max_iter)
            threads_used = resolve_threads(threads, local_ranks=local_ranks)
            apply_threads(threads_used)
        layout = setup.layout
        resumed, stored_warm_start = (
            comm.broadcast((setup.resumed, setup.stored_warm_start))
            if comm.size > 1
            else (setup.resumed, setup.stored_warm_start)
        )
        with agreed_phase(comm):
            beginning = where_to_begin(plan, resumed, stored_warm_start, output)
        effective = {
            **{k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in o.as_dict().items()},
            "chunk_rows": setup.block_rows,
            "output": None if output is None else os.fspath(output),
        }
        header = run_header(
            settings=effective,
            data=layout.fingerprint,
            threads=threads_used,
            ranks=comm.size,
            command=command,
        )
        monitor.on_message(format_header(header))
        for note in settings.notes if settings is not None else ():
            monitor.on_message(f"resume: {note}")
        warm_up_kernels(comm, layout.n_features, hyper, compute_dtype)

        counted = CountedBlocks(setup.source, monitor, stop, abandon=comm.size == 1)
        monitor.on_message(
            f"{data}: {layout.n_rows:,} patches of {layout.n_features} values "
            f"({layout.dtype}), {hidden} {activation} hidden units, {dtype}"
            + (f", {comm.size} MPI ranks" if comm.size > 1 else "")
        )
        for note in setup.notes:
            monitor.on_message(note)
        counted.label = "checking values"
        try:
            summary = check_values(counted, hyper, str(data), comm)
            if resumed is not None:
                check_same_values(resumed, output, summary)
            if held_source is not None:
                check_values(held_source, hyper, held_name, comm)
        except DataError as error:
            raise mark_collective(error) from None  # found on the reduced summary: all ranks
        except StopRequested:  # one process only: under MPI a pass is never abandoned
            raise Interrupted(
                f"stopped by {stop.signal_name} while checking the values; nothing new was written."
            ) from None
        counted.label = "J and gradient"
        budget = memory_budget
        warnings = data_warnings(hyper, layout.n_features, summary.minimum, summary.maximum)
        if resumed is not None:
            warnings += resume_warnings(max_iter, resumed.state.iteration)
        for text in warnings:
            monitor.on_message(f"warning: {text}")

        def build_objective(source) -> StreamedObjective:
            built = make_objective(
                source,
                hyper,
                n_visible=layout.n_features,
                dtype=compute_dtype,
                comm=comm,
                scheme=scheme,
                memory_budget=budget,
            )
            monitor.on_message(f"scheme: {built.scheme}, {_scheme_reason(built.reason, settings)}")
            return built

        notice = compile_notice()  # said before the wait, and only when the cache is cold
        if notice is not None:
            monitor.on_message(notice)
        reading = getattr(setup.source, "policy", None)
        if reading is not None:
            monitor.on_message(f"reading {reading.block_rows:,} rows per read; {reading.reason}")
        held_out = None
        if held_source is not None:
            evaluator = HeldOutObjective(
                held_source, hyper, n_visible=layout.n_features, dtype=compute_dtype, comm=comm
            )
            _close_when_done(stack, evaluator)
            held_out = Validation(
                evaluator,
                every=held_options["validate_every"],
                early_stop=held_options["early_stop"],
                min_improvement=o.early_stop_min_improvement,
            )
            monitor.on_message(
                f"held out: {evaluator.n_rows:,} rows of {held_name}, evaluated every "
                f"{held_options['validate_every']} iteration(s)"
                + (
                    f", early stop after {held_options['early_stop']} without an improvement of "
                    f"{o.early_stop_min_improvement:g} relative"
                    if held_options["early_stop"]
                    else ""
                )
            )

        # The model remembers its data's normalisation, for pictures and new data.
        normalization = read_normalization(data, file_locking=file_locking)
        info = {
            "dtype": dtype,
            "seed": seed,
            "ranks": comm.size,
            "chunk_rows": setup.block_rows,
            "threads": threads_used,
            # The settings a resume takes when it is not given them (training/resume.py).
            "max_iter": max_iter,
            "grad_tol": grad_tol,
            "progress_tol": progress_tol,
            "lbfgs_pairs": memory,
            # chunk_rows as asked (None: the read policy's choice, made again on resume); the
            # rows per read used are "chunk_rows" above.
            "asked_chunk_rows": chunk_rows,
        }
        if held_info is not None:
            info["validation"] = held_info
        fingerprint = {**layout.fingerprint, "range": [summary.minimum, summary.maximum]}

        def info_for(objective_: StreamedObjective, record: dict) -> dict:
            return {**info, "scheme": objective_.scheme, "warm_start": record}

        trainers: list[Trainer] = []  # every stage's, the current one last

        def saver(objective_: StreamedObjective, record: dict):
            def save(state: LbfgsState, progress: Progress) -> str:
                timed = {**info_for(objective_, record), "time_split": trainers[-1].time_split.as_info()}
                model = _model(
                    state,
                    progress,
                    objective_,
                    layout,
                    timed,
                    held_out,
                    fingerprint,
                    normalization,
                    keep_state=True,
                )
                write_model(output, model, force=True, inputs=(data,), claim=setup.claim)
                return str(output)

            return save if output is not None else None

        log_begun = [resumed is not None]  # later stages append to the log the first began
        header_due = [True]  # the run header opens this call's part of the log

        def make_trainer(objective_, rules_, stage, first_iteration) -> Trainer:
            record = plan.record(stage.number, first_iteration, False)
            trainer_ = Trainer(
                objective_,
                rules_,
                comm=comm,
                monitor=monitor,
                stop=stop,
                policy=policy,
                save=saver(objective_, record),
                log=log,
                append_log=log_begun[0],
                resume_hint=(
                    f"the checkpoint {output} holds it; continue with resume=True"
                    + (f" and dataset={layout.dataset!r}" if layout.dataset != DEFAULT_DATASET else "")
                    + " (the other settings come from the checkpoint)."
                ),
                header=header if header_due[0] else None,
                tags={"stage": stage.number, "sample_rows": stage.rows},
                # Held-out evaluation (and early stopping) belongs to the full-data stage.
                after_iteration=(
                    held_out.after_iteration if held_out is not None and stage is plan.stages[-1] else None
                ),
            )
            trainers.append(trainer_)
            log_begun[0] = True
            header_due[0] = False
            return trainer_

        def save_stage_end(objective_, state, progress, stage, first_iteration) -> None:
            with agreed_phase(comm):
                save = saver(objective_, plan.record(stage.number, first_iteration, True))
                if save is not None and comm.rank == 0:
                    save(state, progress)

        if resumed is not None:
            _note_resume(monitor, resumed, comm.size, setup.block_rows, output, max_iter)
        x0 = initialize(layout.n_features, hidden, seed)
        if held_out is not None and resumed is None:
            held_out.record(0, x0)  # the starting point: the baseline to improve on
        samples = SampleStages(
            plan,
            data=data,
            dtype=compute_dtype,
            file_locking=file_locking,
            dataset=layout.dataset,
            comm=comm,
            monitor=monitor,
            stop=stop,
            rules=rules,
            memory=memory,
            build_objective=build_objective,
            make_trainer=make_trainer,
            save_stage_end=save_stage_end,
        )
        carried = samples.run(beginning.stage, x0, resumed, beginning.first_iteration, beginning.closed)
        # The last stage: the full data, the user's max_iter and tolerances.
        final = plan.stages[-1]
        if len(plan.stages) > 1:
            monitor.on_message(f"warm start: stage {final.number} of {final.number}: all {final.rows:,} rows")
        objective = build_objective(counted)
        _close_when_done(stack, objective)
        continuing = resumed is not None and beginning.stage == final.number and not beginning.closed
        first_iteration = (
            beginning.first_iteration if continuing else (carried[0].iteration if carried else 0)
        )
        trainer = make_trainer(objective, stage_rules(final, first_iteration, rules), final, first_iteration)
        if continuing:
            state, progress = resumed.state, resumed.progress
            try:
                # J and ∇J are reduced numbers: every rank sees the same and raises alike.
                check_state_reproduced(state, objective(state.x), output)
            except UsageError as error:
                raise mark_collective(error) from None
            except StopRequested:
                raise Interrupted(
                    f"stopped by {stop.signal_name} while checking the checkpoint; nothing new was written."
                ) from None
        else:
            state, progress = begin_stage(trainer, x0 if carried is None else carried[0].x, memory, carried)
        trainer.run(state, progress)
        record = plan.record(final.number, first_iteration, bool(state.finished))
        info = {**info_for(objective, record), "time_split": trainer.time_split.as_info()}
        model = _model(
            state,
            progress,
            objective,
            layout,
            info,
            held_out,
            fingerprint,
            normalization,
            keep_state=keep_state,
        )
        monitor.on_message(trainer.time_split.summary())
        if held_out is not None and held_out.stopped_early:
            model = _best_model(model, held_out, objective)
            monitor.on_message(
                f"early stop: kept the parameters of iteration {held_out.best_iteration} "
                f"(held-out J {held_out.best_cost:.6g}), the best of "
                f"{len(held_out.history['cost'])} validations"
            )
        with agreed_phase(comm):
            if output is not None and comm.rank == 0:
                # The opening checks ran already; replacing our own checkpoint is expected.
                write_model(output, model, force=True, inputs=(data,), claim=setup.claim)
    monitor.on_finish(model, model.info.get("finished", ""))
    return model


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


def _model(
    state: LbfgsState,
    progress: Progress,
    objective: StreamedObjective,
    layout: PatchLayout,
    info: dict,
    held_out: Validation | None = None,
    fingerprint: dict | None = None,
    normalization: tuple[dict | None, dict[str, np.ndarray]] = (None, {}),
    *,
    keep_state: bool = True,
) -> Model:
    """The model file's contents at ``state``: weights, history, ρ̂, info, and the optimizer
    state when ``keep_state`` (checkpoints always; a finished model only when asked)."""
    current: Evaluation = progress.current
    model = Model(
        **_split(state.x, objective.n_visible, objective.n_hidden),
        hyper=objective.hyper,
        patch_shape=layout.patch_shape,
        data=fingerprint if fingerprint is not None else layout.fingerprint,
        iterations=state.iteration,
        history={name: np.asarray(values) for name, values in progress.history.items()},
        rho_hat=current.rho_hat,
        optimizer=state.to_arrays() if keep_state else None,
        normalization=normalization[0],
        normalization_arrays=normalization[1],
        info={
            **info,
            "finished": state.finished,
            "cost": current.cost,
            "reconstruction": current.reconstruction,
            "weight_decay": current.weight_decay,
            "sparsity": current.sparsity,
            "seconds": progress.seconds,
            "evaluations": state.evaluations,
        },
        validation=held_out.arrays() if held_out is not None else {},
    )
    return model


def _best_model(model: Model, held_out: Validation, objective: StreamedObjective) -> Model:
    """``model`` with the best held-out parameters in place of the last ones (collective).

    ρ̂ is recomputed at those parameters over the training rows (one forward pass on
    every rank); the optimizer state belongs to the last point, so it is dropped.
    """
    best = held_out.best_theta
    model.rho_hat = objective.mean_activation(best)
    for name, values in _split(best, objective.n_visible, objective.n_hidden).items():
        setattr(model, name, values)
    model.optimizer = None
    model.info = {
        **model.info,
        "best_iteration": held_out.best_iteration,
        "best_validation_cost": held_out.best_cost,
        "kept": "the parameters of the best held-out J (early stop)",
    }
    return model


def _held_out_options(validation, fraction, every, early_stop) -> dict:
    """The held-out options checked by their declarations, and against each other."""
    checked = VALIDATION.validate(
        {
            "validation": None if validation is None else str(validation),
            "validation_fraction": fraction,
            "validate_every": every,
            "early_stop": early_stop,
        }
    )
    if checked["validation"] is not None and checked["validation_fraction"] is not None:
        raise UsageError(
            "validation and validation_fraction both choose the held-out rows; give one of them.",
            parameter="validation_fraction",
        )
    held = checked["validation"] is not None or checked["validation_fraction"] is not None
    if not held and checked["early_stop"] is not None:
        raise UsageError(
            "early_stop needs held-out data; give validation or validation_fraction too.",
            parameter="early_stop",
        )
    return checked


def _held_out_source(options, setup, data, dataset, dtype, chunk_rows, seed, file_locking, comm, stack):
    """(held-out source of this rank, its name for messages, what the model records) or Nones.

    With a fraction, the training source of ``setup`` is narrowed to the chunks not held
    out (in place), so held-out rows never enter training.
    """
    if options["validation_fraction"] is not None:
        source = setup.source
        share = (source.start, source.stop)
        # Whole blocks of the rows per read asked for, else whole HDF5 chunks of the file
        # (not the read policy's blocks, which span many chunks).
        unit = chunk_rows or default_block_rows(setup.layout)
        split = split_held_out(share, setup.layout.n_rows, unit, options["validation_fraction"], seed)
        setup.source = RowRanges(source, split.train)
        other = stack.enter_context(
            PatchFile(
                data,
                dtype=np.dtype(dtype).type,
                block_rows=setup.block_rows,
                row_range=share,
                file_locking=file_locking,
                dataset=dataset,
            )
        )
        return RowRanges(other, split.held), f"{data} ({split.description})", split.record
    if options["validation"] is None:
        return None, None, None
    path, held_dataset = parse_validation(options["validation"], dataset)
    held_dataset = dataset_path(held_dataset)
    with _explained_lock_failure(path):
        layout = inspect_patch_file(path, held_dataset, file_locking=file_locking)
    if layout.n_features != setup.layout.n_features:
        raise UsageError(
            f"{path}: {layout.dataset} holds rows of {layout.n_features} values but the training data "
            f"{data} holds rows of {setup.layout.n_features}; give held-out data of the same width.",
            parameter="validation",
        )
    share = chunk_aligned_share(layout.n_rows, chunk_rows or default_block_rows(layout), comm.rank, comm.size)
    # The held-out file is read by the same policy as the training data.
    source = stack.enter_context(
        open_patches(
            path,
            dtype=np.dtype(dtype).type,
            block_rows=chunk_rows,
            row_range=share,
            file_locking=file_locking,
            dataset=held_dataset,
            layout=layout,
        )
    )
    return source, str(path), {"path": str(path.resolve()), "dataset": layout.dataset, "rows": layout.n_rows}


def _split(theta: np.ndarray, n_visible: int, n_hidden: int) -> dict[str, np.ndarray]:
    from streamae.compute.parameters import unpack

    params = unpack(theta, n_visible, n_hidden)
    return {name: getattr(params, name).copy() for name in ("W1", "W2", "b1", "b2")}
