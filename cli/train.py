"""``streamae train`` and ``streamae gradcheck``."""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator

import click
from click.core import ParameterSource

from streamae.options import TRAIN_MORE

from .common import (
    debug_option,
    force_option,
    quiet_option,
    reported_errors,
    spec_options,
    stderr_is_terminal,
)

# Kept in sync with streamae.training.checkpoint.DEFAULT_CHECKPOINT_EVERY (a test checks): importing
# it here would load NumPy and h5py for --help.
DEFAULT_CHECKPOINT_EVERY = 10


class FiniteNonNegative(click.ParamType):
    """A float that is finite and >= 0 (tolerances)."""

    name = "float"

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number.", param, ctx)
        if not (math.isfinite(number) and number >= 0):
            self.fail(f"{value} must be a finite number >= 0.", param, ctx)
        return number


FINITE_NON_NEGATIVE = FiniteNonNegative()


class ConsoleMonitor:
    """Shows training progress: tqdm bars on a terminal, one plain line per iteration otherwise.

    A bar over the iterations and one over each pass's blocks; with ``quiet`` only the
    final summary is printed.  Only the process that owns the console (MPI rank 0)
    should get ``enabled=True``.
    """

    def __init__(self, *, quiet: bool, enabled: bool = True) -> None:
        self.quiet = quiet or not enabled
        self.enabled = enabled
        self.bars = stderr_is_terminal() and not self.quiet
        self._iterations = None
        self._blocks = None

    def on_start(self, n_rows: int, n_features: int, max_iter: int) -> None:
        if self.bars:
            from tqdm import tqdm

            self._iterations = tqdm(total=max_iter, desc="iterations", unit="it", position=0)

    def on_resume(self, iteration: int) -> None:
        if self._iterations is not None:
            self._iterations.update(iteration)

    def on_checkpoint(self, iteration: int, path: str) -> None:
        if not self.quiet and not self.bars:
            self._write(f"checkpoint: iteration {iteration} written to {path}")

    def on_message(self, text: str) -> None:
        if not self.quiet:
            self._write(text)

    def on_pass(self, name: str, n_rows: int) -> None:
        if not self.bars:
            return
        from tqdm import tqdm

        if self._blocks is not None:
            self._blocks.close()
        self._blocks = tqdm(
            total=n_rows, desc=f"  {name}", unit="rows", unit_scale=True, position=1, leave=False
        )

    def on_block(self, rows: int) -> None:
        if self._blocks is not None:
            self._blocks.update(rows)

    def on_iteration(self, record: dict) -> None:
        if self.quiet:
            return
        line = format_record(record)
        if self._iterations is not None:
            self._iterations.set_postfix_str(
                f"J={record['cost']:.6g} |g|={record['grad_norm']:.3g}", refresh=False
            )
            self._iterations.update(1)
        else:
            self._write(line)

    def close(self) -> None:
        """Close the progress bars (also after an error)."""
        for bar in (self._blocks, self._iterations):
            if bar is not None:
                bar.close()
        self._blocks = self._iterations = None

    def on_finish(self, model, reason: str) -> None:
        self.close()
        if self.enabled:
            info = model.info
            click.echo(
                f"finished after {model.iterations} iterations ({reason}): J = {info['cost']:.6g} "
                f"(reconstruction {info['reconstruction']:.6g}, weight decay "
                f"{info['weight_decay']:.6g}, sparsity {info['sparsity']:.6g}), "
                f"{info['seconds']:.1f} s, {info['evaluations']} evaluations",
                err=True,
            )

    def _write(self, text: str) -> None:
        if self.bars:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)
        else:
            click.echo(text, err=True)


def format_record(record: dict) -> str:
    """One plain line describing an iteration."""
    return (
        f"iter {record['iteration']:4d}  J {record['cost']:.6e} "
        f"(rec {record['reconstruction']:.4e} wd {record['weight_decay']:.4e} "
        f"sp {record['sparsity']:.4e})  |g| {record['grad_norm']:.3e}  "
        f"rho_hat {record['rho_hat_mean']:.4f} [{record['rho_hat_min']:.4f}, "
        f"{record['rho_hat_max']:.4f}]  {record['seconds']:.2f} s"
    )


