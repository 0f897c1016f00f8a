"""``streamae encode``: the hidden activations of a trained model for every row of a patch file."""

from __future__ import annotations

import time
from pathlib import Path

import click

from streamae.options import ENCODE

from .common import EXIT_CODES_HELP, reported_errors, say, spec_options, stderr_is_terminal

# Without a terminal, one progress line at most this often (a log file, a batch job).
PLAIN_PROGRESS_SECONDS = 10.0


class _Progress:
    """Progress of the encode pass: a tqdm bar on a terminal, sparse plain lines otherwise."""

    def __init__(self, quiet: bool, label: str) -> None:
        self.quiet = quiet
        self.label = label
        self.bar = None
        self.last_line = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if stderr_is_terminal():
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="rows", unit_scale=True, desc=self.label, leave=False)
            self.bar.update(done - self.bar.n)
            return
        now = time.monotonic()
        if now - self.last_line >= PLAIN_PROGRESS_SECONDS and done < total:
            self.last_line = now
            say(f"{self.label}: {done:,} of {total:,} rows ({100.0 * done / total:.0f}%)", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@click.command(
    short_help="Hidden activations of a model for every row of a patch file.",
    epilog=EXIT_CODES_HELP,
)
@click.argument("model", type=click.Path(dir_okay=True, path_type=Path))
@click.argument("data", type=click.Path(dir_okay=True, path_type=Path))
@spec_options(ENCODE)
def encode(model: Path, data: Path, output: str | None, quiet: bool, debug: bool, **options) -> None:
    """Write the hidden activations of MODEL for every patch in DATA (a patch file).

    Streams DATA block by block through the encoder a2 = f(x W1^T + b1), f the model's
    hidden activation (sigmoid or tanh): one matrix product, then the activation
    elementwise, which agrees with training's fused kernels to rounding; memory does not
    depend on the number of rows.

    Example: `streamae encode model.h5 patches.h5 -o features.h5`.
    """
    with reported_errors(debug, ENCODE):
        from streamae.encoding import encode as encode_file

        progress = _Progress(quiet, f"encoding {data.name}")
        try:
            result = encode_file(model, data, output, progress=progress, **options)
        finally:
            progress.close()
        summary = (
            f"Wrote {output}: {result.n_rows:,} rows x {result.n_hidden} features ({options['dtype']}), "
            f"mean activation {float(result.mean_activation.mean()):.4g}"
        )
        if result.reconstruction is not None:
            summary += f", reconstruction error {result.reconstruction:.4g} (mean ½‖a3 − x‖²)"
        say(summary + ".")
