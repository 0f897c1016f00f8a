"""Headers that declare more than the file holds or memory can take (issue 11, class 9).

idx, .npy, .npz and MATLAB files describe their arrays in a header; a damaged or hostile
header may declare 10^8 x 10^5 x 10^5 values in a 116-byte file, or a product of fields
that overflows 64 bits.  ``extract`` must compare the declared size with the bytes the file
really holds (and, for readers that load an array whole, with the memory available) before
allocating anything, and say so naming the file, never "out of memory" with options it does
not have, never an internal error.  A MATLAB v7.3 file whose variables are a soft-link cycle
is refused the same way.
"""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import invoke

from .faultkit import assert_clean_case


def _idx(path: Path, dims: tuple[int, ...], pixels: int = 100, compress: bool = False) -> Path:
    content = bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + bytes(pixels)
    if compress:
        with gzip.open(path, "wb") as handle:
            handle.write(content)
    else:
        path.write_bytes(content)
    return path


def _npy_bytes(shape: tuple[int, ...], dtype: str = "<f8", payload: int = 64) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    buffer.write(bytes(payload))
    return buffer.getvalue()


def _npz(path: Path, shape: tuple[int, ...], **kwargs) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", _npy_bytes(shape, **kwargs))
    return path


def _npy(path: Path, shape: tuple[int, ...], **kwargs) -> Path:
    path.write_bytes(_npy_bytes(shape, **kwargs))
    return path


def _mat73_cycle(path: Path) -> Path:
    with h5py.File(path, "w", userblock_size=512) as handle:
        handle["images"] = h5py.SoftLink("/loop")
        handle["loop"] = h5py.SoftLink("/images")
    return path


HOLDS_ONLY = "holds only"
CASES = {
    "idx-116-bytes-declaring": (lambda p: _idx(p / "a-images-idx3-ubyte", (10**8, 10**5, 10**5)), HOLDS_ONLY),
    "idx-product-overflows": (lambda p: _idx(p / "b-images-idx3-ubyte", (2**32 - 1,) * 3), HOLDS_ONLY),
    "idx-one-image-short": (lambda p: _idx(p / "c-images-idx3-ubyte", (2, 10, 10), pixels=150), HOLDS_ONLY),
    "idx-2d-declaring-too-much": (lambda p: _idx(p / "d-images-idx2-ubyte", (70000, 70000)), HOLDS_ONLY),
    "idx-gz-beyond-memory": (
        lambda p: _idx(p / "e-images-idx3-ubyte.gz", (10**8, 10**5, 10**5), compress=True), "memory"
    ),
    "npz-huge-header": (lambda p: _npz(p / "f.npz", (10**9, 1000, 1000)), HOLDS_ONLY),
    "npz-overflowing-header": (lambda p: _npz(p / "g.npz", (2**62, 2**62, 4)), HOLDS_ONLY),
    "npy-huge-header": (lambda p: _npy(p / "h.npy", (10**9, 1000, 1000)), HOLDS_ONLY),
    "npy-one-row-short": (lambda p: _npy(p / "i.npy", (3, 8, 8), dtype="<u1", payload=150), HOLDS_ONLY),
    "mat73-soft-link-cycle": (lambda p: _mat73_cycle(p / "j.mat"), "arrays"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_a_declared_size_the_file_cannot_hold_is_refused(case, tmp_path):
    make, fragment = CASES[case]
    source = make(tmp_path)
    output = tmp_path / "patches.h5"
    result = invoke("extract", source, "-o", output, "--num-patches", "10", "-q")
    message = assert_clean_case(result, "extract", (1, 2), names=[source], fragments=[fragment])
    assert "--chunk-rows" not in message and "--memory-budget" not in message
    assert not output.exists()


@pytest.mark.parametrize("kind", ["idx", "npy", "npz"])
def test_an_honest_header_of_the_same_formats_still_works(kind, tmp_path):
    """The checks refuse lies only: exact sizes extract."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(3, 16, 16), dtype=np.uint8)
    if kind == "idx":
        source = tmp_path / "ok-images-idx3-ubyte"
        source.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 3, 16, 16) + pixels.tobytes())
    elif kind == "npy":
        source = tmp_path / "ok.npy"
        np.save(source, pixels)
    else:
        source = tmp_path / "ok.npz"
        np.savez_compressed(source, x=pixels)
    result = invoke("extract", source, "-o", tmp_path / "p.h5", "--num-patches", "10", "-q")
    assert result.exit_code == 0, result.output