@click.command(
    epilog="Exit codes: 0 success, 1 runtime error, 2 usage error, 3 stopped by a signal "
    "(SIGTERM, SIGINT or SIGUSR1; a checkpoint was written, continue with --resume)."
)
@click.argument("data", type=click.Path(dir_okay=True, path_type=str))
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=str),
    default="model.h5",
    show_default=True,
    help="Model file to write (HDF5); also the checkpoint --resume continues from.",
)
@click.option("--hidden", type=int, default=25, show_default=True, help="Hidden units s2.")
@click.option("--rho", type=float, default=0.01, show_default=True, help="Target mean activation (0, 1).")
@click.option("--beta", type=float, default=3.0, show_default=True, help="Weight of the sparsity penalty.")
@click.option("--lambda", "lam", type=float, default=1e-4, show_default=True, help="Weight decay.")
@click.option("--max-iter", type=int, default=400, show_default=True, help="L-BFGS iterations at most.")
@click.option(
    "--decoder",
    type=click.Choice(["sigmoid", "linear"]),
    default="sigmoid",
    show_default=True,
    help="Output layer: sigmoid (data in [0, 1]) or linear (any real data).",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float64"]),
    default="float32",
    show_default=True,
    help="Compute type of the kernels; sums and the optimizer are always float64.",
)
@click.option(
    "--chunk-rows",
    type=int,
    default=None,
    help="Rows per read (default: the file's HDF5 chunk, or ~4 MiB for an unchunked file).",
)
@click.option(
    "--threads",
    type=int,
    default=None,
    help="Compute threads per process, Numba and BLAS alike (default: SLURM_CPUS_PER_TASK, "
    "else the CPU affinity shared among the MPI ranks of the node).",
)
@click.option(
    "--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the initial weights."
)
@click.option(
    "--grad-tol",
    type=FINITE_NON_NEGATIVE,
    default=1e-5,
    show_default=True,
    help="Stop when max |gradient| is below this.",
)
@click.option(
    "--progress-tol",
    type=FINITE_NON_NEGATIVE,
    default=1e-9,
    show_default=True,
    help="Stop when J changes by less than this.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue from the model file at --output (a checkpoint), exactly where it stopped; "
    "every setting not given here is the checkpoint's; refused if the data or the "
    "hyperparameters differ.",
)
@spec_options(TRAIN_MORE, "keep_state")
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=0),
    default=DEFAULT_CHECKPOINT_EVERY,
    show_default=True,
    help="Rewrite the model file (atomically, with the optimizer state) every this many "
    "iterations; 0: only at the end.",
)
@click.option(
    "--checkpoint-minutes",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="Also rewrite it whenever this many minutes have passed since the last one.",
)
@click.option(
    "--scheme",
    type=click.Choice(["auto", "two-pass", "single-pass", "in-core"]),
    default="auto",
    show_default=True,
    help="How an evaluation reads the data: in-core reads it once into memory (if it fits "
    "--memory-budget), single-pass once per evaluation, two-pass twice (the notes' scheme); "
    "auto: in-core if it fits, else single-pass.  All give the same J and gradient.",
)
@click.option(
    "--memory-budget",
    type=str,
    default=None,
    help="Memory the in-core scheme may use per process, e.g. 8G or 512M "
    "(default: half the available memory, shared by the ranks on a node).",
)
@click.option(
    "--no-file-locking",
    "no_file_locking",
    is_flag=True,
    help="Open the data without HDF5 file locks (NFS, Lustre; same as HDF5_USE_FILE_LOCKING=FALSE).",
)
@click.option(
    "--log",
    type=click.Path(path_type=str),
    default=None,
    help="Write one JSON object per iteration to this file (JSON lines; appended on --resume).",
)
@quiet_option
@force_option
@debug_option
def train(
    data,
    output,
    hidden,
    rho,
    beta,
    lam,
    max_iter,
    decoder,
    dtype,
    chunk_rows,
    threads,
    seed,
    grad_tol,
    progress_tol,
    resume,
    keep_state,
    checkpoint_every,
    checkpoint_minutes,
    scheme,
    memory_budget,
    no_file_locking,
    log,
    quiet,
    force,
    debug,
) -> None:
    """Train the sparse autoencoder on the patch file DATA and write the model.

    Minimises the notes' exact full-batch objective (reconstruction + weight decay +
    KL sparsity) by L-BFGS, streaming DATA in blocks: pass 1 accumulates the mean hidden
    activation, pass 2 the cost and gradient.  Memory does not grow with the data.

    Under `mpiexec -n N` or `srun` every rank reads its own share of DATA and the sums
    are combined with MPI (pip install 'streamae[mpi]'); the result equals one
    process's to rounding.  SIGTERM, SIGINT or SIGUSR1 stop the run at the last
    completed iteration with a checkpoint in --output; --resume continues from it.
    """
    with reported_errors(debug):
        from streamae.runtime.mpi import world

        # On --resume a setting not typed comes from the checkpoint: pass None for it.
        context = click.get_current_context()
        settings = {
            name: (None if context.get_parameter_source(name) is ParameterSource.DEFAULT else value)
            for name, value in {
                "hidden": hidden,
                "rho": rho,
                "beta": beta,
                "lam": lam,
                "decoder": decoder,
                "max_iter": max_iter,
                "dtype": dtype,
                "chunk_rows": chunk_rows,
                "seed": seed,
                "grad_tol": grad_tol,
                "progress_tol": progress_tol,
                "scheme": scheme,
            }.items()
        }
        comm = world()
        monitor = ConsoleMonitor(quiet=quiet, enabled=comm.rank == 0)
        monitor.on_start(0, 0, max_iter)
        try:
            with rank_zero_reports(comm, debug):
                _train(
                    data,
                    output,
                    **settings,
                    threads=threads,
                    keep_state=keep_state,
                    log=log,
                    force=force,
                    monitor=monitor,
                    comm=comm,
                    resume=resume,
                    checkpoint_every=checkpoint_every,
                    checkpoint_minutes=checkpoint_minutes,
                    file_locking=False if no_file_locking else None,
                    memory_budget=memory_budget,
                )
        finally:
            monitor.close()
        if comm.rank == 0 and not quiet:
            click.echo(f"model written to {output}", err=True)


