"""Image sources: expansion of folders and patterns, headers, decoding, colour, and bad inputs."""

from __future__ import annotations

import gzip
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from streamae.errors import DataError, InputFileError, MissingInputError
from streamae.extraction.cache import ImageCache, group_by_budget
from streamae.extraction.readers import ImageEntry, inventory, read_entries
from streamae.extraction.sources import expand_sources


def decode_all(entries, color: str = "gray", unit_scale: bool = False) -> list[np.ndarray]:
    """Every entry decoded through the cache, as a list of (H, W, C) copies."""
    cache = ImageCache(entries, color, [(0, len(entries))], unit_scale=unit_scale)
    pixels, offsets, _ = cache.load(0, len(entries))
    channels = 1 if color == "gray" else 3
    return [
        pixels[o : o + e.height * e.width * channels].reshape(e.height, e.width, channels).copy()
        for o, e in zip(offsets, entries, strict=True)
    ]


def write_idx(path: Path, images: np.ndarray, magic: bytes = b"\x00\x00\x08\x03") -> Path:
    """An idx3 file (optionally gzip-compressed by name) holding (N, H, W) uint8 images."""
    header = magic + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
    payload = header + images.astype(np.uint8).tobytes()
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def test_gray_is_bt601_luma_of_rgb(images_dir):
    path = images_dir / "astronaut.png"
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.float64)
    expected = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    (gray,) = decode_all(inventory([path]), "gray")
    np.testing.assert_allclose(gray[..., 0], expected, rtol=0, atol=1e-4)


def test_rgb_keeps_channels_and_gray_repeats(images_dir):
    entries = inventory([images_dir / "astronaut.png", images_dir / "camera.png"])
    astronaut, camera = decode_all(entries, "rgb")
    np.testing.assert_array_equal(astronaut, np.asarray(Image.open(images_dir / "astronaut.png")))
    gray = np.asarray(Image.open(images_dir / "camera.png")).astype(np.float32)
    np.testing.assert_array_equal(camera, np.stack([gray] * 3, axis=-1))


def test_unit_scale_divides_8_bit_by_255(images_dir):
    (scaled,) = decode_all(inventory([images_dir / "camera.png"]), unit_scale=True)
    raw = np.asarray(Image.open(images_dir / "camera.png"))
    np.testing.assert_array_equal(scaled[..., 0], raw.astype(np.float32) / np.float32(255))


