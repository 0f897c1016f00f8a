"""Image readers: every image in a file with its size (headers only), then its pixels.

One table, :data:`FORMATS`, says for each kind of file how its images are listed
(``entries``, reading headers only, so the sampling plan is made before any pixel is
decoded) and how its pixels are read (``open``, returning an opened file that yields one
image at a time).  Kinds: Pillow images (every page of a multi-page TIFF or every frame
of a GIF is one image), NumPy ``.npy``/``.npz`` stacks, MATLAB ``.mat`` files (v5 through
SciPy, v7.3 through h5py), MNIST idx files (plain or ``.gz``) and, when told their
layout (:class:`RawLayout`), raw files of pixels without a header (Olshausen's 512×512
big-endian float32 images, the notes' own data).
"""

from __future__ import annotations

import gzip
import math
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from streamae.errors import InputFileError
from streamae.extraction.sources import is_idx_name, is_supported
from streamae.options import setting
from streamae.text import printable

KIND_PILLOW = "pillow"
KIND_NPY = "npy"
KIND_NPZ = "npz"
KIND_MAT = "mat"
KIND_MAT73 = "mat73"
KIND_IDX = "idx"
KIND_RAW = "raw"

# The value types raw files may hold, by the names the command line takes.
RAW_DTYPES = {
    "uint8": "u1",
    "uint16-le": "<u2",
    "uint16-be": ">u2",
    "float32-le": "<f4",
    "float32-be": ">f4",
    "float64-le": "<f8",
    "float64-be": ">f8",
}

# idx magic: two zero bytes, the element type (0x08 = unsigned byte), the rank.
IDX_UBYTE = 0x08


@dataclass(frozen=True)
class RawLayout:
    """How to read a raw file: images of ``height`` × ``width`` values of ``dtype`` (a key of
    :data:`RAW_DTYPES`), back to back, row by row, no header."""

    height: int
    width: int
    dtype: str = "float32-be"

    @property
    def numpy_dtype(self) -> np.dtype:
        """The stored dtype, byte order included."""
        return np.dtype(RAW_DTYPES[self.dtype])


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
    raw: RawLayout | None = None

    @property
    def label(self) -> str:
        """How error messages name the image: the file, and the index for stacks and pages."""
        return (
            str(self.path) if self.index == 0 and self.kind == KIND_PILLOW else f"{self.path}[{self.index}]"
        )


