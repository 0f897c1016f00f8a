"""Audio: read WAV files and cut them into 1-D windows, written as a patch file.

A WAV file is read by a small RIFF parser of our own (the ``fmt `` and ``data`` chunks),
so every format the notes' users meet reads the same way and a damaged file gets one
clear sentence: PCM 8-bit (unsigned), 16, 24 and 32-bit (signed), and IEEE float 32 and
64-bit, plain or WAVE_FORMAT_EXTENSIBLE, any sample rate, any number of channels.

Scaling (documented, and exact for every stored value): unsigned 8-bit ``(u − 128)/128``;
signed b-bit ``v / 2^(b−1)``; float samples as stored.  So integer samples land in [−1, 1).

A window of ``patch_size`` samples is one row; several channels are mixed (their mean)
or kept (the row holds the window's samples interleaved: s₀c₀, s₀c₁, …).  Windows are
random (a file weighted by how many windows it holds, then a start uniformly: seeded)
or every ``stride`` samples.  The normalisations of :mod:`streamae.extraction.normalize`
apply to rows of any kind: ``none``, ``zscore``, ``ufldl`` (per-window mean removal,
clip at ±3σ, map to [0.1, 0.9]) and ``zca``.

The decoded signals are held in memory while windows are cut (a recording of an hour at
44.1 kHz is 1.3 GB as float64 mono … this reader is meant for clips and corpora of clips);
the windows stream to the file in blocks.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from streamae._version import __version__
from streamae.errors import InputFileError, UsageError
from streamae.extraction.normalize import DEFAULT_ZCA_EPSILON, MODES, Statistics, check_finite_rows
from streamae.io.atomic import atomic_output, check_output_path, check_written, hdf5_output
from streamae.io.hdf5 import PATCH_FORMAT, PATCHES_DATASET
from streamae.io.inputs import check_regular_input, open_regular
from streamae.options import setting
from streamae.text import printable

AUDIO_SUFFIXES = (".wav", ".wave")
AUDIO_NORMALIZATIONS = ("none", "zscore", "ufldl", "zca")
WAVE_FORMAT_PCM = 1
WAVE_FORMAT_FLOAT = 3
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
BLOCK_ROWS = 4096
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Recording:
    """A decoded WAV file: samples (frames, channels) float64, the rate, the stored format."""

    samples: np.ndarray
    rate: int
    bits: int
    encoding: str  # "pcm" or "float"

    @property
    def channels(self) -> int:
        """Channels per frame."""
        return self.samples.shape[1]


def is_audio(path: str | os.PathLike) -> bool:
    """True for a path named like a WAV file."""
    return Path(path).suffix.lower() in AUDIO_SUFFIXES


def read_wav(path: str | os.PathLike) -> Recording:
    """Decode the WAV file at ``path`` (see the module doc for formats and scaling)."""
    path = Path(path)
    with open_regular(path, "a WAV file") as handle:  # a FIFO, device, folder or loop: said so
        data = handle.read()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise InputFileError(f"{path}: not a WAV file (no RIFF/WAVE header); give a .wav file.")
    fmt = None
    payload = None
    offset = 12
    while offset + 8 <= len(data):
        chunk_id, size = struct.unpack_from("<4sI", data, offset)
        body = offset + 8
        if chunk_id == b"fmt ":
            fmt = data[body : body + size]
        elif chunk_id == b"data":
            if body + size > len(data):
                raise InputFileError(
                    f"{path}: the WAV file is truncated (its data chunk declares {size:,} bytes, "
                    f"{len(data) - body:,} are present); restore the complete file."
                )
            payload = data[body : body + size]
            break
        offset = body + size + (size & 1)  # chunks are padded to even sizes
    if fmt is None or len(fmt) < 16:
        raise InputFileError(f"{path}: the WAV file has no valid fmt chunk; it is damaged, export it again.")
    if payload is None:
        raise InputFileError(
            f"{path}: the WAV file has no data chunk (it is truncated or empty); restore the complete file."
        )
    tag, channels, rate, _, align, bits = struct.unpack_from("<HHIIHH", fmt, 0)
    if tag == WAVE_FORMAT_EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack_from("<H", fmt, 24)[0]  # the subformat GUID starts with the tag
    if channels < 1 or bits == 0 or align != channels * ((bits + 7) // 8):
        raise InputFileError(
            f"{path}: the WAV header is inconsistent ({channels} channels, {bits} bits, block align "
            f"{align}); export the file again."
        )
    if rate < 1:
        raise InputFileError(
            f"{printable(path)}: the WAV header gives a sample rate of {rate} Hz; save the recording again."
        )
    width = (bits + 7) // 8
    frames = len(payload) // align
    raw = np.frombuffer(payload, dtype=np.uint8, count=frames * align).reshape(frames * channels, width)
    if tag == WAVE_FORMAT_PCM and width in (1, 2, 3, 4):
        values = _pcm(raw, width)
        encoding = "pcm"
    elif tag == WAVE_FORMAT_FLOAT and width in (4, 8):
        values = raw.copy().view("<f4" if width == 4 else "<f8").ravel().astype(np.float64)
        encoding = "float"
    else:
        raise InputFileError(
            f"{path}: WAV format tag {tag} with {bits}-bit samples is not supported; convert it to "
            "PCM 8/16/24/32-bit or float."
        )
    if frames < 1:
        raise InputFileError(f"{path}: the WAV file holds no samples; give a recording.")
    if not np.all(np.isfinite(values)):
        raise InputFileError(f"{path}: the WAV file holds NaN or Inf samples; repair or re-export it.")
    largest = float(np.abs(values).max())
    if largest > FLOAT32_MAX:
        raise InputFileError(
            f"{printable(path)}: the WAV file holds samples up to {largest:.3g}, beyond float32's range "
            "(patches are float32); save the recording again scaled to [-1, 1]."
        )
    return Recording(
        samples=values.reshape(frames, channels), rate=int(rate), bits=int(bits), encoding=encoding
    )


def _pcm(raw: np.ndarray, width: int) -> np.ndarray:
    """PCM samples (count, width) bytes, little-endian, as float64 in [−1, 1)."""
    if width == 1:  # 8-bit WAV is unsigned, centred on 128
        return (raw[:, 0].astype(np.float64) - 128.0) / 128.0
    # Assemble a little-endian signed integer of `width` bytes in an int64.
    value = np.zeros(raw.shape[0], dtype=np.int64)
    for byte in range(width):
        value |= raw[:, byte].astype(np.int64) << (8 * byte)
    sign = np.int64(1) << (8 * width - 1)
    value = (value ^ sign) - sign  # sign-extend
    return value.astype(np.float64) / float(sign)


def signal_of(recording: Recording, channels: str) -> np.ndarray:
    """The signal windows are cut from: (frames, 1) mixed to mono, or (frames, c) kept."""
    if channels == "mix":
        return recording.samples.mean(axis=1, keepdims=True)
    return recording.samples


class WindowPlan:
    """(file index, start sample) of every window, given a block of rows at a time.

    With a stride the windows are a grid over each file, computed per block from the
    per-file counts, so memory does not grow with the number of windows (``--stride 1``);
    random windows are drawn once (16 bytes a window, a small fraction of the output).
    """

    def __init__(self, lengths: Sequence[int], size: int, *, num: int | None, stride: int | None, seed: int):
        counts = np.array([max(0, length - size + 1) for length in lengths], dtype=np.int64)
        self.stride = stride
        self._drawn = None
        if stride is not None:
            self._per_file = -(-counts // stride)  # ceil(count / stride) windows in each file
            self._first = np.concatenate([[0], np.cumsum(self._per_file)])
            self.count = int(self._first[-1])
        else:
            generator = np.random.default_rng(seed)
            files = generator.choice(len(counts), size=num, p=counts / counts.sum())
            self._drawn = np.stack([files, generator.integers(0, counts[files])], axis=1)
            self.count = int(num)

    def rows(self, first: int, stop: int) -> np.ndarray:
        """(stop - first, 2) int64: file index and start sample of windows first..stop-1."""
        if self._drawn is not None:
            return self._drawn[first:stop]
        index = np.arange(first, stop, dtype=np.int64)
        files = np.searchsorted(self._first, index, side="right") - 1
        return np.stack([files, (index - self._first[files]) * self.stride], axis=1)


def window_starts(lengths: Sequence[int], size: int, *, num: int | None, stride: int | None, seed: int):
    """(file index, start sample) of every window: random (seeded) or every ``stride`` samples."""
    plan = WindowPlan(lengths, size, num=num, stride=stride, seed=seed)
    return plan.rows(0, plan.count)


@dataclass(frozen=True)
class AudioRequest:
    """What an audio extraction is asked for (the options of ``extract`` that apply to WAV)."""

    patch_size: int = 256
    num_patches: int | None = None
    stride: int | None = None
    channels: str = "mix"
    normalize: str = "ufldl"
    zca_epsilon: float = DEFAULT_ZCA_EPSILON
    seed: int = 0
    chunk_rows: int | None = None
    force: bool = False
    normalize_like: str | os.PathLike | None = None
    skip_bad: bool = False
    compression: str = "none"


def _check_request(r: AudioRequest) -> AudioRequest:
    """``r`` with the default window count filled in; a UsageError naming the parameter if wrong."""
    if not isinstance(r.patch_size, int) or r.patch_size < 2:
        raise UsageError(
            f"patch_size must be a window of at least 2 samples, got {r.patch_size}.", parameter="patch_size"
        )
    if r.num_patches is not None and r.stride is not None:
        raise UsageError("num_patches and stride exclude each other; give one of them.", parameter="stride")
    if r.stride is not None and r.stride < 1:
        raise UsageError(f"stride must be at least 1, got {r.stride}.", parameter="stride")
    if r.num_patches is not None and r.num_patches < 1:
        raise UsageError(f"num_patches must be at least 1, got {r.num_patches}.", parameter="num_patches")
    if r.channels not in ("mix", "keep"):
        raise UsageError(f"channels must be one of mix, keep, got {r.channels!r}.", parameter="channels")
    if r.normalize not in AUDIO_NORMALIZATIONS or r.normalize not in MODES:
        raise UsageError(
            f"normalize must be one of {', '.join(AUDIO_NORMALIZATIONS)} for audio, got {r.normalize!r}.",
            parameter="normalize",
        )
    if r.num_patches is None and r.stride is None:
        return replace(r, num_patches=10_000)
    return r


def _read_recordings(
    files: list[Path], skip_bad: bool, warn
) -> tuple[list[Path], list[Recording], list[dict]]:
    """The readable recordings; with ``skip_bad`` a bad file is left out with one warning."""
    from streamae.extraction.pipeline import none_readable, skip_with_warning

    kept, recordings, skipped = [], [], []
    for path in files:
        try:
            recordings.append(read_wav(path))
        except InputFileError as error:
            if not skip_bad:
                raise
            skip_with_warning(path, error, skipped, warn)
            continue
        kept.append(path)
    if not recordings:
        raise none_readable(len(files), "recordings", skipped)
    return kept, recordings, skipped


def _signals(
    files: list[Path], recordings: list[Recording], r: AudioRequest
) -> tuple[list[np.ndarray], int, int]:
    """(the signals windows are cut from, channels per window, the common sample rate)."""
    rates = {rec.rate for rec in recordings}
    if len(rates) > 1:
        raise UsageError(
            f"the recordings have different sample rates ({', '.join(map(str, sorted(rates)))} Hz); "
            "resample them to one rate first.",
            parameter="sources",
        )
    signals = [signal_of(rec, r.channels) for rec in recordings]
    widths = {s.shape[1] for s in signals}
    if len(widths) > 1:
        raise UsageError(
            f"the recordings have different channel counts; mix them ({setting('channels', 'mix')}) or give "
            "alike files.",
            parameter="channels",
        )
    short = [path for path, s in zip(files, signals, strict=True) if s.shape[0] < r.patch_size]
    if len(short) == len(files):
        raise UsageError(
            f"{printable(short[0])}: the recording has fewer than {r.patch_size} samples; choose a "
            "smaller patch_size.",
            parameter="patch_size",
        )
    return signals, widths.pop(), rates.pop()


def _window_blocks(signals: list[np.ndarray], plan: WindowPlan, size: int, block: np.ndarray):
    """Yield ``(first_row, rows)``: the windows ``block``'s rows at a time (rows is a view)."""
    for first in range(0, plan.count, block.shape[0]):
        rows = block[: min(block.shape[0], plan.count - first)]
        for k, (index, start) in enumerate(plan.rows(first, first + rows.shape[0])):
            rows[k] = signals[index][start : start + size].ravel()
        yield first, rows


