"""``streamae extract``: image sources in, a chunked HDF5 patch file out."""

from __future__ import annotations

import sys
import time

import click

from streamae.options import EXTRACT

from .common import EXIT_CODES_HELP, reported_errors, spec_options, stderr_is_terminal

# Plain-line progress (stderr not a terminal): one line per this fraction of a pass.
PLAIN_PROGRESS_STEP = 0.1


class ExtractProgress:
    """Reports the passes: a tqdm bar per pass on a terminal, a plain line per 10% otherwise."""

    STAGES = {"statistics": "pass 1/2 statistics", "writing": "pass 2/2 writing"}

    def __init__(self, *, quiet: bool) -> None:
        self.quiet = quiet
        self.bars = stderr_is_terminal() and not quiet
        self._stage: str | None = None
        self._bar = None
        self._next_report = 0.0
        self._started = time.perf_counter()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if stage != self._stage:
            self.close()
            self._stage = stage
            self._next_report = PLAIN_PROGRESS_STEP
            self._started = time.perf_counter()
            if self.bars:
                from tqdm import tqdm

                self._bar = tqdm(
                    total=total,
                    desc=self.STAGES.get(stage, stage),
                    unit="patches",
                    unit_scale=True,
                    file=sys.stderr,
                )
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
        elif done >= self._next_report * total or done == total:
            seconds = time.perf_counter() - self._started
            click.echo(
                f"{self.STAGES.get(stage, stage)}: {done:,}/{total:,} patches, {seconds:.1f} s", err=True
            )
            while self._next_report * total <= done:
                self._next_report += PLAIN_PROGRESS_STEP

    def close(self) -> None:
        """Close the bar of the current pass (also after an error)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("sources", nargs=-1, required=True)
@spec_options(EXTRACT)
def extract(sources, output, quiet, debug, **options):
    """Cut image patches from SOURCES into a chunked HDF5 patch file.

    A source is an image (PNG, JPEG, TIFF incl. multi-page, BMP, GIF), a folder (its
    images, recursively, sorted), a glob pattern, a .npy/.npz stack ((H, W), (N, H, W)
    or (N, H, W, C)), a MATLAB .mat stack (H, W, N) or an MNIST idx file.  Nothing is
    held in memory but the images and a few blocks: pass 1 gathers the statistics of the
    normalisation, pass 2 writes the patches.
    """
    with reported_errors(debug, EXTRACT):
        from streamae.extraction.pipeline import extract as run_extract

        progress = ExtractProgress(quiet=quiet)
        try:
            result = run_extract(list(sources), output, progress=progress, **options)
        finally:
            progress.close()
        h, w, c = result.patch_shape
        seconds = max(result.seconds, 1e-9)
        click.echo(
            f"wrote {result.rows:,} patches of {h}x{w}x{c} ({result.normalization['mode']}) from "
            f"{result.images:,} images to {result.path} in {result.seconds:.1f} s "
            f"({result.rows / seconds:,.0f} patches/s)",
            err=True,
        )
