"""Write streamae/data/audio/chord.wav: a self-made test recording (public domain).

Two seconds of an A major chord (A4 440 Hz, C#5 554.37 Hz, E5 659.26 Hz) with a
slow attack and decay, plus white noise at -30 dB, 16-bit PCM mono at 8 kHz (32 KB).
Run from the repository root: ``python scripts/make_chord.py``.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

RATE = 8000
SECONDS = 2.0
FREQUENCIES = (440.0, 554.37, 659.26)
OUTPUT = Path(__file__).resolve().parent.parent / "streamae" / "data" / "audio" / "chord.wav"


def chord(seed: int = 0) -> np.ndarray:
    """The chord's samples in [-1, 1], float64 (frames,)."""
    t = np.arange(int(RATE * SECONDS)) / RATE
    envelope = np.minimum(1.0, t / 0.05) * np.exp(-t / 1.5)
    tone = sum(np.sin(2 * np.pi * f * t + k) for k, f in enumerate(FREQUENCIES)) / len(FREQUENCIES)
    noise = np.random.default_rng(seed).normal(0.0, 10 ** (-30 / 20), size=t.shape)
    return np.clip(0.8 * envelope * tone + noise, -1.0, 1.0)


def main() -> None:
    samples = np.round(chord() * 32767).astype("<i2")
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(OUTPUT), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(RATE)
        handle.writeframes(samples.tobytes())


if __name__ == "__main__":
    main()
