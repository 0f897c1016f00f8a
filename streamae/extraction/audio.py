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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamae._version import __version__
from streamae.errors import InputFileError, UsageError
from streamae.extraction.normalize import DEFAULT_ZCA_EPSILON, MODES, Statistics
from streamae.io.atomic import atomic_output, check_output_path, check_written, hdf5_output
from streamae.io.hdf5 import PATCH_FORMAT, PATCHES_DATASET
from streamae.options import setting
from streamae.text import printable

AUDIO_SUFFIXES = (".wav", ".wave")
AUDIO_NORMALIZATIONS = ("none", "zscore", "ufldl", "zca")
WAVE_FORMAT_PCM = 1
WAVE_FORMAT_FLOAT = 3
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
BLOCK_ROWS = 4096


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
    if not path.is_file():
        raise InputFileError(f"{path}: no such audio file; check the path.")
    data = path.read_bytes()
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


def window_starts(lengths: Sequence[int], size: int, *, num: int | None, stride: int | None, seed: int):
    """(file index, start sample) of every window: random (seeded) or every ``stride`` samples."""
    counts = np.array([max(0, length - size + 1) for length in lengths], dtype=np.int64)
    if stride is not None:
        pairs = [(i, s) for i, count in enumerate(counts) for s in range(0, int(count), stride)]
        return np.array(pairs, dtype=np.int64).reshape(-1, 2)
    generator = np.random.default_rng(seed)
    files = generator.choice(len(counts), size=num, p=counts / counts.sum())
    starts = generator.integers(0, counts[files])
    return np.stack([files, starts], axis=1)


def extract_audio(
    sources: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    patch_size: int = 256,
    num_patches: int | None = None,
    stride: int | None = None,
    channels: str = "mix",
    normalize: str = "ufldl",
    zca_epsilon: float = DEFAULT_ZCA_EPSILON,
    seed: int = 0,
    chunk_rows: int | None = None,
    force: bool = False,
) -> dict:
    """Cut windows of ``patch_size`` samples from the WAV files ``sources`` into a patch file.

    The file holds ``/patches`` (m, patch_size·c) float32, c = 1 (mixed) or the channel
    count (kept), with ``patch_shape = (1, patch_size, c)`` and the sample rate.  Returns a
    summary dict (rows, patch_shape, rate, normalization, seconds).
    """
    started = time.perf_counter()
    if not isinstance(patch_size, int) or patch_size < 2:
        raise UsageError(
            f"patch_size must be a window of at least 2 samples, got {patch_size}.", parameter="patch_size"
        )
    if num_patches is not None and stride is not None:
        raise UsageError("num_patches and stride exclude each other; give one of them.", parameter="stride")
    if stride is not None and stride < 1:
        raise UsageError(f"stride must be at least 1, got {stride}.", parameter="stride")
    num_patches = 10_000 if num_patches is None and stride is None else num_patches
    if num_patches is not None and num_patches < 1:
        raise UsageError(f"num_patches must be at least 1, got {num_patches}.", parameter="num_patches")
    if channels not in ("mix", "keep"):
        raise UsageError(f"channels must be one of mix, keep, got {channels!r}.", parameter="channels")
    if normalize not in AUDIO_NORMALIZATIONS or normalize not in MODES:
        raise UsageError(
            f"normalize must be one of {', '.join(AUDIO_NORMALIZATIONS)} for audio, got {normalize!r}.",
            parameter="normalize",
        )
    files = [Path(source) for source in sources]
    check_output_path(output, force=force, inputs=files)
    recordings = [read_wav(path) for path in files]
    rates = {r.rate for r in recordings}
    if len(rates) > 1:
        raise UsageError(
            f"the recordings have different sample rates ({', '.join(map(str, sorted(rates)))} Hz); "
            "resample them to one rate first.",
            parameter="sources",
        )
    signals = [signal_of(r, channels) for r in recordings]
    widths = {s.shape[1] for s in signals}
    if len(widths) > 1:
        raise UsageError(
            f"the recordings have different channel counts; mix them ({setting('channels', 'mix')}) or give "
            "alike files.",
            parameter="channels",
        )
    short = [path for path, s in zip(files, signals, strict=True) if s.shape[0] < patch_size]
    if len(short) == len(files):
        raise UsageError(
            f"{printable(short[0])}: the recording has fewer than {patch_size} samples; choose a "
            "smaller patch_size.",
            parameter="patch_size",
        )
    c = widths.pop()
    n = patch_size * c
    starts = window_starts(
        [s.shape[0] for s in signals], patch_size, num=num_patches, stride=stride, seed=seed
    )
    m = starts.shape[0]
    chunk = min(m, chunk_rows or max(1, (1 << 20) // (4 * n)))
    block = np.empty((min(BLOCK_ROWS, m), n), dtype=np.float32)

    def blocks():
        for first in range(0, m, block.shape[0]):
            rows = block[: min(block.shape[0], m - first)]
            for k, (index, start) in enumerate(starts[first : first + rows.shape[0]]):
                rows[k] = signals[index][start : start + patch_size].ravel()
            yield first, rows

    statistics = Statistics(normalize, n, block.shape[0])
    if statistics.needed:
        for _, rows in blocks():
            statistics.add(rows)
    normalizer = statistics.finish(epsilon=zca_epsilon)
    with atomic_output(output, force=force, inputs=files) as temporary:
        with hdf5_output(temporary) as handle:
            dataset = handle.create_dataset(
                PATCHES_DATASET, shape=(m, n), dtype=np.float32, chunks=(chunk, n)
            )
            for first, rows in blocks():
                normalizer.apply(rows)
                dataset.write_direct(rows, dest_sel=np.s_[first : first + rows.shape[0]])
                check_written(handle)
            for name, array in normalizer.datasets().items():
                handle.create_dataset(name, data=array)
            attrs = handle.attrs
            attrs["format"] = PATCH_FORMAT
            # (height 1, width = samples, channels): DESIGN's (h, w, c), which marks 1-D data.
            attrs["patch_shape"] = np.array([1, patch_size, c], dtype=np.int64)
            attrs["sample_rate"] = int(rates.pop())
            attrs["normalization"] = json.dumps(normalizer.describe())
            attrs["seed"] = int(seed)
            attrs["sources"] = json.dumps([os.fspath(p) for p in files])
            attrs["sampling"] = json.dumps(
                {"mode": "grid", "stride": stride} if stride else {"mode": "random", "num_patches": m}
            )
            attrs["channels"] = channels
            attrs["streamae_version"] = __version__
    return {
        "rows": m,
        "patch_shape": (1, patch_size, c),
        "normalization": normalizer.describe(),
        "seconds": time.perf_counter() - started,
    }
