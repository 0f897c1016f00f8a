"""Audio: WAV formats read back exactly, 1-D windows, line-plot pictures, the shipped chord."""

from __future__ import annotations

import struct

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import streamae
from streamae.cli.main import cli
from streamae.errors import InputFileError
from streamae.extraction.audio import extract_audio, read_wav
from streamae.render_signals import plot_signal_features, signal_axes, spectrum_peaks, unit_rows

CHORD = streamae.__path__[0] + "/data/audio/chord.wav"


def write_wav(
    path, payload: bytes, *, tag: int, channels: int, bits: int, rate: int = 8000, extensible=False
):
    """A WAV file by hand: RIFF header, fmt chunk (plain or extensible), data chunk."""
    align = channels * ((bits + 7) // 8)
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, channels, rate, rate * align, align, bits)
    if extensible:
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + bytes(14)
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(payload))
        + payload
    )
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def test_pcm_8_bit_unsigned(tmp_path):
    raw = np.array([0, 64, 128, 192, 255], dtype=np.uint8)
    got = read_wav(write_wav(tmp_path / "a.wav", raw.tobytes(), tag=1, channels=1, bits=8))
    np.testing.assert_array_equal(got.samples[:, 0], (raw.astype(float) - 128) / 128)


@pytest.mark.parametrize("bits", [16, 24, 32])
def test_pcm_signed_read_back_exactly(tmp_path, bits, rng):
    top = 2 ** (bits - 1)
    values = np.concatenate([[-top, top - 1, 0, -1, 1], rng.integers(-top, top, size=50)])
    payload = b"".join(int(v).to_bytes(bits // 8, "little", signed=True) for v in values)
    got = read_wav(
        write_wav(tmp_path / "a.wav", payload, tag=1, channels=1, bits=bits, extensible=bits == 24)
    )
    np.testing.assert_array_equal(got.samples[:, 0], values / top)
    assert got.bits == bits and got.rate == 8000


@pytest.mark.parametrize("dtype", ["<f4", "<f8"])
def test_float_samples_as_stored(tmp_path, dtype, rng):
    values = rng.uniform(-1.5, 1.5, size=40).astype(dtype)
    bits = np.dtype(dtype).itemsize * 8
    got = read_wav(write_wav(tmp_path / "a.wav", values.tobytes(), tag=3, channels=1, bits=bits))
    np.testing.assert_array_equal(got.samples[:, 0], values.astype(np.float64))


def test_stereo_frames_and_channels(tmp_path):
    frames = np.array([[100, -100], [200, -200], [300, -300]], dtype="<i2")
    got = read_wav(write_wav(tmp_path / "s.wav", frames.tobytes(), tag=1, channels=2, bits=16))
    np.testing.assert_array_equal(got.samples, frames / 32768)


def test_truncated_wav_is_one_sentence(tmp_path):
    path = write_wav(tmp_path / "t.wav", np.zeros(100, "<i2").tobytes(), tag=1, channels=1, bits=16)
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(InputFileError, match="truncated .*200 bytes, 150 are present"):
        read_wav(path)
    result = CliRunner().invoke(
        cli, ["extract", str(path), "-o", str(tmp_path / "p.h5"), "--patch-size", "8"]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output and "truncated" in result.output


def test_windows_every_stride_mixed_and_kept(tmp_path):
    left = np.arange(40, dtype="<i2") * 10
    right = -left
    frames = np.stack([left, right], axis=1)
    wav = write_wav(tmp_path / "s.wav", frames.tobytes(), tag=1, channels=2, bits=16)
    extract_audio([wav], tmp_path / "mix.h5", patch_size=8, stride=4, normalize="none")
    with h5py.File(tmp_path / "mix.h5") as handle:
        rows = handle["patches"][()]
        assert list(handle.attrs["patch_shape"]) == [1, 8, 1] and handle.attrs["sample_rate"] == 8000
    assert rows.shape == (9, 8)
    np.testing.assert_array_equal(rows, 0.0)  # the channels cancel when mixed
    extract_audio([wav], tmp_path / "keep.h5", patch_size=8, stride=4, channels="keep", normalize="none")
    with h5py.File(tmp_path / "keep.h5") as handle:
        kept = handle["patches"][()]
    expected = (frames[4:12] / 32768).astype(np.float32).ravel()  # s0c0, s0c1, s1c0, ...
    np.testing.assert_array_equal(kept[1], expected)


def test_random_windows_are_seeded_and_inside(tmp_path):
    signal = (np.arange(1000) % 200).astype("<i2")
    wav = write_wav(tmp_path / "r.wav", signal.tobytes(), tag=1, channels=1, bits=16)
    a = extract_audio([wav], tmp_path / "a.h5", patch_size=16, num_patches=50, normalize="none", seed=3)
    extract_audio([wav], tmp_path / "b.h5", patch_size=16, num_patches=50, normalize="none", seed=3)
    with h5py.File(tmp_path / "a.h5") as x, h5py.File(tmp_path / "b.h5") as y:
        np.testing.assert_array_equal(x["patches"][()], y["patches"][()])
        rows = x["patches"][()] * 32768
    assert a["rows"] == 50
    for row in rows:  # each window is a run of the signal
        start = int(np.flatnonzero(np.isclose(signal, row[0]))[0])
        assert np.any([np.allclose(signal[s : s + 16], row) for s in range(start, 1000 - 15, 200)])


def test_line_plots_draw_each_unit_over_its_norm_against_time_in_ms(tmp_path):
    n = 12
    W1 = np.zeros((2, n))
    W1[0, 5] = 3.0  # a spike: after the norm, 1 at sample 5, 0 elsewhere
    W1[1] = -np.ones(n)  # a constant: −1/√n everywhere
    plot = plot_signal_features(W1, tmp_path / "u.png", rate=8000)
    expected = np.zeros((2, n))
    expected[0, 5], expected[1] = 1.0, -1 / np.sqrt(n)
    np.testing.assert_allclose(plot.lines["unit"], expected, rtol=1e-12)
    np.testing.assert_allclose(plot.time, np.arange(n) / 8.0)  # 8000 samples per second: 1/8 ms each
    assert plot.time_unit == "ms" and plot.spectra is None
    with Image.open(tmp_path / "u.png") as image:
        assert image.size == plot.size and min(plot.size) > 100  # a figure with axes, not strips
    np.testing.assert_array_equal(unit_rows(W1), plot.lines["unit"])


def test_spectra_peak_at_the_planted_frequency_in_hertz(tmp_path):
    n, f = 32, 5
    W1 = np.cos(2 * np.pi * f * np.arange(n) / n)[None, :]
    plot = plot_signal_features(W1, tmp_path / "s.png", spectra=True, rate=8000)
    assert plot.frequency_unit == "Hz" and plot.frequency[f] == f * 8000 / n  # bin f: f·rate/n Hz
    assert np.argmax(plot.spectra[0]) == f and plot.spectra[0, f] == 1.0
    assert np.all(np.delete(plot.spectra[0], f) < 1e-12)
    assert spectrum_peaks(W1)[0] == f
    time, unit, frequency, frequency_unit = signal_axes(n, None)  # rate unknown: samples
    assert unit == "sample" and frequency_unit == "cycles per sample" and frequency[f] == f / n


def test_chord_model_learns_frequency_selective_units(tmp_path):
    assert read_wav(CHORD).rate == 8000
    patches = tmp_path / "chord.h5"
    extract_audio([CHORD], patches, patch_size=64, num_patches=4000, normalize="ufldl")
    model = streamae.train(
        patches, None, hidden=16, rho=0.05, max_iter=150, stop_signals=False, dtype="float64"
    )
    magnitude = np.abs(np.fft.rfft(model.W1, axis=1))[:, 1:]
    peaks = spectrum_peaks(model.W1)
    # Each unit's spectrum peaks: its largest bin stands well above its median bin...
    assert np.all(magnitude.max(axis=1) > 5 * np.median(magnitude, axis=1))
    # ...and the peaks sit at the chord's frequencies (bins of 8000/64 = 125 Hz: 440, 554 and
    # 659 Hz fall in bins 3.5, 4.4 and 5.3), spread over more than one of them.
    assert np.all((peaks >= 3) & (peaks <= 6)), peaks
    assert len(set(peaks.tolist())) >= 2, peaks


def test_visualize_draws_a_model_of_windows_as_line_plots(tmp_path, model_file, rng):
    W1 = rng.normal(size=(4, 16))
    model = model_file(W1, patch_shape=(1, 16, 1))
    out = tmp_path / "units.png"
    result = CliRunner().invoke(cli, ["visualize", str(model), "-o", str(out), "--spectra"])
    assert result.exit_code == 0, result.output
    assert "4 units of 16 samples as line plots with spectra (time in sample)" in result.output
    with Image.open(out) as image:
        assert image.mode == "RGBA" and min(image.size) > 200


def test_audio_reconstructions_are_line_plots_on_the_inputs_scale(tmp_path):
    patches = tmp_path / "chord.h5"
    extract_audio([CHORD], patches, patch_size=32, num_patches=200, normalize="ufldl")
    model = tmp_path / "m.h5"
    streamae.train(patches, model, hidden=4, max_iter=3, stop_signals=False)
    out = tmp_path / "rec.png"
    result = CliRunner().invoke(
        cli, ["visualize", str(model), "--reconstructions", str(patches), "-o", str(out), "--pairs", "5"]
    )
    assert result.exit_code == 0, result.output
    assert "5 patches of" in result.output and "drawn over their reconstructions" in result.output
    from streamae.reconstruction_grid import render_reconstructions

    plot = render_reconstructions(streamae.load_model(model), patches, tmp_path / "r.png", pairs=5)
    inputs = plot.lines["input"]
    assert inputs.shape == (5, 32) and plot.time_unit == "ms" and plot.time[1] == 1000 / 8000
    for k in range(5):  # each plot's y-range is its input's, with 5% room
        span = inputs[k].max() - inputs[k].min()
        assert plot.ylim[k][0] == pytest.approx(inputs[k].min() - 0.05 * span)
        assert plot.ylim[k][1] == pytest.approx(inputs[k].max() + 0.05 * span)