def _train(*args, **kwargs):
    """The library's train (imported here: heavy imports stay out of --help)."""
    from streamae.training.session import train as train_model

    return train_model(*args, **kwargs)


@contextlib.contextmanager
def rank_zero_reports(comm, debug: bool) -> Iterator[None]:
    """Let rank 0 alone report an error every rank raised; say "Stopped" for a signal.

    Errors raised on one rank only never get here under MPI: the library aborts the
    job from that rank (see streamae.runtime.mpi.abort_on_local_error).
    """
    from streamae.errors import Interrupted, StreamaeError
    from streamae.runtime.mpi import is_collective

    try:
        yield
    except Interrupted as error:
        if debug:
            raise
        if comm.rank == 0:
            click.echo(f"Stopped: {error}", err=True)
        sys.exit(error.exit_code)
    except StreamaeError as error:
        if comm.rank != 0 and is_collective(error) and not debug:
            sys.exit(error.exit_code)  # rank 0 prints the same message
        raise


@click.command()
@click.option(
    "--data",
    type=click.Path(path_type=str),
    default=None,
    help="Check on the first --rows rows of this patch file (default: a small random problem).",
)
@click.option("--rows", type=int, default=20, show_default=True, help="Rows to use.")
@click.option("--hidden", type=int, default=5, show_default=True, help="Hidden units.")
@click.option(
    "--visible",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Inputs of the random problem.",
)
@click.option(
    "--decoder",
    type=click.Choice(["sigmoid", "linear"]),
    default="sigmoid",
    show_default=True,
    help="Output layer.",
)
@click.option(
    "--block-rows",
    type=click.IntRange(min=1),
    default=None,
    help="Rows per streamed block (default: a third of --rows).",
)
@click.option("--epsilon", type=float, default=1e-4, show_default=True, help="Central-difference step.")
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed of the point and the random data.",
)
@quiet_option
@debug_option
def gradcheck(data, rows, hidden, visible, decoder, block_rows, epsilon, seed, quiet, debug) -> None:
    """Compare the streamed float64 gradient with central differences.

    Prints `relative difference: <x>` (‖num − ana‖ / ‖num + ana‖) and exits with 1 when
    it is above 1e-9.
    """
    with reported_errors(debug):
        from streamae.training.session import GRADCHECK_THRESHOLD
        from streamae.training.session import gradcheck as check

        if not (math.isfinite(epsilon) and epsilon > 0):
            from streamae.errors import UsageError

            raise UsageError(f"--epsilon must be a finite positive number, got {epsilon}.")
        result = check(
            data,
            rows=rows,
            hidden=hidden,
            n_visible=visible,
            decoder=decoder,
            block_rows=block_rows,
            epsilon=epsilon,
            seed=seed,
        )
        difference = result.relative_difference
        click.echo(f"relative difference: {difference:.3e}")
        if not difference <= GRADCHECK_THRESHOLD:
            click.echo(
                f"Error: the gradient check failed: {difference:.3e} is above {GRADCHECK_THRESHOLD:g}.",
                err=True,
            )
            sys.exit(1)
