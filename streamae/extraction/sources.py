"""Image sources: the files behind the files, folders and glob patterns a user names.

A *source* is an image file (anything Pillow reads), a directory (its supported files,
recursively, in sorted order), a glob pattern, a NumPy ``.npy``/``.npz`` stack, a MATLAB
``.mat`` file or an MNIST idx file (plain or ``.gz``).  Only names are looked at here;
:mod:`streamae.extraction.readers` reads the files.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from streamae.errors import InputFileError, MissingInputError
from streamae.io.inputs import check_regular_input

# Files a directory or a glob contributes; other files there (notes, licences) are skipped.
PILLOW_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".pgm", ".ppm", ".pbm", ".pnm"}
)
ARRAY_SUFFIXES = frozenset({".npy", ".npz", ".mat"})
# With a raw layout, the files a folder contributes besides those: no suffix (Olshausen's
# image files) or a suffix that says "raw bytes".  Named files and globs may be any name.
RAW_SUFFIXES = frozenset({"", ".raw", ".bin", ".dat"})

SUPPORTED_TEXT = (
    "an image (PNG, JPEG, TIFF, BMP, GIF, WebP), a .npy/.npz stack, a .mat file "
    "or an MNIST idx file (*-idx3-ubyte, plain or .gz)"
)


def is_idx_name(path: Path) -> bool:
    """True for MNIST-style idx file names (``*-idx3-ubyte``, ``*.idx3-ubyte.gz``, ``*.idx``)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return ("idx" in name and name.endswith("ubyte")) or name.endswith((".idx", ".idx3"))


def is_supported(path: Path) -> bool:
    """True if the file's name says it is a source streamae reads."""
    suffix = path.suffix.lower()
    return suffix in PILLOW_SUFFIXES or suffix in ARRAY_SUFFIXES or is_idx_name(path)


def expand_sources(sources: Sequence[str | os.PathLike], *, raw: bool = False) -> list[Path]:
    """The files behind ``sources``, in order: files as given, directories and globs expanded.

    With ``raw`` (a raw layout was given) files of no known type are raw files: named
    ones and glob matches whatever their names, in folders those of :data:`RAW_SUFFIXES`.
    Raises :class:`MissingInputError` for a path that neither exists nor matches as a
    pattern, :class:`InputFileError` for a directory or pattern without supported files
    or an explicitly named file of an unsupported type.
    """
    if not sources:
        raise InputFileError(f"no sources given; give {SUPPORTED_TEXT}, a folder or a glob pattern.")
    files: list[Path] = []
    for source in sources:
        text = os.fspath(source)
        path = Path(text)
        if path.is_dir():
            found = _supported_below(path, raw=raw)
            if not found:
                raise InputFileError(
                    f"{path}: the folder holds no image files (looked recursively for "
                    f"{_suffix_list()}); give a folder with images."
                )
            files.extend(found)
        elif path.exists():
            check_regular_input(path, "an image file")  # a FIFO would block the reader forever
            if not (raw or is_supported(path)):
                raise InputFileError(
                    f"{path}: unsupported file type '{path.suffix or path.name}'; give {SUPPORTED_TEXT}."
                )
            files.append(path)
        elif glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            found = []
            for match in map(Path, matches):
                if match.is_dir():
                    found.extend(_supported_below(match, raw=raw))
                elif raw or is_supported(match):
                    found.append(check_regular_input(match, "an image file"))
            if not matches:
                raise InputFileError(f"{text}: the pattern matches no files; check the pattern.")
            if not found:
                raise InputFileError(
                    f"{text}: the pattern matches {len(matches)} paths but no image files (looked for "
                    f"{_suffix_list()}); check the pattern."
                )
            files.extend(found)
        else:
            raise MissingInputError(f"{path}: no such file, folder or matching pattern; check the path.")
    return files


def _suffix_list() -> str:
    return ", ".join(sorted(PILLOW_SUFFIXES | ARRAY_SUFFIXES)) + ", *-idx3-ubyte"


def _supported_below(folder: Path, *, raw: bool = False) -> list[Path]:
    """Supported files below ``folder``, recursively, sorted by relative path; hidden ones skipped.

    With ``raw`` also the files whose suffix is one of :data:`RAW_SUFFIXES`.
    """
    found = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_file() and (is_supported(path) or (raw and path.suffix.lower() in RAW_SUFFIXES)):
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())