def test_unit_scale_divides_16_bit_by_65535(tmp_path, rng):
    values = rng.integers(0, 65536, size=(6, 7), dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    (entry,) = inventory([tmp_path / "deep.png"])
    assert entry.scale == 65535.0
    (scaled,) = decode_all([entry], unit_scale=True)
    np.testing.assert_array_equal(scaled[..., 0], values.astype(np.float32) / np.float32(65535))


def test_non_finite_values_are_refused_naming_the_image(tmp_path):
    stack = np.zeros((2, 5, 5), dtype=np.float32)
    stack[1, 2, 3] = np.nan
    np.save(tmp_path / "nan.npy", stack)
    with pytest.raises(DataError, match=r"nan.npy\[1\]: the image holds NaN or infinite values"):
        decode_all(inventory([tmp_path / "nan.npy"]))


def test_shipped_folder_gives_the_four_photographs_sorted(images_dir):
    files = expand_sources([images_dir])
    assert [f.name for f in files] == ["astronaut.png", "camera.png", "chelsea.png", "coffee.png"]
    sizes = [(e.height, e.width) for e in inventory(files)]
    assert sizes == [(512, 512), (512, 512), (300, 451), (400, 600)]


def test_folder_is_recursive_sorted_and_skips_other_files(tmp_path):
    image = Image.fromarray(np.zeros((4, 5), dtype=np.uint8))
    for name in ["b/2.png", "a.png", "b/1.bmp", ".hidden/x.png", "c/.y.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        image.save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    files = expand_sources([tmp_path])
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a.png", "b/1.bmp", "b/2.png"]


def test_glob_pattern_expands_sorted(tmp_path):
    image = Image.fromarray(np.zeros((4, 5), dtype=np.uint8))
    for name in ["z.png", "m.png", "a.jpg"]:
        image.save(tmp_path / name)
    files = expand_sources([str(tmp_path / "*.png")])
    assert [f.name for f in files] == ["m.png", "z.png"]


def test_multipage_tiff_gives_one_image_per_page(tmp_path, rng):
    pages = [rng.integers(0, 256, size=(6 + k, 9), dtype=np.uint8) for k in range(3)]
    path = tmp_path / "stack.tif"
    first, *rest = [Image.fromarray(p) for p in pages]
    first.save(path, save_all=True, append_images=rest)
    entries = inventory([path])
    assert [(e.index, e.height, e.width) for e in entries] == [(0, 6, 9), (1, 7, 9), (2, 8, 9)]
    for decoded, page in zip(decode_all(entries), pages, strict=True):
        np.testing.assert_array_equal(decoded[..., 0], page)


@pytest.mark.parametrize(
    ("shape", "count"), [((7, 9), 1), ((3, 7, 9), 3), ((3, 7, 9, 1), 3), ((3, 7, 9, 3), 3), ((2, 7, 9, 4), 2)]
)
def test_npy_stacks_of_each_rank(tmp_path, rng, shape, count):
    stack = rng.integers(0, 256, size=shape, dtype=np.uint8)
    np.save(tmp_path / "s.npy", stack)
    entries = inventory([tmp_path / "s.npy"])
    assert [(e.height, e.width) for e in entries] == [(7, 9)] * count
    decoded = decode_all(entries, "rgb")
    images = stack[None] if stack.ndim == 2 else stack
    for k in range(count):
        image = images[k] if images.ndim == 4 else images[k][..., None]
        expected = image[..., :3] if image.shape[-1] >= 3 else np.repeat(image, 3, axis=-1)
        np.testing.assert_array_equal(decoded[k], expected.astype(np.float32))


def test_npz_needs_variable_when_it_holds_several(tmp_path, rng):
    a = rng.integers(0, 256, size=(2, 5, 6), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", a=a, b=np.zeros((5, 6)))
    with pytest.raises(InputFileError, match=r"holds 2 arrays \(a, b\); pick one with variable='NAME'"):
        inventory([tmp_path / "s.npz"])
    entries = inventory([tmp_path / "s.npz"], variable="a")
    assert len(entries) == 2
    np.testing.assert_array_equal(decode_all(entries)[1][..., 0], a[1])


def test_mat_v5_stack_is_height_width_count(tmp_path, rng):
    stack = rng.random((7, 9, 4))  # like the notes' IMAGES.mat: float64 (H, W, N)
    scipy.io.savemat(tmp_path / "IMAGES.mat", {"IMAGES": stack})
    entries = inventory([tmp_path / "IMAGES.mat"])
    assert [(e.height, e.width, e.scale) for e in entries] == [(7, 9, 1.0)] * 4
    for k, decoded in enumerate(decode_all(entries)):
        np.testing.assert_array_equal(decoded[..., 0], stack[:, :, k].astype(np.float32))


def test_mat_v73_is_read_through_h5py_column_major(tmp_path, rng):
    stack = rng.integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    path = tmp_path / "v73.mat"
    with h5py.File(path, "w", userblock_size=512) as handle:
        # MATLAB writes column-major: h5py sees the reversed shape.
        handle.create_dataset("IMAGES", data=stack.T)
    entries = inventory([path], variable="IMAGES")
    assert [(e.height, e.width) for e in entries] == [(7, 9)] * 3
    for k, decoded in enumerate(decode_all(entries)):
        np.testing.assert_array_equal(decoded[..., 0], stack[:, :, k])


@pytest.mark.parametrize("name", ["t-images-idx3-ubyte", "t-images-idx3-ubyte.gz"])
def test_idx_plain_and_gzip(tmp_path, rng, name):
    images = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    entries = inventory([write_idx(tmp_path / name, images)])
    assert len(entries) == 5
    for k, decoded in enumerate(decode_all(entries)):
        np.testing.assert_array_equal(decoded[..., 0], images[k])


def test_shipped_mnist_header(mnist_images):
    entries = inventory([mnist_images])
    assert len(entries) == 10_000
    assert {(e.height, e.width, e.scale) for e in entries} == {(28, 28, 255.0)}


# --- bad inputs ---------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(MissingInputError, match="no such file, folder or matching pattern"):
        expand_sources([tmp_path / "nope.png"])


def test_unsupported_file_type_names_the_type(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputFileError, match=r"notes.txt: unsupported file type '.txt'"):
        expand_sources([tmp_path / "notes.txt"])


def test_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputFileError, match="the folder holds no image files"):
        expand_sources([tmp_path])


def test_pattern_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputFileError, match=r"the pattern matches 1 paths but no image files"):
        expand_sources([str(tmp_path / "*.txt")])


def test_corrupt_image_names_the_file(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"this is not a png at all")
    with pytest.raises(InputFileError, match=r"broken.png: the image cannot be read"):
        inventory([path])


def test_truncated_image_fails_at_decoding_naming_the_file(tmp_path, images_dir):
    data = (images_dir / "camera.png").read_bytes()
    path = tmp_path / "truncated.png"
    path.write_bytes(data[: len(data) // 2])
    entries = inventory([path])  # the header is intact
    with pytest.raises(InputFileError, match=r"truncated.png: the image cannot be read"):
        list(read_entries(entries, "gray"))


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4, 5, 6)])
def test_npy_of_wrong_rank(tmp_path, shape):
    np.save(tmp_path / "bad.npy", np.zeros(shape, dtype=np.uint8))
    with pytest.raises(InputFileError, match=rf"holds an array of shape .* \({len(shape)} dimensions\)"):
        inventory([tmp_path / "bad.npy"])


