"""Hostile image sources for ``extract``: damaged files are refused clearly, odd-but-valid ones work.

Damaged sources (truncated PNG and JPEG at several offsets, text named .png, an empty file,
an image smaller than the patch, array files holding objects) must end with one plain line
naming the file, exit code 2 and the previous output untouched.  Valid but unusual images
(16-bit, palette, RGBA, 1x1 with a 1x1 patch, a folder of mixed sizes and modes) must give
a patch file of finite values in the documented range.
"""

from __future__ import annotations

import io
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import invoke
from PIL import Image

from .faultkit import assert_clean_case

RNG = np.random.default_rng(21)


def _png_bytes(array: np.ndarray, mode: str | None = None, **save) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array) if mode is None else Image.fromarray(array, mode=mode)
    image.save(buffer, format="PNG", **save)
    return buffer.getvalue()


def _jpeg_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


NOISE = RNG.integers(0, 256, size=(40, 48), dtype=np.uint8)
PNG = _png_bytes(NOISE)
JPEG = _jpeg_bytes(np.stack([NOISE] * 3, axis=-1))


def _cut(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


# name -> (file name, bytes): each one a damaged image the extract must refuse by name.
DAMAGED = {
    "PNG cut after the signature": ("cut.png", PNG[:8]),
    "PNG cut in the header": ("cut.png", PNG[:20]),
    "PNG cut at a quarter": ("cut.png", _cut(PNG, 0.25)),
    "PNG cut at a half": ("cut.png", _cut(PNG, 0.5)),
    "PNG cut at nine tenths": ("cut.png", _cut(PNG, 0.9)),
    "JPEG cut at a quarter": ("cut.jpg", _cut(JPEG, 0.25)),
    "JPEG cut at a half": ("cut.jpg", _cut(JPEG, 0.5)),
    "JPEG cut before the end marker": ("cut.jpg", JPEG[:-2]),
    "text renamed .png": ("notes.png", b"these are my notes, not an image\n" * 10),
    "empty .png": ("empty.png", b""),
    "empty .jpg": ("empty.jpg", b""),
    "PNG named .jpg": ("wrong.jpg", PNG[:40]),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_image_is_refused_by_name(case, tmp_path, guard):
    name, content = DAMAGED[case]
    bad = tmp_path / name
    bad.write_bytes(content)
    # normalize none skips pass 1, so damage found while writing is covered as well.
    for normalize in ("ufldl", "none"):
        result = invoke("extract", bad, "-o", guard.path, "--force", "--num-patches", "50",
                        "--normalize", normalize)  # fmt: skip
        assert_clean_case(result, "extract", 2, names=[bad])
    guard.assert_intact()


def test_one_damaged_image_in_a_folder_of_good_ones(tmp_path, guard):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(3):
        (folder / f"good{index}.png").write_bytes(PNG)
    (folder / "bad.png").write_bytes(_cut(PNG, 0.5))
    result = invoke("extract", folder, "-o", guard.path, "--force", "--num-patches", "100")
    assert_clean_case(result, "extract", 2, names=["bad.png"])
    guard.assert_intact()


@pytest.mark.parametrize("size", [(1, 1), (7, 30), (30, 7)])
def test_a_single_image_smaller_than_the_patch(size, tmp_path, guard):
    small = tmp_path / "small.png"
    small.write_bytes(_png_bytes(np.full(size, 100, dtype=np.uint8)))
    result = invoke("extract", small, "-o", guard.path, "--force", "--patch-size", "8")
    assert_clean_case(result, "extract", 2, names=[small], fragments=["smaller than the 8x8 patch"])
    guard.assert_intact()


def test_object_arrays_are_refused_not_unpickled(tmp_path, guard):
    """A .npy holding Python objects would need pickle to load: refused, never unpickled."""
    hostile = tmp_path / "objects.npy"
    np.save(hostile, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    result = invoke("extract", hostile, "-o", guard.path, "--force")
    assert_clean_case(result, "extract", 2, names=[hostile])
    archive = tmp_path / "objects.npz"
    np.savez(archive, images=np.array([[1, 2], [3, None]], dtype=object))
    result = invoke("extract", archive, "-o", guard.path, "--force")
    assert_clean_case(result, "extract", 2, names=[archive])
    guard.assert_intact()


# --------------------------------------------------------------------------- odd but valid


def _read(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as handle:
        return handle["patches"][()]


def _extract_ok(*args: object) -> None:
    result = invoke("extract", *args, "-q")
    assert result.exit_code == 0, result.output
    assert "Error" not in result.stderr


def test_16_bit_png_is_scaled_by_65535(tmp_path):
    values = RNG.integers(0, 65536, size=(20, 20), dtype=np.uint16)
    source = tmp_path / "deep.png"
    Image.fromarray(values).save(source)
    out = tmp_path / "p.h5"
    _extract_ok(source, "-o", out, "--normalize", "unit", "--stride", "20", "--patch-size", "20")
    np.testing.assert_allclose(_read(out)[0], values.ravel() / 65535.0, rtol=0, atol=1e-6)


def test_palette_png_gives_its_colours(tmp_path):
    indices = RNG.integers(0, 4, size=(12, 12), dtype=np.uint8)
    image = Image.fromarray(indices, mode="P")
    palette = [0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0, 255]
    image.putpalette(palette + [0] * (768 - len(palette)))
    source = tmp_path / "palette.png"
    image.save(source)
    out = tmp_path / "p.h5"
    _extract_ok(source, "-o", out, "--normalize", "none", "--color", "rgb", "--stride", "12",
                "--patch-size", "12")  # fmt: skip
    expected = np.asarray(palette, dtype=np.float32).reshape(4, 3)[indices]
    np.testing.assert_array_equal(_read(out)[0], expected.ravel())


@pytest.mark.parametrize("color", ["gray", "rgb"])
def test_rgba_drops_the_alpha_channel(color, tmp_path):
    rgba = RNG.integers(0, 256, size=(10, 10, 4), dtype=np.uint8)
    source = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(source)
    out = tmp_path / "p.h5"
    _extract_ok(source, "-o", out, "--normalize", "none", "--color", color, "--stride", "10",
                "--patch-size", "10")  # fmt: skip
    patches = _read(out)
    channels = 3 if color == "rgb" else 1
    assert patches.shape == (1, 100 * channels)
    if color == "rgb":
        np.testing.assert_array_equal(patches[0], rgba[..., :3].astype(np.float32).ravel())


def test_1x1_images_with_a_1x1_patch(tmp_path):
    folder = tmp_path / "dots"
    folder.mkdir()
    for index, value in enumerate((0, 128, 255)):
        Image.fromarray(np.full((1, 1), value, dtype=np.uint8)).save(folder / f"{index}.png")
    out = tmp_path / "p.h5"
    _extract_ok(folder, "-o", out, "--patch-size", "1", "--stride", "1", "--normalize", "unit")
    np.testing.assert_allclose(np.sort(_read(out).ravel()), [0.0, 128 / 255, 1.0], atol=1e-6)


@pytest.mark.parametrize("normalize", ["ufldl", "zscore", "zca", "unit"])
def test_a_folder_of_mixed_sizes_and_modes(normalize, tmp_path):
    folder = tmp_path / "mixed"
    (folder / "nested").mkdir(parents=True)
    Image.fromarray(RNG.integers(0, 256, (30, 41), dtype=np.uint8)).save(folder / "gray.png")
    Image.fromarray(RNG.integers(0, 256, (17, 9, 3), dtype=np.uint8)).save(folder / "rgb.jpg")
    Image.fromarray(RNG.integers(0, 256, (12, 50, 4), dtype=np.uint8), "RGBA").save(folder / "a.png")
    Image.fromarray(RNG.integers(0, 65536, (9, 9), dtype=np.uint16)).save(folder / "nested" / "d.png")
    Image.fromarray(RNG.integers(0, 2, (20, 20), dtype=np.uint8) * 255).convert("1").save(folder / "b.bmp")
    (folder / "README.txt").write_text("not an image, skipped by the folder walk")
    out = tmp_path / "p.h5"
    _extract_ok(folder, "-o", out, "--num-patches", "500", "--normalize", normalize)
    patches = _read(out)
    assert patches.shape == (500, 64) and np.isfinite(patches).all()
    if normalize == "ufldl":
        assert patches.min() >= 0.1 - 1e-6 and patches.max() <= 0.9 + 1e-6


@pytest.mark.parametrize("normalize", ["ufldl", "zscore", "zca"])
def test_constant_images_give_finite_patches(normalize, tmp_path):
    """sigma = 0 everywhere: the normalisations must not divide by it."""
    source = tmp_path / "flat.png"
    Image.fromarray(np.full((32, 32), 77, dtype=np.uint8)).save(source)
    out = tmp_path / "p.h5"
    _extract_ok(source, "-o", out, "--num-patches", "200", "--normalize", normalize)
    assert np.isfinite(_read(out)).all()


@pytest.mark.parametrize("normalize", ["ufldl", "zscore", "zca", "unit", "none"])
def test_a_single_patch(normalize, tmp_path, images_dir):
    out = tmp_path / "p.h5"
    _extract_ok(images_dir / "camera.png", "-o", out, "--num-patches", "1", "--normalize", normalize)
    patches = _read(out)
    assert patches.shape == (1, 64) and np.isfinite(patches).all()
