"""Image sources: find the images behind the command-line sources and decode them to float32.

A *source* is an image file (anything Pillow reads; every page of a multi-page TIFF or
every frame of a GIF is one image), a directory (its supported files, recursively, in
sorted order), a glob pattern, a NumPy ``.npy``/``.npz`` stack, a MATLAB ``.mat`` file
(v5 through SciPy, v7.3 through h5py) or an MNIST idx file (plain or ``.gz``).

:func:`inventory` turns sources into a list of :class:`ImageEntry` — where each image is
and its height and width — reading only headers, so the sampling plan is made before any
pixel is decoded.  :class:`ImageCache` then decodes consecutive runs of entries into one
packed float32 buffer (allocated once and reused), in the output colour: gray by ITU-R
BT.601 luma (0.299 R + 0.587 G + 0.114 B) or RGB.
"""

from __future__ import annotations

import glob
import gzip
import os
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamae.errors import DataError, InputFileError, MissingInputError

# ITU-R BT.601 luma weights, applied in float32 so every source type rounds alike.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)

COLOR_CHANNELS = {"gray": 1, "rgb": 3}

# Files a directory or a glob contributes; other files there (notes, licences) are skipped.
PILLOW_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".pgm", ".ppm", ".pbm", ".pnm"}
)
ARRAY_SUFFIXES = frozenset({".npy", ".npz", ".mat"})

KIND_PILLOW = "pillow"
KIND_NPY = "npy"
KIND_NPZ = "npz"
KIND_MAT = "mat"
KIND_MAT73 = "mat73"
KIND_IDX = "idx"

# idx magic: two zero bytes, the element type (0x08 = unsigned byte), the rank.
IDX_UBYTE = 0x08

SUPPORTED_TEXT = (
    "an image (PNG, JPEG, TIFF, BMP, GIF, WebP), a .npy/.npz stack, a .mat file "
    "or an MNIST idx file (*-idx3-ubyte, plain or .gz)"
)