def test_idx_with_bad_magic(tmp_path, rng):
    path = write_idx(tmp_path / "x-idx3-ubyte", rng.integers(0, 256, (2, 3, 3)), magic=b"\x00\x00\x08\x01")
    with pytest.raises(InputFileError, match=r"bad idx magic number 0x00000801"):
        inventory([path])


# --- grouping -----------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 20), min_size=1, max_size=30),
    budget=st.integers(4, 2000),
)
def test_groups_are_consecutive_and_within_budget(sizes, budget):
    entries = [ImageEntry(Path("x"), "npy", i, s, 1, 255.0) for i, s in enumerate(sizes)]
    groups = group_by_budget(entries, "gray", budget)
    assert groups[0][0] == 0 and groups[-1][1] == len(entries)
    for (a, b), (c, _) in zip(groups, groups[1:], strict=False):
        assert b == c and a < b
    for a, b in groups:
        assert b - a == 1 or sum(sizes[a:b]) * 4 <= budget


# --- raw pixels (Olshausen's images: 512x512 big-endian float32, no header) ----------------


@pytest.mark.parametrize("dtype", ["float32-be", "float32-le", "uint16-be", "uint8", "float64-le"])
def test_raw_files_decode_as_numpy_reads_them(tmp_path, rng, dtype):
    from streamae.extraction.readers import RAW_DTYPES, RawLayout

    stored = np.dtype(RAW_DTYPES[dtype])
    images = (rng.uniform(0, 200, size=(3, 6, 10))).astype(stored)
    (tmp_path / "IMAGES_RAW").write_bytes(images.tobytes())  # rows of each image, images back to back
    raw = RawLayout(6, 10, dtype)
    files = expand_sources([tmp_path / "IMAGES_RAW"], raw=True)
    entries = inventory(files, raw=raw)
    assert [(e.index, e.height, e.width) for e in entries] == [(0, 6, 10), (1, 6, 10), (2, 6, 10)]
    decoded = [image for _, image in read_entries(entries, "gray")]
    for got, want in zip(decoded, images, strict=True):
        assert got.dtype.isnative and np.array_equal(got, want.astype(stored.newbyteorder("=")))


def test_raw_dtype_names_match_the_options():
    from streamae.extraction.readers import RAW_DTYPES
    from streamae.options import RAW_DTYPE_NAMES

    assert tuple(RAW_DTYPES) == RAW_DTYPE_NAMES


def test_raw_files_in_folders_and_refusals(tmp_path, rng):
    from streamae.extraction.readers import RawLayout

    folder = tmp_path / "olshausen"
    folder.mkdir()
    rng.normal(size=(2, 4, 4)).astype(">f4").tofile(folder / "image1")
    rng.normal(size=(1, 4, 4)).astype(">f4").tofile(folder / "image2.raw")
    (folder / "README.txt").write_text("not pixels")
    assert [p.name for p in expand_sources([folder], raw=True)] == ["image1", "image2.raw"]
    with pytest.raises(InputFileError, match="unsupported file type"):
        expand_sources([folder / "image1"])  # without a layout, still refused by its name
    (folder / "odd").write_bytes(b"\0" * 65)
    with pytest.raises(InputFileError, match=r"odd: holds 65 bytes, not a whole number of 4x4 float32-be"):
        inventory([folder / "odd"], raw=RawLayout(4, 4))


def test_extract_reads_olshausen_style_raw_images(tmp_path, rng):
    """The notes' own data: 512x512 big-endian float32 files, cut into 8x8 patches on a grid."""
    from click.testing import CliRunner

    from streamae.cli.main import cli

    images = rng.normal(size=(2, 512, 512)).astype(">f4")
    images.tofile(tmp_path / "IMAGES_RAW")
    result = CliRunner().invoke(
        cli,
        ["extract", str(tmp_path / "IMAGES_RAW"), "-o", str(tmp_path / "p.h5"), "--raw-shape", "512x512"]
        + ["--raw-dtype", "float32-be", "--stride", "64", "--normalize", "none"],
    )
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "p.h5") as handle:
        rows = handle["patches"][()]
    expected = [
        images[i, r : r + 8, c : c + 8].astype(np.float32).ravel()
        for i in range(2)
        for r in range(0, 505, 64)
        for c in range(0, 505, 64)
    ]
    assert rows.shape == (len(expected), 64)
    assert sorted(map(bytes, rows)) == sorted(map(bytes, np.array(expected)))
