"""``streamae train`` and ``streamae gradcheck``."""

from __future__ import annotations

import os
import sys

import click
from click.core import ParameterSource

from streamae.options import GRADCHECK, GRADCHECK_THRESHOLD, TRAIN

from .common import (
    EXIT_CODES_HELP,
    TRAIN_EXIT_CODES_HELP,
    reported_errors,
    say,
    spec_options,
    stderr_is_terminal,
)


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

    def on_resume(self, iteration: int, max_iter: int | None = None) -> None:
        # The bar was sized before the checkpoint was read: size it by the run's own max_iter.
        if self._iterations is not None:
            if max_iter is not None:
                self._iterations.total = max_iter
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
            from streamae.training.warmstart import describe_iterations, full_data_passes

            info = model.info
            m = int(model.data["shape"][0])
            done = describe_iterations(model.history, m)
            passes = full_data_passes(model.history, m)
            say(
                f"finished after {done} ({reason}): J = {info['cost']:.6g} "
                f"(reconstruction {info['reconstruction']:.6g}, weight decay "
                f"{info['weight_decay']:.6g}, sparsity {info['sparsity']:.6g}), "
                f"{info['seconds']:.1f} s, {info['evaluations']} evaluations"
                + (
                    f" ({passes[-1]:.1f} full-data passes)"
                    if "on samples" in done  # evaluations on samples count a fraction of a pass
                    else ""
                ),
                err=True,
            )

    def _write(self, text: str) -> None:
        if self.bars:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)
        else:
            say(text, err=True)


def format_record(record: dict) -> str:
    """One plain line describing an iteration."""
    # Warm-start stages after the first are marked (each also begins with a message line).
    stage = f"stage {int(record['stage'])}  " if record.get("stage", 1) != 1 else ""
    return (
        stage + f"iter {record['iteration']:4d}  J {record['cost']:.6e} "
        f"(rec {record['reconstruction']:.4e} wd {record['weight_decay']:.4e} "
        f"sp {record['sparsity']:.4e})  |g| {record['grad_norm']:.3e}  "
        f"rho_hat {record['rho_hat_mean']:.4f} [{record['rho_hat_min']:.4f}, "
        f"{record['rho_hat_max']:.4f}]  elapsed {record['seconds']:.2f} s"
        + (
            f"  held-out J {record['validation_cost']:.6e} (rec {record['validation_reconstruction']:.4e})"
            if "validation_cost" in record
            else ""
        )
    )


@click.command(epilog=TRAIN_EXIT_CODES_HELP)
@click.argument("data", type=click.Path(dir_okay=True, path_type=str))
@spec_options(TRAIN)
def train(data, output, quiet, debug, **options) -> None:
    """Train the sparse autoencoder on the patch file DATA and write the model.

    Minimises the notes' exact full-batch objective (reconstruction + weight decay +
    KL sparsity) by L-BFGS.  --scheme says how DATA is read: auto (the default) reads it
    once into memory when it fits --memory-budget (in-core), else streams it in blocks
    once per evaluation (single-pass); two-pass streams it twice, as the notes do.  Only
    in-core holds the data in memory; the streaming schemes' memory does not grow with it.

    Under `mpiexec -n N` or `srun` every rank reads its own share of DATA and the sums
    are combined with MPI (pip install 'streamae[mpi]'); the result equals one
    process's to rounding.  SIGTERM, SIGINT or SIGUSR1 stop the run at the last
    completed iteration with a checkpoint in --output; --resume continues from it.
    """
    with reported_errors(debug, TRAIN, again=lambda changes: f"`{train_command(data, output, changes)}`"):
        from streamae.runtime.mpi import world

        # On --resume a setting not typed comes from the checkpoint: pass only the typed ones.
        max_iter = options["max_iter"]
        if options["resume"]:
            context = click.get_current_context()
            options = {
                name: value
                for name, value in options.items()
                if context.get_parameter_source(name) is not ParameterSource.DEFAULT
            }
            options["resume"] = True
        comm = world()
        monitor = ConsoleMonitor(quiet=quiet, enabled=comm.rank == 0)
        monitor.on_start(0, 0, max_iter)
        try:
            _train(data, output, monitor=monitor, comm=comm, **options)
        finally:
            monitor.close()
        if comm.rank == 0 and not quiet:
            say(f"model written to {output}", err=True)


def resume_command(data: str, output: str) -> str:
    """The shell command that continues a run from its checkpoint, quoted to work as printed."""
    return train_command(data, output, {"resume": True})


def train_command(data: str, output: str, changes: dict) -> str:
    """``streamae train DATA -o OUTPUT`` with ``changes`` (parameter → value) as flags, quoted."""
    import shlex

    words = ["streamae", "train", os.fspath(data), "-o", os.fspath(output)]
    for name, value in changes.items():
        option = TRAIN[name]
        if option.kind is bool:
            words += [option.cli_flag] if value is not option.inverted else []
        else:
            words += [option.cli_flag, str(value)]
    return shlex.join(words)


def _train(*args, **kwargs):
    """The library's train (imported here: heavy imports stay out of --help)."""
    from streamae.training.session import train as train_model

    return train_model(*args, **kwargs)


@click.command(epilog=EXIT_CODES_HELP)
@spec_options(GRADCHECK)
def gradcheck(quiet, debug, **options) -> None:
    """Compare the streamed float64 gradient with central differences.

    Prints `relative difference: <x>` (‖num − ana‖ / ‖num + ana‖) and exits with 1 when
    it is above 1e-9.
    """
    with reported_errors(debug, GRADCHECK):
        from streamae.training.gradcheck import gradcheck as check

        difference = check(**options).relative_difference
        say(f"relative difference: {difference:.3e}")
        if not difference <= GRADCHECK_THRESHOLD:
            say(
                f"Error: the gradient check failed: {difference:.3e} is above {GRADCHECK_THRESHOLD:g}.",
                err=True,
            )
            sys.exit(1)
