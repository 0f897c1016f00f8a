"""``streamae extract``: image sources in, a chunked HDF5 patch file out."""

from __future__ import annotations

import sys
import time

import click

from streamae.options import EXTRACT_MORE

from .common import (
    EXIT_CODES_HELP,
    debug_option,
    force_option,
    quiet_option,
    reported_errors,
    spec_options,
    stderr_is_terminal,
)

# Plain-line progress (stderr not a terminal): one line per this fraction of a pass.
PLAIN_PROGRESS_STEP = 0.1


class SizeType(click.ParamType):
    """``8`` or ``12x8`` (height x width) as a (height, width) pair of positive ints."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        text = str(value).lower().replace("×", "x")
        parts = text.split("x")
        try:
            numbers = tuple(int(p) for p in parts)
        except ValueError:
            numbers = ()
        if len(numbers) not in (1, 2) or min(numbers, default=0) < 1:
            self.fail(
                f"{value!r} is not a size; give one positive integer (8) or HEIGHTxWIDTH (12x8).", param, ctx
            )
        return numbers * 2 if len(numbers) == 1 else numbers


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
@click.argument("sources", nargs=-1, required=False)
@click.option(
    "--output",
    "-o",
    # No dir_okay=False: click's message for a directory says no fix; the library's does.
    type=click.Path(path_type=str),
    default="patches.h5",
    show_default=True,
    help="Patch file to write (HDF5).",
)
@click.option(
    "--patch-size",
    type=SizeType(),
    default="8",
    show_default=True,
    help="Patch size: N for NxN, or HEIGHTxWIDTH such as 12x8.",
)
@click.option(
    "--num-patches",
    type=click.IntRange(min=1),
    default=None,
    help="Random patches to cut: an image chosen uniformly, then a position uniformly "
    "(the notes' sampleIMAGES).  [default: 10000 unless --stride is given]",
)
@click.option(
    "--stride",
    type=SizeType(),
    default=None,
    help="Instead of random patches, every patch on a grid with this step (S or SYxSX); "
    "e.g. whole MNIST digits with --patch-size 28 --stride 28.",
)
@click.option(
    "--color",
    type=click.Choice(["gray", "rgb"]),
    default="gray",
    show_default=True,
    help="gray (ITU-R BT.601 luma) or rgb (3 channels per pixel).",
)
@click.option(
    "--normalize",
    type=click.Choice(["ufldl", "zscore", "zca", "unit", "none"]),
    default="ufldl",
    show_default=True,
    help="ufldl: per-patch mean removed, clipped at 3 sigma, mapped to [0.1, 0.9] (the notes); "
    "zscore: per-pixel mean and std; zca: ZCA whitening; unit: pixel/255; none: raw values.",
)
@click.option(
    "--zca-epsilon",
    type=click.FloatRange(min=0, min_open=True),
    default=0.1,
    show_default=True,
    help="Regulariser of ZCA whitening, for pixel values in [0, 1].",
)
@click.option(
    "--seed",
    # At most 2**63 - 1: the seed is stored in the file as a signed 64-bit attribute.
    type=click.IntRange(min=0, max=2**63 - 1),
    default=0,
    show_default=True,
    help="Seed of the random patch positions; the same seed gives the same patches.",
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    default=None,
    help="Rows per HDF5 chunk.  [default: about 1 MiB of rows]",
)
@click.option(
    "--compression",
    type=click.Choice(["none", "gzip", "lzf"]),
    default="none",
    show_default=True,
    help="HDF5 compression of /patches; gzip reads slower than training consumes data.",
)
@click.option(
    "--variable",
    default=None,
    help="Array to read from .mat and .npz files (needed when they hold more than one).",
)
@spec_options(EXTRACT_MORE, "normalize_like", "skip_bad", "vectors")
@force_option
@quiet_option
@debug_option
def extract(
    sources,
    output,
    patch_size,
    num_patches,
    stride,
    color,
    normalize,
    zca_epsilon,
    seed,
    chunk_rows,
    compression,
    variable,
    normalize_like,
    skip_bad,
    vectors,
    force,
    quiet,
    debug,
):
    """Cut image patches from SOURCES into a chunked HDF5 patch file.

    A source is an image (PNG, JPEG, TIFF incl. multi-page, BMP, GIF), a folder (its
    images, recursively, sorted), a glob pattern, a .npy/.npz stack ((H, W), (N, H, W)
    or (N, H, W, C)), a MATLAB .mat stack (H, W, N) or an MNIST idx file.  Nothing is
    held in memory but the images and a few blocks: pass 1 gathers the statistics of the
    normalisation, pass 2 writes the patches.
    """
    with reported_errors(debug):
        from streamae.errors import UsageError
        from streamae.extraction.pipeline import extract as run_extract

        if vectors is not None:
            if sources:
                raise UsageError("--vectors takes no SOURCES; give either images or --vectors FILE.")
            from streamae.extraction.vectors import extract_vectors

            done = extract_vectors(vectors, output, chunk_rows=chunk_rows, force=force)
            click.echo(
                f"wrote {done['rows']:,} vectors of {done['features']} values (as they are) to "
                f"{done['path']} in {done['seconds']:.1f} s",
                err=True,
            )
            return
        if not sources:
            raise UsageError("give the images to cut patches from (SOURCES), or --vectors FILE.")
        progress = ExtractProgress(quiet=quiet)
        warned = []

        def warn(text: str) -> None:
            warned.append(text)
            click.echo(f"warning: {text}", err=True)

        try:
            result = run_extract(
                list(sources),
                output,
                patch_size=patch_size,
                num_patches=num_patches,
                stride=stride,
                color=color,
                normalize=normalize,
                zca_epsilon=zca_epsilon,
                seed=seed,
                chunk_rows=chunk_rows,
                compression=compression,
                variable=variable,
                force=force,
                progress=progress,
                normalize_like=normalize_like,
                skip_bad=skip_bad,
                warn=warn,
            )
        finally:
            progress.close()
        h, w, c = result.patch_shape
        seconds = max(result.seconds, 1e-9)
        click.echo(
            f"wrote {result.rows:,} patches of {h}x{w}x{c} ({result.normalization['mode']}) from "
            f"{result.images:,} images to {result.path} in {result.seconds:.1f} s "
            f"({result.rows / seconds:,.0f} patches/s)"
            + (f"; skipped {len(result.skipped)} unreadable files" if result.skipped else ""),
            err=True,
        )
