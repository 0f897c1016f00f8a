"""``streamae extract``: image sources in, a chunked HDF5 patch file out."""

from __future__ import annotations

import sys
import time

import click

from streamae.options import EXTRACT

from .common import EXIT_CODES_HELP, reported_errors, say, spec_options, stderr_is_terminal

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
            say(f"{self.STAGES.get(stage, stage)}: {done:,}/{total:,} patches, {seconds:.1f} s", err=True)
            while self._next_report * total <= done:
                self._next_report += PLAIN_PROGRESS_STEP

    def close(self) -> None:
        """Close the bar of the current pass (also after an error)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("sources", nargs=-1, required=False)
@spec_options(EXTRACT)
def extract(sources, output, quiet, debug, **options):
    """Cut image patches from SOURCES into a chunked HDF5 patch file.

    A source is an image (PNG, JPEG, TIFF incl. multi-page, BMP, GIF), a folder (its
    images, recursively, sorted), a glob pattern, a .npy/.npz stack ((H, W), (N, H, W)
    or (N, H, W, C)), a MATLAB .mat stack (H, W, N) or an MNIST idx file.  Nothing is
    held in memory but the images and a few blocks: pass 1 gathers the statistics of the
    normalisation, pass 2 writes the patches.

    WAV files (PCM 8/16/24/32-bit or float, any rate) are cut into 1-D windows instead:
    --patch-size 256 is a window of 256 samples, random or every --stride samples,
    channels mixed or kept (--channels); --normalize none, zscore, ufldl or zca.
    """
    with reported_errors(debug, EXTRACT):
        from streamae.extraction.audio import is_audio
        from streamae.extraction.pipeline import extract as run_extract

        if options["vectors"] is None and sources and all(is_audio(source) for source in sources):
            _extract_audio(sources, output, options)
            return

        progress = ExtractProgress(quiet=quiet)
        warned = []

        def warn(text: str) -> None:
            warned.append(text)
            say(f"warning: {text}", err=True)

        try:
            result = run_extract(list(sources), output, progress=progress, warn=warn, **options)
        finally:
            progress.close()
        if options["vectors"] is not None:
            say(
                f"wrote {result['rows']:,} vectors of {result['features']} values (as they are) to "
                f"{result['path']} in {result['seconds']:.1f} s",
                err=True,
            )
            return
        h, w, c = result.patch_shape
        seconds = max(result.seconds, 1e-9)
        say(
            f"wrote {result.rows:,} patches of {h}x{w}x{c} ({result.normalization['mode']}) from "
            f"{result.images:,} images to {result.path} in {result.seconds:.1f} s "
            f"({result.rows / seconds:,.0f} patches/s)"
            + (f"; skipped {len(result.skipped)} unreadable files" if result.skipped else ""),
            err=True,
        )


def _window(size: object, name: str) -> int | None:
    """A 1-D window length from patch_size/stride text (N, or 1xN / Nx1)."""
    from streamae.errors import UsageError
    from streamae.options import parse_size

    if size is None:
        return None
    height, width = parse_size(size)
    if min(height, width) != 1 and height != width:
        raise UsageError(
            f"{name} of audio is a number of samples, such as 256; got {height}x{width}.", parameter=name
        )
    return max(height, width) if min(height, width) == 1 else height


def _extract_audio(sources, output, options: dict) -> None:
    """`streamae extract` for WAV sources: 1-D windows (see streamae.extraction.audio)."""
    from streamae.extraction.audio import AudioRequest, extract_audio
    from streamae.extraction.pipeline import refuse_unused

    refuse_unused(options, AUDIO_TAKES, "WAV sources")
    result = extract_audio(
        list(sources),
        output,
        AudioRequest(
            patch_size=_window(options["patch_size"], "patch_size"),
            num_patches=options["num_patches"],
            stride=_window(options["stride"], "stride"),
            channels=options["channels"],
            normalize=options["normalize"],
            zca_epsilon=options["zca_epsilon"],
            seed=options["seed"],
            chunk_rows=options["chunk_rows"],
            force=options["force"],
            normalize_like=options["normalize_like"],
            skip_bad=options["skip_bad"],
            compression=options["compression"],
        ),
        warn=lambda text: say(f"warning: {text}", err=True),
    )
    _, size, kept = result["patch_shape"]
    say(
        f"wrote {result['rows']:,} windows of {size} samples x {kept} channel(s) "
        f"({result['normalization']['mode']}) to {output} in {result['seconds']:.1f} s"
        + (f"; skipped {len(result['skipped'])} unreadable files" if result["skipped"] else ""),
        err=True,
    )


# The options of extract that WAV sources use; the others are refused when given.
AUDIO_TAKES = ("patch_size", "num_patches", "stride", "channels", "normalize", "zca_epsilon", "seed",
               "chunk_rows", "force", "normalize_like", "skip_bad", "compression", "vectors")  # fmt: skip
