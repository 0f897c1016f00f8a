"""The sample data that ships with streamae: listed, located, copied, and the MNIST digits loaded.

Three samples live in the installed package (``streamae/data``), each with its licence
note beside it:

- ``photos``: four photographs (CC0 / public domain), the natural-image exercises' input;
- ``mnist``: the MNIST test set, 10,000 handwritten digits 28×28 and their labels
  (CC BY-SA 3.0), the MNIST and self-taught exercises' input;
- ``audio``: a two-second A major chord synthesised for the project (CC0).

``copy_samples(["photos"], ".")`` writes ``./photos/`` (what ``streamae data photos`` does),
so the README's commands run as written, offline.
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamae.errors import OutputExistsError, UsageError
from streamae.io.atomic import atomic_output, check_output_path
from streamae.text import printable

DATA_ROOT = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Sample:
    """One sample: its name (the folder it is copied to), its folder in the package, its files."""

    name: str
    folder: str
    files: tuple[str, ...]
    what: str
    licence: str

    @property
    def path(self) -> Path:
        """The installed folder holding the files (and LICENSES.md)."""
        return DATA_ROOT / self.folder


SAMPLES = {
    sample.name: sample
    for sample in (
        Sample(
            "photos",
            "images",
            ("astronaut.png", "camera.png", "chelsea.png", "coffee.png"),
            "four photographs (512x512 gray, 512x512, 600x400 and 451x300 RGB): natural-image patches",
            "CC0 / public domain",
        ),
        Sample(
            "mnist",
            "mnist",
            ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
            "the MNIST test set: 10,000 handwritten digits, 28x28 uint8, and their labels",
            "CC BY-SA 3.0",
        ),
        Sample(
            "audio", "audio", ("chord.wav",), "an A major chord with noise, 2 s, 8 kHz, 16-bit mono", "CC0"
        ),
    )
}
LICENCE_NOTE = "LICENSES.md"


def sample(name: str) -> Sample:
    """The sample called ``name``; a :class:`UsageError` naming the choices otherwise."""
    if name not in SAMPLES:
        raise UsageError(
            f"no sample data called {name!r}; choose from {', '.join(SAMPLES)}.", parameter="names"
        )
    return SAMPLES[name]


def list_samples() -> list[dict]:
    """Each sample as a dict: name, path (installed folder), files, bytes, what it is, licence."""
    return [
        {
            "name": s.name,
            "path": str(s.path),
            "files": list(s.files),
            "bytes": sum((s.path / f).stat().st_size for f in s.files),
            "what": s.what,
            "licence": s.licence,
        }
        for s in SAMPLES.values()
    ]


def copy_samples(
    names: list[str] | tuple[str, ...] | str, output: str | os.PathLike = ".", *, force: bool = False
) -> list[Path]:
    """Copy each named sample to ``output/<name>/`` with its licence note; returns the folders.

    ``output`` must exist; each sample's folder is made in it.  Every file is written
    atomically; a file already there is replaced only with ``force`` (checked for every
    file before anything is copied, so a refusal copies nothing).
    """
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise UsageError(f"name the samples to copy ({', '.join(SAMPLES)}).", parameter="names")
    chosen = [sample(name) for name in dict.fromkeys(names)]
    output = Path(output)
    _check_output_folder(output)
    plan = []
    for s in chosen:
        folder = output / s.name
        if folder.exists() and not folder.is_dir():
            raise OutputExistsError(
                f"{folder} exists and is not a folder; remove it or choose another output."
            )
        for name in (*s.files, LICENCE_NOTE):
            source, target = s.path / name, folder / name
            if folder.is_dir():
                check_output_path(target, force=force, inputs=[source])
            plan.append((source, target))
    for s in chosen:
        (output / s.name).mkdir(exist_ok=True)
    for source, target in plan:
        with atomic_output(target, force=force, inputs=(source,)) as temporary:
            shutil.copyfile(source, temporary)
    return [output / s.name for s in chosen]


def _check_output_folder(output: Path) -> None:
    """Refuse an output that is not an existing folder (missing, a file, a loop, a name too long)."""
    try:
        is_folder = output.is_dir()
    except OSError as error:  # a name too long, say: stat itself fails
        raise UsageError(
            f"{printable(output, 120)}: cannot be used as the output folder ({error.strerror}); "
            "give another output folder.",
            parameter="output",
        ) from None
    if not is_folder:
        raise UsageError(
            f"{printable(output, 120)}: no such folder; create it or give another output folder.",
            parameter="output",
        )


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The shipped MNIST test digits: X (10000, 784) float64 pixels / 255 (rows in C order of
    28×28), y (10000,) int64 labels 0–9."""
    folder = SAMPLES["mnist"].path
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz", "rb") as handle:
        images = np.frombuffer(handle.read(), dtype=np.uint8, offset=16)
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "rb") as handle:
        labels = np.frombuffer(handle.read(), dtype=np.uint8, offset=8)
    return images.reshape(-1, 784) / 255.0, labels.astype(np.int64)