def _audio_normalizer(r: AudioRequest, blocks, n: int, block_rows: int, shape: tuple[int, int, int]):
    """The normalizer: the one stored in ``normalize_like``, or fitted over the windows."""
    if r.normalize_like is not None:
        from streamae.extraction.pipeline import refuse_other_mode, stored_normalizer

        stored = stored_normalizer(r.normalize_like, shape)
        refuse_other_mode(r.normalize, stored.mode, r.normalize_like)
        return stored
    statistics = Statistics(r.normalize, n, block_rows)
    if statistics.needed:
        for _, rows in blocks():
            statistics.add(rows)
    return statistics.finish(epsilon=r.zca_epsilon)


def extract_audio(
    sources: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    request: AudioRequest | None = None,
    *,
    warn=None,
    **values: object,
) -> dict:
    """Cut windows of ``patch_size`` samples from the WAV files ``sources`` into a patch file.

    The options are an :class:`AudioRequest` and/or its fields as keywords.  The file holds
    ``/patches`` (m, patch_size·c) float32, c = 1 (mixed) or the channel count (kept), with
    ``patch_shape = (1, patch_size, c)`` and the sample rate.  ``normalize_like`` applies the
    normalisation stored in an earlier patch file of the same window shape; ``skip_bad``
    leaves unreadable recordings out with one warning each (``warn(text)``).  Windows that
    normalise to NaN or Inf are refused, naming the cause.  Returns a summary dict (rows,
    patch_shape, rate, normalization, seconds, skipped).
    """
    started = time.perf_counter()
    r = _check_request(replace(request or AudioRequest(), **values))
    files = [Path(source) for source in sources]
    like = [r.normalize_like] if r.normalize_like is not None else []
    for reference in like:
        check_regular_input(reference, "a patch file written by streamae extract")
    check_output_path(output, force=r.force, inputs=[*files, *like])
    files, recordings, skipped = _read_recordings(files, r.skip_bad, warn)
    signals, c, rate = _signals(files, recordings, r)
    n = r.patch_size * c
    plan = WindowPlan(
        [s.shape[0] for s in signals], r.patch_size, num=r.num_patches, stride=r.stride, seed=r.seed
    )
    m = plan.count
    block = np.empty((min(BLOCK_ROWS, m), n), dtype=np.float32)

    def blocks():
        return _window_blocks(signals, plan, r.patch_size, block)

    normalizer = _audio_normalizer(r, blocks, n, block.shape[0], (1, r.patch_size, c))
    attrs = {
        "patch_shape": np.array([1, r.patch_size, c], dtype=np.int64),  # DESIGN's (h, w, c): 1-D
        "sample_rate": int(rate),
        "normalization": json.dumps(normalizer.describe()),
        "seed": int(r.seed),
        "sources": json.dumps([os.fspath(p) for p in files]),
        "sampling": json.dumps(
            {"mode": "grid", "stride": r.stride} if r.stride else {"mode": "random", "num_patches": m}
        ),
        "channels": r.channels,
        "skipped_sources": json.dumps(skipped),
    }
    chunk = min(m, r.chunk_rows or max(1, (1 << 20) // (4 * n)))
    with atomic_output(output, force=r.force, inputs=[*files, *like]) as temporary:
        _write_windows(temporary, blocks, normalizer, (m, n), chunk, r.compression, attrs)
    return {
        "rows": m,
        "patch_shape": (1, r.patch_size, c),
        "normalization": normalizer.describe(),
        "seconds": time.perf_counter() - started,
        "skipped": tuple(entry["path"] for entry in skipped),
    }


def _write_windows(temporary: Path, blocks, normalizer, shape: tuple[int, int], chunk: int,
                   compression: str, attrs: dict) -> None:  # fmt: skip
    """Normalise and write every block of windows into a new patch file at ``temporary``."""
    m, n = shape
    options = {} if compression == "none" else {"compression": compression}
    with hdf5_output(temporary) as handle:
        dataset = handle.create_dataset(
            PATCHES_DATASET, shape=(m, n), dtype=np.float32, chunks=(chunk, n), **options
        )
        for first, rows in blocks():
            normalizer.apply(rows)
            check_finite_rows(rows, first, normalizer)
            dataset.write_direct(rows, dest_sel=np.s_[first : first + rows.shape[0]])
            check_written(handle)
        for name, array in normalizer.datasets().items():
            handle.create_dataset(name, data=array)
        handle.attrs["format"] = PATCH_FORMAT
        for key, value in attrs.items():
            handle.attrs[key] = value
        handle.attrs["streamae_version"] = __version__