class OpenedFile(Protocol):
    """A file opened for reading pixels; consecutive images of one file share it."""

    path: Path

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` as (H, W) or (H, W, C) values as stored."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Format:
    """How one kind of file is read: ``entries(path, variable)`` lists its images from the
    headers; ``open(entry)`` opens the file behind ``entry`` for reading pixels."""

    entries: Callable[[Path, str | None], list[ImageEntry]]
    open: Callable[[ImageEntry], OpenedFile]


def kind_of(path: Path, raw: RawLayout | None = None) -> str:
    """The kind of file ``path`` is, by its name (and, for ``.mat``, by its first bytes).

    With ``raw``, a file of no known type is a raw file of that layout.
    """
    if raw is not None and not is_supported(path):
        return KIND_RAW
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return KIND_NPY
    if suffix == ".npz":
        return KIND_NPZ
    if suffix == ".mat":
        import h5py

        # MATLAB v7.3 files are HDF5; older ones are MATLAB's own v5 format.
        return KIND_MAT73 if h5py.is_hdf5(path) else KIND_MAT
    if is_idx_name(path):
        return KIND_IDX
    return KIND_PILLOW


def inventory(
    files: Iterable[Path], *, variable: str | None = None, raw: RawLayout | None = None
) -> list[ImageEntry]:
    """Every image in ``files`` with its size, reading headers only (no pixel decoding).

    ``variable`` picks the array inside ``.npz`` and ``.mat`` files; ``raw`` is the layout
    of files of no known type (else they are refused earlier, by their names).
    """
    entries: list[ImageEntry] = []
    for path in files:
        kind = kind_of(path, raw)
        entries.extend(_raw_entries(path, raw) if kind == KIND_RAW else FORMATS[kind].entries(path, variable))
    return entries


def read_entries(entries: Sequence[ImageEntry], color: str) -> Iterable[tuple[int, np.ndarray]]:
    """Yield ``(i, raw)`` for each entry: raw (H, W) or (H, W, C) values as stored.

    Consecutive entries of one file share one opened file (a stack is loaded once).
    """
    opened: OpenedFile | None = None
    try:
        for i, entry in enumerate(entries):
            if opened is None or opened.path != entry.path:
                if opened is not None:
                    opened.close()
                    opened = None
                opened = _open(entry)
            raw = opened.image(entry.index)
            if raw.shape[:2] != (entry.height, entry.width):
                raise InputFileError(
                    f"{entry.label}: decoded to {raw.shape[0]}x{raw.shape[1]} pixels, but its header "
                    f"says {entry.height}x{entry.width}; the file may be damaged."
                )
            yield i, raw
    finally:
        if opened is not None:
            opened.close()


def _open(entry: ImageEntry) -> OpenedFile:
    try:
        return FORMATS[entry.kind].open(entry)
    except InputFileError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise _corrupt(entry.path, error) from error


def _corrupt(path: Path, error: Exception) -> InputFileError:
    return InputFileError(
        f"{path}: the image cannot be read ({type(error).__name__}: {error}); the file may be "
        "truncated or not an image; replace it or leave it out."
    )


class _Stack:
    """One stack file held open (or loaded) while its images are read.

    ``take(array, index)`` takes image ``index`` out of the array as laid out in the file.
    """

    def __init__(self, path: Path, array, take: Callable, handle=None) -> None:
        self.path = path
        self._array = array
        self._take = take
        self._handle = handle

    def image(self, index: int) -> np.ndarray:
        try:
            if self._array.ndim == 2:
                return self._take(self._array, None)
            return self._take(self._array, index)
        except (OSError, ValueError) as error:
            raise _corrupt(self.path, error) from error

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def _take_first_axis(array, index: int | None) -> np.ndarray:
    """Image ``index`` of an (N, H, W[, C]) stack; the whole array for a single (H, W) image."""
    return np.asarray(array) if index is None else np.asarray(array[index])


def _take_last_axis(array, index: int | None) -> np.ndarray:
    """Image ``index`` of a MATLAB (H, W[, C], N) stack."""
    return np.asarray(array) if index is None else np.asarray(array[..., index])


def _take_transposed(array, index: int | None) -> np.ndarray:
    """Image ``index`` of a MATLAB v7.3 stack: column-major on disk, so image i is array[i] transposed."""
    return np.asarray(array).T if index is None else np.asarray(array[index]).T


# --- Pillow -------------------------------------------------------------------------------


def _pillow_scale(mode: str) -> float:
    """Full-intensity value of a Pillow mode: 16-bit and 32-bit integer modes are 16-bit data."""
    if mode.startswith("I;16") or mode == "I":
        return 65535.0
    if mode == "F":
        return 1.0
    return 255.0


def _pillow_entries(path: Path, variable: str | None) -> list[ImageEntry]:
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


def _pillow_values(image) -> np.ndarray:
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


class _PillowFile:
    """A Pillow image file; each page or frame is opened and decoded on its own."""

    def __init__(self, entry: ImageEntry) -> None:
        self.path = entry.path

    def image(self, index: int) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(self.path) as image:
                image.seek(index)
                return _pillow_values(image)
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
            raise _corrupt(self.path, error) from error

    def close(self) -> None:
        pass


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


def check_declared_size(
    where: str, shape: tuple[int, ...], dtype: np.dtype, *, stored: int | None, loads_whole: bool
) -> None:
    """Refuse a header whose declared array cannot be real or cannot be held, before allocating.

    ``stored`` is how many bytes the file really holds for the array (None: unknown, e.g.
    compressed); ``loads_whole`` says the reader loads the whole array into memory, which
    must then fit the memory available now.  Sizes are Python integers: a product of
    header fields never overflows.
    """
    declared = math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize
    shown = "x".join(str(int(d)) for d in shape)
    if stored is not None and declared > stored:
        raise InputFileError(
            f"{where}: the header declares a {shown} array ({declared:,} bytes) but the file holds "
            f"only {stored:,} bytes for it; the file is truncated or its header damaged: download "
            "or save it again."
        )
    if loads_whole:
        from streamae.runtime.memory import available_memory

        available = available_memory()
        if declared > available:
            raise InputFileError(
                f"{where}: the {shown} array ({declared:,} bytes) is read whole and does not fit the "
                f"{available:,} bytes of memory available; split it into smaller files or use a larger node."
            )


# A 2-D array whose sides differ by more than this factor is taken for rows of vectors.
_VECTOR_ASPECT = 8


def _stack_entries(
    path: Path,
    kind: str,
    shape: tuple[int, ...],
    dtype: np.dtype,
    variable: str | None,
    layout: str,
    *,
    stored: int | None = None,
    loads_whole: bool = False,
) -> list[ImageEntry]:
    """Entries for a stack of the given shape; ``layout`` is "numpy" (N,H,W[,C]) or "matlab" (H,W[,C],N).

    ``stored`` and ``loads_whole`` are checked against the declared size first
    (:func:`check_declared_size`).
    """
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
    check_declared_size(where, tuple(shape), np.dtype(dtype), stored=stored, loads_whole=loads_whole)
    return [ImageEntry(path, kind, i, int(height), int(width), scale, variable) for i in range(count)]


def _npy_entries(path: Path, variable: str | None) -> list[ImageEntry]:
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            shape, _, dtype = _read_npy_header(handle, version)
            stored = path.stat().st_size - handle.tell()
    except (OSError, ValueError) as error:
        raise InputFileError(
            f"{path}: not a readable .npy file ({printable(error)}); save the stack with numpy.save."
        ) from error
    return _stack_entries(path, KIND_NPY, shape, dtype, None, "numpy", stored=stored)


def _read_npy_header(handle, version: tuple[int, int]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of a .npy header (no pickles: object arrays are refused)."""
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(handle)
    if dtype.hasobject:
        raise ValueError("it holds Python objects, which are never unpickled")
    return shape, fortran, dtype


def _npy_open(entry: ImageEntry) -> _Stack:
    return _Stack(entry.path, np.load(entry.path, mmap_mode="r", allow_pickle=False), _take_first_axis)


def _pick(path: Path, names: list[str], variable: str | None) -> str:
    """The array to read from a file holding ``names``: ``variable``, or the only one."""
    if variable is not None:
        if variable not in names:
            raise InputFileError(
                f"{path}: has no variable '{variable}' (it holds {', '.join(names) or 'none'}); "
                f"pick one with {setting('variable', 'NAME')}."
            )
        return variable
    if len(names) != 1:
        raise InputFileError(
            f"{path}: holds {len(names)} arrays ({', '.join(names) or 'none'}); "
            f"pick one with {setting('variable', 'NAME')}."
        )
    return names[0]


def _npz_entries(path: Path, variable: str | None) -> list[ImageEntry]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = sorted(n[:-4] for n in archive.namelist() if n.endswith(".npy"))
            name = _pick(path, names, variable)
            member_size = archive.getinfo(name + ".npy").file_size
            with archive.open(name + ".npy") as member:
                version = np.lib.format.read_magic(member)
                shape, _, dtype = _read_npy_header(member, version)
                stored = member_size - member.tell()
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise InputFileError(
            f"{path}: not a readable .npz file ({printable(error)}); save it with numpy.savez."
        ) from error
    # The array is decompressed whole into memory when read.
    return _stack_entries(path, KIND_NPZ, shape, dtype, name, "numpy", stored=stored, loads_whole=True)


def _npz_open(entry: ImageEntry) -> _Stack:
    with np.load(entry.path, allow_pickle=False) as archive:
        return _Stack(entry.path, archive[entry.variable], _take_first_axis)


# --- MATLAB -------------------------------------------------------------------------------

_MAT_CLASS_DTYPES = {
    "double": "f8", "single": "f4", "uint8": "u1", "int8": "i1", "uint16": "u2", "int16": "i2",
    "uint32": "u4", "int32": "i4", "uint64": "u8", "int64": "i8", "logical": "u1",
}  # fmt: skip


def _mat73_entries(path: Path, variable: str | None) -> list[ImageEntry]:
    import h5py

    # MATLAB v7.3 files store arrays column-major: an (H, W, N) array appears to h5py as (N, W, H).
    with h5py.File(path, "r") as handle:
        names = sorted(name for name in handle if not name.startswith("#") and _is_dataset(handle, name))
        name = _pick(path, names, variable)
        dataset = handle[name]
        return _stack_entries(path, KIND_MAT73, dataset.shape[::-1], dataset.dtype, name, "matlab")


def _is_dataset(handle, name: str) -> bool:
    """True for a dataset; False for a group or a link that cannot be followed (a cycle, a
    dangling soft link), which holds no array to read."""
    import h5py

    try:
        return isinstance(handle.get(name), h5py.Dataset)
    except (KeyError, OSError, RuntimeError, ValueError):
        return False


def _mat73_open(entry: ImageEntry) -> _Stack:
    import h5py

    handle = h5py.File(entry.path, "r")
    return _Stack(entry.path, handle[entry.variable], _take_transposed, handle)


def _mat_entries(path: Path, variable: str | None) -> list[ImageEntry]:
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
    # loadmat reads the variable whole; a compressed one may be far larger than the file.
    return _stack_entries(
        path, KIND_MAT, tuple(shape), np.dtype(_MAT_CLASS_DTYPES[cls]), name, "matlab", loads_whole=True
    )


def _mat_open(entry: ImageEntry) -> _Stack:
    import scipy.io

    array = scipy.io.loadmat(entry.path, variable_names=[entry.variable])[entry.variable]
    return _Stack(entry.path, array, _take_last_axis)


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


def _idx_entries(path: Path, variable: str | None) -> list[ImageEntry]:
    try:
        with _open_idx(path) as handle:
            dims = _idx_header(path, handle)
    except (OSError, EOFError) as error:
        raise InputFileError(f"{path}: cannot read the idx file ({error}); download it again.") from error
    # A plain file holds its pixels after the header; a gzipped one is read whole into memory.
    compressed = path.name.lower().endswith(".gz")
    stored = None if compressed else path.stat().st_size - 4 - 4 * len(dims)
    return _stack_entries(
        path, KIND_IDX, dims, np.dtype("u1"), None, "numpy", stored=stored, loads_whole=True
    )


def _idx_open(entry: ImageEntry) -> _Stack:
    """The whole idx file loaded as an (N, H, W) or (H, W) uint8 array."""
    path = entry.path
    try:
        with _open_idx(path) as handle:
            dims = _idx_header(path, handle)
            data = handle.read()
    except (OSError, EOFError) as error:
        raise InputFileError(f"{path}: cannot read the idx file ({error}); download it again.") from error
    needed = math.prod(dims)
    if len(data) < needed:
        raise InputFileError(
            f"{path}: the idx file holds {len(data)} bytes of pixels, {needed} expected for {dims}; "
            "it is truncated; download it again."
        )
    return _Stack(path, np.frombuffer(data, dtype=np.uint8, count=needed).reshape(dims), _take_first_axis)


# --- raw pixels ---------------------------------------------------------------------------


def _raw_entries(path: Path, raw: RawLayout) -> list[ImageEntry]:
    """One entry per ``raw.height`` × ``raw.width`` image in the file, which must hold whole ones."""
    image_bytes = raw.height * raw.width * raw.numpy_dtype.itemsize
    size = path.stat().st_size
    if size == 0 or size % image_bytes:
        raise InputFileError(
            f"{path}: holds {size:,} bytes, not a whole number of {raw.height}x{raw.width} {raw.dtype} "
            f"images ({image_bytes:,} bytes each); check the raw shape and dtype."
        )
    scale = _array_scale(raw.numpy_dtype)
    return [
        ImageEntry(path, KIND_RAW, i, raw.height, raw.width, scale, raw=raw)
        for i in range(size // image_bytes)
    ]


def _native(array, index: int | None) -> np.ndarray:
    """Image ``index`` of an (N, H, W) memory map, copied into the machine's byte order."""
    return np.asarray(array[index], dtype=array.dtype.newbyteorder("="))


def _raw_open(entry: ImageEntry) -> _Stack:
    """The raw file mapped as (N, H, W) values (read as images are taken, never whole)."""
    raw = entry.raw
    dtype = raw.numpy_dtype
    count = entry.path.stat().st_size // (raw.height * raw.width * dtype.itemsize)
    try:
        array = np.memmap(entry.path, dtype=dtype, mode="r", shape=(count, raw.height, raw.width))
    except (OSError, ValueError) as error:
        raise _corrupt(entry.path, error) from error
    return _Stack(entry.path, array, _native)


FORMATS: dict[str, Format] = {
    KIND_PILLOW: Format(_pillow_entries, _PillowFile),
    KIND_NPY: Format(_npy_entries, _npy_open),
    KIND_NPZ: Format(_npz_entries, _npz_open),
    KIND_MAT: Format(_mat_entries, _mat_open),
    KIND_MAT73: Format(_mat73_entries, _mat73_open),
    KIND_IDX: Format(_idx_entries, _idx_open),
    KIND_RAW: Format(lambda path, variable: [], _raw_open),  # listed by _raw_entries, which needs the layout
}
