"""Pictures of models of 1-D inputs (audio windows): line plots with axes and units.

Features: one small plot per hidden unit, its W1 row over its norm (the same norm-bounded
rule as image features: the input of unit norm that excites it most, so every value lies
in [−1, 1]) against time; with ``spectra`` a second plot below it, the magnitude spectrum
|rfft(row)| over its maximum against frequency.  Reconstructions: one plot per chosen
window, the input and the model's reconstruction drawn over each other on one y-scale
taken from the input.  Time is in milliseconds and frequency in hertz when the sample rate
is known (``streamae extract`` stores it in the patch file), else in samples and cycles
per sample.  Drawn with matplotlib and written atomically; the functions return the data
they drew, so tests check numbers, not pixels.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamae.io.atomic import atomic_output

# At most this many units (or windows) are drawn: beyond it the plots become unreadable.
MAX_PLOTS = 64
INCHES_PER_PLOT = (2.2, 1.3)
DPI = 100


@dataclass(frozen=True)
class SignalPlot:
    """What a signal picture drew: ``lines`` maps a label to (k, n) curves (one per plot);
    ``time`` (n,) and ``frequency`` (n//2 + 1,) are the x values with their ``time_unit`` and
    ``frequency_unit``; ``spectra`` (k, n//2 + 1) or None; ``ylim`` (k, 2) each plot's
    y-range; ``size`` (width, height) in pixels; ``shown`` how many of ``total`` are drawn."""

    lines: dict[str, np.ndarray]
    time: np.ndarray
    time_unit: str
    frequency: np.ndarray
    frequency_unit: str
    spectra: np.ndarray | None
    ylim: np.ndarray
    size: tuple[int, int]
    shown: int
    total: int


def unit_rows(W1: np.ndarray) -> np.ndarray:
    """Each W1 row (s, n) over its norm (rows of norm 0 stay 0)."""
    norms = np.linalg.norm(W1, axis=1, keepdims=True)
    return np.divide(W1, norms, out=np.zeros_like(W1, dtype=np.float64), where=norms > 0)


def spectrum_peaks(W1: np.ndarray) -> np.ndarray:
    """The frequency bin of each unit's largest magnitude (the DC bin excluded); (s,) int."""
    magnitude = np.abs(np.fft.rfft(np.asarray(W1, dtype=np.float64), axis=1))
    return 1 + np.argmax(magnitude[:, 1:], axis=1)


def normalized_spectra(rows: np.ndarray) -> np.ndarray:
    """|rfft(row)| over its maximum, (k, n) -> (k, n//2 + 1); an all-zero row stays 0."""
    magnitude = np.abs(np.fft.rfft(rows, axis=1))
    top = magnitude.max(axis=1, keepdims=True)
    return np.divide(magnitude, top, out=np.zeros_like(magnitude), where=top > 0)


def signal_axes(n: int, rate: float | None) -> tuple[np.ndarray, str, np.ndarray, str]:
    """(time (n,), its unit, frequency (n//2 + 1,), its unit) for windows of n samples."""
    samples, bins = np.arange(n, dtype=np.float64), np.fft.rfftfreq(n)
    if rate is None or not rate > 0:
        return samples, "sample", bins, "cycles per sample"
    return 1000.0 * samples / rate, "ms", bins * rate, "Hz"


def sample_rate(path: str | os.PathLike | None) -> float | None:
    """The ``sample_rate`` attribute of a patch file, or None (no file, no attribute, unreadable)."""
    if path is None or not Path(path).is_file():
        return None
    try:
        import h5py

        with h5py.File(path, "r") as handle:
            value = handle.attrs.get("sample_rate")
    except (OSError, ValueError):
        return None
    return float(value) if isinstance(value, int | float | np.integer | np.floating) and value > 0 else None


def _grid(count: int, rows_per_plot: int):
    """A figure with ``count`` plot cells (each ``rows_per_plot`` axes high); (figure, axes grid)."""
    from matplotlib.figure import Figure

    columns = max(1, math.ceil(math.sqrt(count)))
    rows = math.ceil(count / columns)
    width, height = INCHES_PER_PLOT
    figure = Figure(
        figsize=(columns * width, rows * height * rows_per_plot + 0.6), dpi=DPI, layout="constrained"
    )
    axes = np.atleast_2d(figure.subplots(rows * rows_per_plot, columns, squeeze=False))
    return figure, axes, columns


def _save(figure, output, force: bool, inputs: Iterable) -> tuple[int, int]:
    with atomic_output(output, force=force, inputs=inputs) as temporary:
        figure.savefig(temporary, format="png", dpi=DPI)
    width, height = figure.get_size_inches() * DPI
    return int(round(width)), int(round(height))


def plot_signal_features(
    W1: np.ndarray,
    output: str | os.PathLike,
    *,
    spectra: bool = False,
    rate: float | None = None,
    name: str = "the model",
    force: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
) -> SignalPlot:
    """One line plot per unit (W1 row over its norm against time), with ``spectra`` its spectrum below."""
    rows = unit_rows(np.asarray(W1, dtype=np.float64))
    shown = min(rows.shape[0], MAX_PLOTS)
    time, time_unit, frequency, frequency_unit = signal_axes(rows.shape[1], rate)
    magnitudes = normalized_spectra(rows[:shown]) if spectra else None
    figure, axes, columns = _grid(shown, 2 if spectra else 1)
    for unit in range(shown):
        row, column = divmod(unit, columns)
        wave = axes[row * (2 if spectra else 1), column]
        wave.plot(time, rows[unit], color="black", linewidth=1.0)
        wave.set_ylim(-1.05, 1.05)
        wave.set_title(f"unit {unit}", fontsize="small")
        wave.set_xlabel(f"time ({time_unit})", fontsize="x-small")
        wave.set_ylabel("weight / ‖w‖", fontsize="x-small")
        wave.tick_params(labelsize="x-small")
        if magnitudes is not None:
            band = axes[row * 2 + 1, column]
            band.bar(frequency, magnitudes[unit], width=frequency[1] - frequency[0], color="black")
            band.set_ylim(0, 1.05)
            band.set_xlabel(f"frequency ({frequency_unit})", fontsize="x-small")
            band.set_ylabel("|FFT| / max", fontsize="x-small")
            band.tick_params(labelsize="x-small")
    _hide_unused(axes, shown, columns, 2 if spectra else 1)
    more = f" (the first {shown} of {rows.shape[0]})" if shown < rows.shape[0] else ""
    figure.suptitle(f"{Path(name).name}: {rows.shape[0]} units of {rows.shape[1]} samples{more}")
    size = _save(figure, output, force, inputs)
    return SignalPlot(
        {"unit": rows[:shown]}, time, time_unit, frequency, frequency_unit, magnitudes,
        np.tile([-1.05, 1.05], (shown, 1)), size, shown, rows.shape[0],
    )  # fmt: skip


def pair_range(values: np.ndarray) -> tuple[float, float]:
    """The y-range of one input window (n,): its min and max with 5% room, never empty."""
    low, high = float(np.min(values)), float(np.max(values))
    pad = 0.05 * (high - low) if high > low else max(abs(high), 1.0) * 0.05
    return low - pad, high + pad


def plot_signal_reconstructions(
    inputs_: np.ndarray,
    outputs: np.ndarray,
    rows: np.ndarray,
    output: str | os.PathLike,
    *,
    rate: float | None = None,
    name: str = "the data",
    force: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
) -> SignalPlot:
    """Each window (k, n) and its reconstruction drawn over each other, on the input's y-range."""
    shown = min(inputs_.shape[0], MAX_PLOTS)
    time, time_unit, frequency, frequency_unit = signal_axes(inputs_.shape[1], rate)
    figure, axes, columns = _grid(shown, 1)
    limits = np.array([pair_range(inputs_[k]) for k in range(shown)])
    for k in range(shown):
        plot = axes[divmod(k, columns)]
        plot.plot(time, inputs_[k], color="black", linewidth=1.2, label="input")
        plot.plot(time, outputs[k], color="tab:orange", linewidth=1.0, linestyle="--", label="reconstruction")
        plot.set_ylim(*limits[k])  # the input's range: an output outside it shows as clipped
        plot.set_title(f"row {int(rows[k])}", fontsize="small")
        plot.set_xlabel(f"time ({time_unit})", fontsize="x-small")
        plot.tick_params(labelsize="x-small")
    axes[0, 0].legend(fontsize="x-small", loc="best")
    _hide_unused(axes, shown, columns, 1)
    figure.suptitle(f"{Path(name).name}: {shown} windows (black) and their reconstructions (orange, dashed)")
    size = _save(figure, output, force, inputs)
    return SignalPlot(
        {"input": inputs_[:shown], "reconstruction": outputs[:shown]}, time, time_unit, frequency,
        frequency_unit, None, limits, size, shown, inputs_.shape[0],
    )  # fmt: skip


def _hide_unused(axes: np.ndarray, shown: int, columns: int, rows_per_plot: int) -> None:
    for cell in range(shown, axes.shape[0] // rows_per_plot * columns):
        row, column = divmod(cell, columns)
        for offset in range(rows_per_plot):
            axes[row * rows_per_plot + offset, column].set_visible(False)
