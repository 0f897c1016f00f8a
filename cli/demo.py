"""``streamae demo``: the main job on the photographs that ship with the package."""

from __future__ import annotations

import click

from streamae.options import DEMO

from .common import reported_errors, say, spec_options


@click.command(
    epilog="Exit codes: 0 success, 1 runtime error, 2 usage error, 3 stopped by a signal while "
    "training (SIGTERM, SIGINT or SIGUSR1; model.h5 holds a checkpoint), 130 interrupted (Ctrl-C) "
    "in the other steps."
)
@spec_options(DEMO)
def demo(output_dir, num_patches, max_iter, quiet, force, debug) -> None:
    """Extract 8x8 patches from the shipped photographs, train, and draw the features.

    The notes' exercise end to end: 10,000 gray patches normalised as the notes do,
    25 hidden units, rho 0.01, lambda 1e-4, beta 3, 400 iterations of L-BFGS.  Open
    features.png afterwards: the units look like oriented edges.
    """
    with reported_errors(debug, DEMO):
        from streamae.demo import run_demo

        from .extract import ExtractProgress
        from .train import ConsoleMonitor

        monitor = ConsoleMonitor(quiet=quiet)
        monitor.on_start(0, 0, max_iter)
        progress = ExtractProgress(quiet=quiet)
        try:
            result = run_demo(
                output_dir,
                num_patches=num_patches,
                max_iter=max_iter,
                force=force,
                train_monitor=monitor,
                extract_progress=progress,
            )
        finally:
            monitor.close()
            progress.close()
        seconds = result.seconds
        say(f"patches   {result.outputs['patches.h5']}  ({seconds['extract']:.1f} s)")
        say(
            f"model     {result.outputs['model.h5']}  ({seconds['train']:.1f} s, "
            f"J = {result.final_cost:.4f}, mean rho_hat = {result.mean_activation:.4f})"
        )
        say(f"features  {result.outputs['features.png']}  ({seconds['visualize']:.1f} s)")
        say(f"curves    {result.outputs['curves.png']}")