@dataclass(frozen=True)
class ImageEntry:
    """One image of a source: the file, its index inside the file, its size and value scale.

    ``index`` is the page (Pillow) or the position in a stack; ``scale`` is the value
    of full intensity (255 for 8-bit data, 65535 for 16-bit, 1.0 for floats).
    """

    path: Path
    kind: str
    index: int
    height: int
    width: int
    scale: float
    variable: str | None = None

    @property
    def label(self) -> str:
        """How error messages name the image: the file, and the index for stacks and pages."""
        return (
            str(self.path) if self.index == 0 and self.kind == KIND_PILLOW else f"{self.path}[{self.index}]"
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


def expand_sources(sources: Sequence[str | os.PathLike]) -> list[Path]:
    """The files behind ``sources``, in order: files as given, directories and globs expanded.

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
            found = _supported_below(path)
            if not found:
                raise InputFileError(
                    f"{path}: the folder holds no image files (looked recursively for "
                    f"{_suffix_list()}); give a folder with images."
                )
            files.extend(found)
        elif path.exists():
            if not is_supported(path):
                raise InputFileError(
                    f"{path}: unsupported file type '{path.suffix or path.name}'; give {SUPPORTED_TEXT}."
                )
            files.append(path)
        elif glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            found = []
            for match in map(Path, matches):
                if match.is_dir():
                    found.extend(_supported_below(match))
                elif is_supported(match):
                    found.append(match)
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


def _supported_below(folder: Path) -> list[Path]:
    """Supported files below ``folder``, recursively, sorted by relative path; hidden ones skipped."""
    found = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_file() and is_supported(path):
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def inventory(files: Iterable[Path], *, variable: str | None = None) -> list[ImageEntry]:
    """Every image in ``files`` with its size, reading headers only (no pixel decoding).

    ``variable`` picks the array inside ``.npz`` and ``.mat`` files.
    """
    entries: list[ImageEntry] = []
    for path in files:
        suffix = path.suffix.lower()
        if suffix == ".npy":
            entries.extend(_npy_entries(path))
        elif suffix == ".npz":
            entries.extend(_npz_entries(path, variable))
        elif suffix == ".mat":
            entries.extend(_mat_entries(path, variable))
        elif is_idx_name(path):
            entries.extend(_idx_entries(path))
        else:
            entries.extend(_pillow_entries(path))
    return entries


# --- Pillow -------------------------------------------------------------------------------


def _pillow_scale(mode: str) -> float:
    """Full-intensity value of a Pillow mode: 16-bit and 32-bit integer modes are 16-bit data."""
    if mode.startswith("I;16") or mode == "I":
        return 65535.0
    if mode == "F":
        return 1.0
    return 255.0


def _corrupt(path: Path, error: Exception) -> InputFileError:
    return InputFileError(
        f"{path}: the image cannot be read ({type(error).__name__}: {error}); the file may be "
        "truncated or not an image; replace it or leave it out."
    )


def _pillow_entries(path: Path) -> list[ImageEntry]:
    from PIL import Image

    try:
        with Image.open(path) as image:
            entries = []
            for frame in range(getattr(image, "n_frames", 1)):
                image.seek(frame)
                width, height = image.size
                if _exif_orientation(image) in _TRANSPOSING_ORIENTATIONS:
                    width, height = height, width  # drawn rotated by a quarter turn
                entries.append(ImageEntry(path, KIND_PILLOW, frame, height, width, _pillow_scale(image.mode)))
            return entries
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise _corrupt(path, error) from error


# EXIF orientations (1-8) that swap width and height: the photo is stored turned by 90°.
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION_TAG = 0x0112


def _exif_orientation(image) -> int:
    """The EXIF orientation of an open Pillow image (1, upright, when it records none)."""
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION_TAG, 1))
    except (AttributeError, TypeError, ValueError, OSError):
        return 1


def _pillow_pixels(image) -> np.ndarray:
    """The current frame of an open Pillow image as (H, W) or (H, W, 3) values, upright.

    A photograph's EXIF orientation is applied, so patches are cut from the picture as
    it is meant to be seen (cameras store the sensor's rows and a turn to apply).
    """
    from PIL import ImageOps

    if _exif_orientation(image) != 1:
        image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in ("1", "L", "LA", "La"):
        return np.asarray(image.convert("L"))
    if mode.startswith("I") or mode == "F":
        return np.asarray(image)
    return np.asarray(image.convert("RGB"))


# --- NumPy --------------------------------------------------------------------------------


def _array_scale(dtype: np.dtype) -> float:
    """Full intensity of stored values: floats are taken as [0, 1], 16-bit integers as 16-bit."""
    if dtype.kind == "f":
        return 1.0
    if dtype.kind in "ui" and dtype.itemsize == 2:
        return 65535.0
    if dtype.kind in "uib":
        return 255.0
    raise TypeError(dtype)


def _stack_entries(
    path: Path, kind: str, shape: tuple[int, ...], dtype: np.dtype, variable: str | None, layout: str
) -> list[ImageEntry]:
    """Entries for a stack of the given shape; ``layout`` is "numpy" (N,H,W[,C]) or "matlab" (H,W[,C],N)."""
    expected = (
        "(H, W), (N, H, W) or (N, H, W, C)" if layout == "numpy" else "(H, W), (H, W, N) or (H, W, C, N)"
    )
    where = f"{path}" + (f" (variable '{variable}')" if variable else "")
    if len(shape) not in (2, 3, 4):
        raise InputFileError(
            f"{where}: holds an array of shape {tuple(shape)} ({len(shape)} dimensions); "
            f"give an image stack shaped {expected}."
        )
    try:
        scale = _array_scale(np.dtype(dtype))
    except TypeError:
        raise InputFileError(
            f"{where}: holds {dtype} values, not numbers; give an image stack of integers or floats."
        ) from None
    if len(shape) == 2 and max(shape) > _VECTOR_ASPECT * min(shape):
        # (60000, 784) is 60000 vectors, not a 60000x784 picture: never cut it into patches.
        raise InputFileError(
            f"{where}: holds a 2-D array of shape {tuple(shape)}, which looks like {shape[0]} vectors "
            f"of {shape[1]} values rather than an image; to train on the rows as they are, extract "
            "them with vectors (streamae extract --vectors), or save an image stack as (N, H, W)."
        )
    if len(shape) == 2:
        count, (height, width) = 1, shape
    elif layout == "numpy":
        count, height, width = shape[:3]
    else:
        height, width, count = shape[0], shape[1], shape[-1]
    if len(shape) == 4:
        channels = shape[3] if layout == "numpy" else shape[2]
        if channels not in (1, 3, 4):
            raise InputFileError(
                f"{where}: has {channels} colour channels (shape {tuple(shape)}); give 1 (gray), "
                "3 (RGB) or 4 (RGBA)."
            )
    if count < 1 or height < 1 or width < 1:
        raise InputFileError(f"{where}: the stack of shape {tuple(shape)} holds no images.")
    return [ImageEntry(path, kind, i, int(height), int(width), scale, variable) for i in range(count)]


# A 2-D array whose sides differ by more than this factor is taken for rows of vectors.
_VECTOR_ASPECT = 8


def _npy_entries(path: Path) -> list[ImageEntry]:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise InputFileError(
            f"{path}: not a readable .npy file ({error}); save the stack with numpy.save."
        ) from error
    return _stack_entries(path, KIND_NPY, array.shape, array.dtype, None, "numpy")


def _pick(path: Path, names: list[str], variable: str | None) -> str:
    """The array to read from a file holding ``names``: ``variable``, or the only one."""
    if variable is not None:
        if variable not in names:
            raise InputFileError(
                f"{path}: has no variable '{variable}' (it holds {', '.join(names) or 'none'}); "
                "pick one with --variable."
            )
        return variable
    if len(names) != 1:
        raise InputFileError(
            f"{path}: holds {len(names)} arrays ({', '.join(names) or 'none'}); pick one with --variable."
        )
    return names[0]


def _npz_entries(path: Path, variable: str | None) -> list[ImageEntry]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = sorted(n[:-4] for n in archive.namelist() if n.endswith(".npy"))
            name = _pick(path, names, variable)
            with archive.open(name + ".npy") as member:
                version = np.lib.format.read_magic(member)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(member)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise InputFileError(
            f"{path}: not a readable .npz file ({error}); save it with numpy.savez."
        ) from error
    return _stack_entries(path, KIND_NPZ, shape, dtype, name, "numpy")


# --- MATLAB -------------------------------------------------------------------------------

_MAT_CLASS_DTYPES = {
    "double": "f8", "single": "f4", "uint8": "u1", "int8": "i1", "uint16": "u2", "int16": "i2",
    "uint32": "u4", "int32": "i4", "uint64": "u8", "int64": "i8", "logical": "u1",
}  # fmt: skip


def _mat_entries(path: Path, variable: str | None) -> list[ImageEntry]:
    import h5py

    if h5py.is_hdf5(path):
        # MATLAB v7.3 files are HDF5 and store arrays column-major: an (H, W, N) array
        # appears to h5py as (N, W, H).
        with h5py.File(path, "r") as handle:
            names = sorted(
                k for k, v in handle.items() if isinstance(v, h5py.Dataset) and not k.startswith("#")
            )
            name = _pick(path, names, variable)
            dataset = handle[name]
            return _stack_entries(path, KIND_MAT73, dataset.shape[::-1], dataset.dtype, name, "matlab")
    import scipy.io

    try:
        listing = scipy.io.whosmat(path)
    except (OSError, ValueError, NotImplementedError, TypeError) as error:
        raise InputFileError(
            f"{path}: not a readable MATLAB file ({error}); save it with MATLAB's save."
        ) from error
    classes = {name: (shape, cls) for name, shape, cls in listing}
    name = _pick(path, sorted(classes), variable)
    shape, cls = classes[name]
    if cls not in _MAT_CLASS_DTYPES:
        raise InputFileError(
            f"{path}: variable '{name}' is a MATLAB {cls}, not a numeric array; pick another."
        )
    return _stack_entries(path, KIND_MAT, tuple(shape), np.dtype(_MAT_CLASS_DTYPES[cls]), name, "matlab")


# --- MNIST idx ----------------------------------------------------------------------------


def _open_idx(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _idx_header(path: Path, handle) -> tuple[int, ...]:
    """Read and check the idx header; returns the dimensions (N, H, W) or (H, W)."""
    head = handle.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != IDX_UBYTE or head[3] not in (2, 3):
        raise InputFileError(
            f"{path}: bad idx magic number 0x{head.hex() or 'empty'}; an MNIST image file starts "
            "with 0x00000803 (unsigned bytes, 3 dimensions); give the *-images-idx3-ubyte file."
        )
    dims = np.frombuffer(handle.read(4 * head[3]), dtype=">u4")
    if dims.size != head[3]:
        raise InputFileError(f"{path}: the idx header is truncated; download the file again.")
    return tuple(int(d) for d in dims)


def _idx_entries(path: Path) -> list[ImageEntry]:
    try:
        with _open_idx(path) as handle:
            dims = _idx_header(path, handle)
    except (OSError, EOFError) as error:
        raise InputFileError(f"{path}: cannot read the idx file ({error}); download it again.") from error
    return _stack_entries(path, KIND_IDX, dims, np.dtype("u1"), None, "numpy")


def _idx_array(path: Path) -> np.ndarray:
    """The whole idx file as an (N, H, W) or (H, W) uint8 array."""
    try:
        with _open_idx(path) as handle:
            dims = _idx_header(path, handle)
            data = handle.read()
    except (OSError, EOFError) as error:
        raise InputFileError(f"{path}: cannot read the idx file ({error}); download it again.") from error
    needed = int(np.prod(dims))
    if len(data) < needed:
        raise InputFileError(
            f"{path}: the idx file holds {len(data)} bytes of pixels, {needed} expected for {dims}; "
            "it is truncated; download it again."
        )
    return np.frombuffer(data, dtype=np.uint8, count=needed).reshape(dims)


# --- decoding -----------------------------------------------------------------------------


def to_color(pixels: np.ndarray, color: str) -> np.ndarray:
    """Convert (H, W) or (H, W, C) values to float32 (H, W, 1) gray or (H, W, 3) RGB.

    Gray from colour is the BT.601 luma of the first three channels (alpha dropped);
    RGB from gray repeats the gray value in all three channels.
    """
    values = np.asarray(pixels)
    if values.ndim == 2:
        values = values[:, :, None]
    channels = values.shape[2]
    if color == "gray":
        if channels < 3:
            return values[:, :, :1].astype(np.float32)
        rgb = values[:, :, :3].astype(np.float32)
        luma = (
            rgb[:, :, 0] * LUMA_WEIGHTS[0] + rgb[:, :, 1] * LUMA_WEIGHTS[1] + rgb[:, :, 2] * LUMA_WEIGHTS[2]
        )
        return luma[:, :, None]
    if channels < 3:
        return np.repeat(values[:, :, :1].astype(np.float32), 3, axis=2)
    return values[:, :, :3].astype(np.float32)


class _StackReader:
    """Reads single images out of one stack file, holding the file open (or loaded) meanwhile."""

    def __init__(self, entry: ImageEntry) -> None:
        self.path = entry.path
        self.kind = entry.kind
        self._handle = None
        try:
            if entry.kind == KIND_NPY:
                self._array = np.load(entry.path, mmap_mode="r", allow_pickle=False)
            elif entry.kind == KIND_NPZ:
                with np.load(entry.path, allow_pickle=False) as archive:
                    self._array = archive[entry.variable]
            elif entry.kind == KIND_IDX:
                self._array = _idx_array(entry.path)
            elif entry.kind == KIND_MAT:
                import scipy.io

                self._array = scipy.io.loadmat(entry.path, variable_names=[entry.variable])[entry.variable]
            elif entry.kind == KIND_MAT73:
                import h5py

                self._handle = h5py.File(entry.path, "r")
                self._array = self._handle[entry.variable]
        except InputFileError:
            raise
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            raise _corrupt(entry.path, error) from error

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` as (H, W) or (H, W, C)."""
        array = self._array
        try:
            if self.kind == KIND_MAT73:
                # Column-major on disk: image i of (H, W, [C,] N) is array[i] transposed.
                if array.ndim == 2:
                    return np.asarray(array).T
                return np.asarray(array[index]).T
            if array.ndim == 2:
                return np.asarray(array)
            if self.kind == KIND_MAT:
                return np.asarray(array[..., index])
            return np.asarray(array[index])
        except (OSError, ValueError) as error:
            raise _corrupt(self.path, error) from error

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def read_entries(entries: Sequence[ImageEntry], color: str) -> Iterable[tuple[int, np.ndarray]]:
    """Yield ``(i, raw)`` for each entry: raw (H, W) or (H, W, C) values as stored.

    Consecutive entries of one file share one opened file (a stack is loaded once).
    """
    from PIL import Image

    reader: _StackReader | None = None
    try:
        for i, entry in enumerate(entries):
            if entry.kind == KIND_PILLOW:
                try:
                    with Image.open(entry.path) as image:
                        image.seek(entry.index)
                        raw = _pillow_pixels(image)
                except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
                    raise _corrupt(entry.path, error) from error
            else:
                if reader is None or reader.path != entry.path:
                    if reader is not None:
                        reader.close()
                    reader = _StackReader(entry)
                raw = reader.image(entry.index)
            if raw.shape[:2] != (entry.height, entry.width):
                raise InputFileError(
                    f"{entry.label}: decoded to {raw.shape[0]}x{raw.shape[1]} pixels, but its header "
                    f"says {entry.height}x{entry.width}; the file may be damaged."
                )
            yield i, raw
    finally:
        if reader is not None:
            reader.close()


def decoded_bytes(entry: ImageEntry, color: str) -> int:
    """Bytes one image takes decoded to float32 in ``color``."""
    return entry.height * entry.width * COLOR_CHANNELS[color] * 4


def group_by_budget(entries: Sequence[ImageEntry], color: str, budget: int) -> list[tuple[int, int]]:
    """Split the entries into consecutive runs ``[first, stop)`` whose decoded size fits ``budget``.

    An image larger than the budget alone forms a run of its own.
    """
    groups: list[tuple[int, int]] = []
    first, used = 0, 0
    for i, entry in enumerate(entries):
        size = decoded_bytes(entry, color)
        if i > first and used + size > budget:
            groups.append((first, i))
            first, used = i, 0
        used += size
    if entries:
        groups.append((first, len(entries)))
    return groups


class ImageCache:
    """Decodes runs of images into one packed float32 buffer, reused for every run.

    ``load(first, stop)`` returns ``(pixels, offsets, widths)``: pixels is a flat float32
    array holding image ``first + k`` as (H, W, C) in C order from ``offsets[k]``;
    widths (k,) int64.  Loading the run already held costs nothing, so with a single run
    (all images within the budget) every image is decoded once for the whole extract.
    Values are divided by each image's full-intensity value when ``unit_scale`` is set.
    """

    def __init__(
        self,
        entries: Sequence[ImageEntry],
        color: str,
        groups: Sequence[tuple[int, int]],
        *,
        unit_scale: bool,
    ) -> None:
        self.entries = list(entries)
        self.color = color
        self.channels = COLOR_CHANNELS[color]
        self.unit_scale = unit_scale
        largest = max((sum(decoded_bytes(e, color) for e in self.entries[a:b]) for a, b in groups), default=0)
        self._pixels = np.empty(largest // 4, dtype=np.float32)
        self._held: tuple[int, int] | None = None
        self._offsets = np.zeros(0, dtype=np.int64)
        self._widths = np.zeros(0, dtype=np.int64)
        self.decoded = 0  # images decoded so far, for tests and progress

    def load(self, first: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decode images [first, stop) (unless already held) and return the packed buffer."""
        if self._held != (first, stop):
            run = self.entries[first:stop]
            sizes = np.array([e.height * e.width * self.channels for e in run], dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
            self._held = None  # a failure part-way leaves nothing claimed as held
            for k, raw in read_entries(run, self.color):
                image = to_color(raw, self.color)
                if image.dtype.kind == "f" and not np.isfinite(image).all():
                    # One NaN would turn sigma, the mean or the covariance into NaN everywhere.
                    raise DataError(
                        f"{run[k].label}: the image holds NaN or infinite values; replace them "
                        "(for example with numpy.nan_to_num) or leave the image out."
                    )
                if self.unit_scale:
                    # Division (not a multiplied reciprocal) so 8-bit v/255 is exactly float32(v/255).
                    image /= np.float32(run[k].scale)
                target = self._pixels[offsets[k] : offsets[k] + sizes[k]]
                target[:] = image.ravel()
                self.decoded += 1
            self._offsets = offsets
            self._widths = np.array([e.width for e in run], dtype=np.int64)
            self._held = (first, stop)
        return self._pixels, self._offsets, self._widths
