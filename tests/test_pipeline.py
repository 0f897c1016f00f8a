"""``extract`` end to end: the library function, the command line, memory and kills in subprocesses."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from helpers import invoke, read_patches
from naive import notes_normalize
from PIL import Image

import streamae.extraction.readers
from streamae.errors import InputFileError, UsageError
from streamae.extraction.pipeline import extract

# Runs the command line in a fresh interpreter (for kills and memory measurements).
CLI_SNIPPET = "import sys; from streamae.cli.main import main; sys.argv[0] = 'streamae'; main()"


def coordinate_stack(count: int, height: int, width: int, channels: int = 0) -> np.ndarray:
    """(N, H, W[, C]) float32 images whose values encode (image, y, x[, channel]) exactly."""
    k, y, x = np.meshgrid(np.arange(count), np.arange(height), np.arange(width), indexing="ij")
    values = k * 100_000.0 + y * 1000.0 + x
    if channels:
        values = values[..., None] + 0.25 * np.arange(channels)
    return values.astype(np.float32)


# --- the numbers --------------------------------------------------------------------------


def test_ufldl_equals_the_notes_normalize_data_on_the_photographs(tmp_path, images_dir):
    raw = extract([images_dir], tmp_path / "raw.h5", num_patches=20_000, seed=4, normalize="none")
    ufldl = extract([images_dir], tmp_path / "ufldl.h5", num_patches=20_000, seed=4)
    patches, _ = read_patches(raw.path)
    normalized, attrs = read_patches(ufldl.path)
    assert normalized.dtype == np.float32 and normalized.shape == (20_000, 64)
    np.testing.assert_allclose(normalized, notes_normalize(patches), rtol=0, atol=1e-6)
    assert normalized.min() >= 0.1 - 1e-7 and normalized.max() <= 0.9 + 1e-7
    described = json.loads(attrs["normalization"])
    assert described["mode"] == "ufldl"
    centred = patches.astype(np.float64) / 255  # sigma is kept in units of full intensity
    centred -= centred.mean(axis=1, keepdims=True)
    # float32 rounding of pixel / 255 shifts sigma by ~1e-8 relative
    assert described["sigma"] == pytest.approx(centred.std(ddof=1), rel=1e-7)


def test_same_seed_same_bytes_other_seed_other_patches(tmp_path, images_dir):
    first, _ = read_patches(extract([images_dir], tmp_path / "a.h5", num_patches=5000, seed=1).path)
    again, _ = read_patches(
        extract([images_dir], tmp_path / "b.h5", num_patches=5000, seed=1, chunk_rows=333).path
    )
    other, _ = read_patches(extract([images_dir], tmp_path / "c.h5", num_patches=5000, seed=2).path)
    assert first.tobytes() == again.tobytes()
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("channels", [0, 3])
@pytest.mark.parametrize("cache_bytes", [None, 50 * 60 * 4 * 3])
def test_every_patch_comes_from_inside_its_image(tmp_path, channels, cache_bytes, monkeypatch):
    stack = coordinate_stack(3, 40, 50, channels)
    np.save(tmp_path / "coords.npy", stack)
    decoded = []
    original = streamae.extraction.readers.read_entries

    def counting(entries, color):
        for i, raw in original(entries, color):
            decoded.append(entries[i].index)
            yield i, raw

    monkeypatch.setattr(streamae.extraction.readers, "read_entries", counting)
    options = {"cache_bytes": cache_bytes} if cache_bytes else {}
    color = "rgb" if channels else "gray"
    result = extract([tmp_path / "coords.npy"], tmp_path / "p.h5", patch_size=(5, 7), num_patches=6000,
                     normalize="none", color=color, seed=9, **options)  # fmt: skip
    patches, attrs = read_patches(result.path)
    c = max(channels, 1)
    assert list(attrs["patch_shape"]) == [5, 7, c]
    cube = patches.reshape(-1, 5, 7, c)
    corner = cube[:, 0, 0, 0].astype(np.int64)
    k, y0, x0 = corner // 100_000, corner % 100_000 // 1000, corner % 1000
    assert np.all((y0 >= 0) & (y0 + 5 <= 40) & (x0 >= 0) & (x0 + 7 <= 50))
    dy, dx = np.arange(5)[:, None], np.arange(7)[None, :]
    expected = k[:, None, None] * 100_000.0 + (y0[:, None, None] + dy) * 1000.0 + x0[:, None, None] + dx
    expected = expected[..., None] + (0.25 * np.arange(channels) if channels else 0.0)
    np.testing.assert_array_equal(cube, expected.astype(np.float32))
    assert sorted(set(k)) == [0, 1, 2] and y0.max() == 35 and x0.max() == 43
    # Decoded once for the whole run when the images fit the cache, once per group otherwise
    # (normalize none has a single pass).
    assert sorted(decoded) == [0, 1, 2]


def test_small_cache_decodes_each_image_once_per_pass(tmp_path, images_dir, monkeypatch):
    decoded = []
    original = streamae.extraction.readers.read_entries

    def counting(entries, color):
        for i, raw in original(entries, color):
            decoded.append(entries[i].path.name)
            yield i, raw

    monkeypatch.setattr(streamae.extraction.readers, "read_entries", counting)
    extract([images_dir], tmp_path / "small.h5", num_patches=3000, cache_bytes=1 << 20)
    assert sorted(decoded) == sorted(2 * ["astronaut.png", "camera.png", "chelsea.png", "coffee.png"])
    decoded.clear()
    extract([images_dir], tmp_path / "large.h5", num_patches=3000)
    assert len(decoded) == 4  # one group: decoded once, reused by both passes


def test_mnist_whole_digits_divided_by_255(tmp_path, mnist_images):
    result = invoke("extract", mnist_images, "--patch-size", "28", "--stride", "28", "--normalize", "unit",
                      "-o", tmp_path / "mnist.h5", "--quiet")  # fmt: skip
    assert result.exit_code == 0
    with gzip.open(mnist_images, "rb") as handle:
        data = handle.read()
    magic, count, rows, cols = np.frombuffer(data[:16], dtype=">u4")
    assert (magic, count, rows, cols) == (0x803, 10_000, 28, 28)
    digits = np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, rows * cols)
    patches, attrs = read_patches(tmp_path / "mnist.h5")
    assert patches.shape == (10_000, 784)
    np.testing.assert_array_equal(patches, digits.astype(np.float32) / np.float32(255))
    assert json.loads(attrs["sampling"]) == {"mode": "grid", "stride": [28, 28]}


@pytest.mark.parametrize("color", ["gray", "rgb"])
def test_mat_and_npy_stacks_equal_png_files(tmp_path, rng, color):
    shape = (5, 20, 24, 3) if color == "rgb" else (5, 20, 24)
    stack = rng.integers(0, 256, size=shape, dtype=np.uint8)
    folder = tmp_path / "png"
    folder.mkdir()
    for k, image in enumerate(stack):
        Image.fromarray(image).save(folder / f"img{k}.png")
    np.save(tmp_path / "stack.npy", stack)
    # MATLAB stacks put the image index last: (H, W, N) or (H, W, C, N).
    scipy.io.savemat(tmp_path / "stack.mat", {"IMAGES": np.moveaxis(stack, 0, -1)})
    results = [
        read_patches(
            extract(
                [source], tmp_path / f"{name}.h5", num_patches=2000, seed=7, color=color, patch_size=(6, 5)
            ).path
        )[0]
        for name, source in [
            ("png", folder),
            ("npy", tmp_path / "stack.npy"),
            ("mat", tmp_path / "stack.mat"),
        ]
    ]
    np.testing.assert_array_equal(results[1], results[0])
    np.testing.assert_array_equal(results[2], results[0])


def test_zca_whitens_the_photographs(tmp_path, images_dir):
    epsilon = 1e-7
    unit = extract([images_dir], tmp_path / "unit.h5", num_patches=40_000, seed=3, normalize="unit")
    zca = extract(
        [images_dir], tmp_path / "zca.h5", num_patches=40_000, seed=3, normalize="zca", zca_epsilon=epsilon
    )
    x, _ = read_patches(unit.path)
    white, attrs = read_patches(zca.path)
    x = x.astype(np.float64)
    values = np.linalg.eigvalsh(np.cov(x, rowvar=False, bias=True))
    covariance = np.cov(white.astype(np.float64), rowvar=False, bias=True)
    # Whitening leaves S / (S + eps) on the diagonal of the eigenbasis: within eps / min(S) of 1.
    effect = epsilon / values.min()
    assert effect < 0.05
    assert np.abs(covariance - np.eye(64)).max() < effect + 5e-4
    with h5py.File(zca.path, "r") as handle:
        np.testing.assert_allclose(handle["zca/mean"][...], x.mean(axis=0), rtol=1e-10)
        matrix = handle["zca/matrix"][...]
    assert matrix.shape == (64, 64)
    np.testing.assert_allclose(white, (x - x.mean(axis=0)) @ matrix.T, atol=1e-4)
    assert json.loads(attrs["normalization"])["epsilon"] == epsilon


def test_file_layout_and_attributes(tmp_path, images_dir):
    out = tmp_path / "p.h5"
    result = invoke("extract", images_dir / "camera.png", images_dir / "chelsea.png", "-o", out,
                      "--num-patches", "1000", "--chunk-rows", "300", "--compression", "gzip",
                      "--patch-size", "12x8", "--seed", "5")  # fmt: skip
    assert result.exit_code == 0
    assert "wrote 1,000 patches of 12x8x1 (ufldl) from 2 images" in result.output
    with h5py.File(out, "r") as handle:
        dataset = handle["patches"]
        assert dataset.shape == (1000, 96) and dataset.dtype == np.float32
        assert dataset.chunks == (300, 96) and dataset.compression == "gzip"
        attrs = dict(handle.attrs)
    assert attrs["format"] == "streamae.patches/1"
    assert list(attrs["patch_shape"]) == [12, 8, 1]
    assert attrs["seed"] == 5
    assert json.loads(attrs["sources"]) == [str(images_dir / "camera.png"), str(images_dir / "chelsea.png")]
    assert attrs["streamae_version"] == streamae.__version__
    assert json.loads(attrs["normalization"])["mode"] == "ufldl"


def test_lzf_and_default_chunks(tmp_path, images_dir):
    result = extract([images_dir], tmp_path / "p.h5", num_patches=50_000, compression="lzf")
    with h5py.File(result.path, "r") as handle:
        assert handle["patches"].compression == "lzf"
        assert handle["patches"].chunks == (4096, 64)  # ~1 MiB of float32 rows
    assert os.fspath(result) == str(tmp_path / "p.h5")


# --- bad input ----------------------------------------------------------------------------


def _bad_inputs(tmp_path: Path, images_dir: Path) -> dict:
    (tmp_path / "broken.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((6, 10), dtype=np.uint8)).save(tmp_path / "small.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    np.save(tmp_path / "flat.npy", np.zeros(10, dtype=np.uint8))
    (tmp_path / "bad-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01" + (4).to_bytes(4, "big") + bytes(4))
    (tmp_path / "exists.h5").write_bytes(b"old")
    camera = str(images_dir / "camera.png")
    return {
        "corrupt image": (
            [tmp_path / "broken.png"],
            str(tmp_path / "broken.png") + ": the image cannot be read",
        ),
        "patch larger than image": (
            [tmp_path / "small.png"],
            "the image is 6x10 pixels (height x width), smaller than the 8x8 patch",
        ),
        "empty folder": ([tmp_path / "empty"], "the folder holds no image files"),
        "pattern without images": (
            [str(tmp_path / "*.txt")],
            "the pattern matches 1 paths but no image files",
        ),
        "unsupported type": ([tmp_path / "notes.txt"], "unsupported file type '.txt'"),
        "npy of wrong rank": ([tmp_path / "flat.npy"], "holds an array of shape (10,) (1 dimensions)"),
        "idx bad magic": ([tmp_path / "bad-idx3-ubyte"], "bad idx magic number 0x00000801"),
        "zero patches": ([camera, "--num-patches", "0"], "--num-patches must be an integer ≥ 1, got 0."),
        "stride and num-patches": ([camera, "--stride", "4", "--num-patches", "9"], "exclude each other"),
        "existing output": ([camera, "-o", tmp_path / "exists.h5"], "exists.h5 exists; pass --force"),
        "missing file": ([tmp_path / "nope.png"], "no such file, folder or matching pattern"),
    }


BAD_CASES = [
    "corrupt image", "patch larger than image", "empty folder", "pattern without images",
    "unsupported type", "npy of wrong rank", "idx bad magic", "zero patches", "stride and num-patches",
    "existing output", "missing file",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_one_sentence_and_exit_code_2(tmp_path, images_dir, case):
    args, message = _bad_inputs(tmp_path, images_dir)[case]
    out = tmp_path / "out.h5"
    if "-o" not in args:
        args = [*args, "-o", out]
    result = invoke("extract", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1
    assert not out.exists()
    if case == "existing output":
        assert (tmp_path / "exists.h5").read_bytes() == b"old"


def test_force_replaces_an_existing_output(tmp_path, images_dir):
    out = tmp_path / "p.h5"
    out.write_bytes(b"old")
    result = invoke("extract", images_dir / "camera.png", "-o", out, "--force", "--quiet")
    assert result.exit_code == 0
    assert read_patches(out)[0].shape == (10_000, 64)


def test_debug_shows_the_traceback(tmp_path):
    # In a fresh interpreter, as a user sees it: CliRunner would report the SystemExit(2)
    # of the plain run as an exception too, so it cannot tell the two runs apart.
    (tmp_path / "notes.txt").write_text("hello")
    args = [
        sys.executable,
        "-c",
        CLI_SNIPPET,
        "extract",
        str(tmp_path / "notes.txt"),
        "-o",
        str(tmp_path / "p.h5"),
    ]
    plain = subprocess.run(args, capture_output=True, text=True, timeout=120)
    debug = subprocess.run([*args, "--debug"], capture_output=True, text=True, timeout=120)
    print(plain.stderr, debug.stderr)
    assert plain.returncode == 2
    assert plain.stderr.startswith("Error: ") and plain.stderr.count("\n") == 1
    assert "Traceback" not in plain.stderr
    assert debug.returncode == 1  # an uncaught exception in Python
    assert "Traceback (most recent call last)" in debug.stderr
    assert "streamae.errors.InputFileError: " in debug.stderr and "unsupported file type" in debug.stderr


def test_plain_progress_lines_and_quiet(tmp_path, images_dir):
    noisy = invoke("extract", images_dir, "-o", tmp_path / "a.h5", "--num-patches", "100000")
    assert "pass 1/2 statistics: 100,000/100,000 patches" in noisy.output
    assert "pass 2/2 writing: 100,000/100,000 patches" in noisy.output
    quiet = invoke("extract", images_dir, "-o", tmp_path / "b.h5", "--num-patches", "100000", "-q")
    assert "pass" not in quiet.output
    assert quiet.output.count("\n") == 1  # the summary alone


# --- subprocesses -------------------------------------------------------------------------


def test_kill_9_leaves_no_file_at_the_target(tmp_path, images_dir):
    target = tmp_path / "killed.h5"
    process = subprocess.Popen(
        [sys.executable, "-c", CLI_SNIPPET, "extract", str(images_dir), "-o", str(target),
         "--num-patches", "20000000", "--normalize", "none", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        temporaries: list[Path] = []
        while time.monotonic() < deadline and process.poll() is None:
            temporaries = list(tmp_path.glob(".killed.h5.*.streamae-tmp"))
            if temporaries and temporaries[0].stat().st_size > 10 << 20:
                break  # killed in the middle of writing the patches
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read().decode()
        assert temporaries, "the extract never started writing"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert not target.exists()
    # The next run to the same target succeeds and clears the killed run's temporary.
    result = invoke("extract", images_dir, "-o", target, "--num-patches", "100", "--quiet")
    assert result.exit_code == 0 and target.exists()
    assert not list(tmp_path.glob(".killed.h5.*"))


MEMORY_LIMIT_BYTES = 300 * 10**6


@pytest.mark.slow
def test_ten_million_patches_in_bounded_memory(tmp_path, images_dir):
    # A fresh parent whose only child is the extract, so RUSAGE_CHILDREN measures it alone.
    target = tmp_path / "big.h5"
    measure = textwrap.dedent(f"""
        import resource, subprocess, sys, time
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", {CLI_SNIPPET!r}, "extract", {str(images_dir)!r},
                               "-o", {str(target)!r}, "--num-patches", "10000000", "--quiet"])
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        print(done.returncode, peak, seconds)
    """)
    try:
        output = subprocess.run([sys.executable, "-c", measure], capture_output=True, text=True, timeout=600)
        code, peak, seconds = output.stdout.split()
        print(output.stderr)
        print(f"10,000,000 patches: {float(seconds):.1f} s, {1e7 / float(seconds):,.0f} patches/s, "
              f"peak RSS {int(peak) / 1e6:.0f} MB")  # fmt: skip
        assert int(code) == 0
        with h5py.File(target, "r") as handle:
            assert handle["patches"].shape == (10_000_000, 64)
            tail = handle["patches"][-1000:]
        assert tail.min() >= 0.1 - 1e-7 and tail.max() <= 0.9 + 1e-7
        assert int(peak) < MEMORY_LIMIT_BYTES
    finally:
        target.unlink(missing_ok=True)


# --- issue 14: one path one source, normalize-like, skip-bad, EXIF ----------------------


def read_with_attrs(path: Path) -> tuple[np.ndarray, dict]:
    with h5py.File(path, "r") as handle:
        return handle["patches"][...], dict(handle.attrs)


def gray_png(path: Path, seed: int, size=(40, 48)) -> Path:
    values = np.random.default_rng(seed).integers(0, 256, size=size, dtype=np.uint8)
    Image.fromarray(values).save(path)
    return path


@pytest.mark.parametrize("as_path", [False, True])
def test_a_single_path_is_one_source_and_nothing_outside_it_is_read_with_attrs(
    tmp_path, monkeypatch, as_path
):
    """Folders "a" and "b" beside "ab": the string "ab" must not be read as the sources a and b."""
    for folder, count in (("ab", 1), ("a", 2), ("b", 3)):
        (tmp_path / folder).mkdir()
        for i in range(count):
            gray_png(tmp_path / folder / f"{i}.png", seed=10 * count + i)
    monkeypatch.chdir(tmp_path)
    result = extract(Path("ab") if as_path else "ab", "out.h5", num_patches=20)
    assert result.images == 1
    assert json.loads(read_with_attrs(tmp_path / "out.h5")[1]["sources"]) == ["ab"]


@pytest.mark.parametrize("mode", ["zca", "zscore", "ufldl"])
def test_normalize_like_on_the_same_images_gives_the_same_rows(images_dir, tmp_path, mode):
    first = tmp_path / "first.h5"
    extract([images_dir], first, num_patches=600, seed=4, normalize=mode, color="rgb")
    again = tmp_path / "again.h5"
    result = invoke("extract", images_dir, "-o", again, "--num-patches", "600", "--seed", "4",
                    "--color", "rgb", "--normalize-like", first)  # fmt: skip
    assert result.exit_code == 0
    rows, attrs = read_with_attrs(first)
    same, same_attrs = read_with_attrs(again)
    np.testing.assert_allclose(same, rows, rtol=0, atol=1e-6)
    assert json.loads(same_attrs["normalization"]) == json.loads(attrs["normalization"])
    if mode != "ufldl":
        with h5py.File(first) as a, h5py.File(again) as b:
            for name in (f"{mode}/mean", f"{mode}/matrix" if mode == "zca" else f"{mode}/std"):
                assert np.array_equal(a[name][()], b[name][()])


def test_normalize_like_refuses_another_patch_shape(images_dir, tmp_path):
    first = tmp_path / "first.h5"
    extract([images_dir], first, num_patches=100, normalize="zca")
    with pytest.raises(
        UsageError, match="its patches are 8x8x1, not 12x12x1; extract with the same patch size"
    ):
        extract([images_dir], tmp_path / "b.h5", patch_size=12, num_patches=100, normalize_like=first)


def test_skip_bad_warns_once_per_bad_file_and_lists_them(images_dir, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(images_dir, folder, ignore=shutil.ignore_patterns("*.md"))
    (folder / "garbage.png").write_bytes(b"not an image at all" * 10)
    whole = (folder / "camera.png").read_bytes()
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 3])  # a valid header, pixels cut
    without = invoke("extract", folder, "-o", tmp_path / "no.h5", "--num-patches", "50")
    assert without.exit_code == 2 and "garbage.png: the image cannot be read" in without.stderr
    assert not (tmp_path / "no.h5").exists()
    result = invoke("extract", folder, "-o", tmp_path / "p.h5", "--num-patches", "50", "--skip-bad")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert "garbage.png: the image cannot be read" in warnings[0]
    assert "truncated.png: the image cannot be read" in warnings[1]
    assert "; skipped 2 unreadable files" in result.stderr
    _, attrs = read_with_attrs(tmp_path / "p.h5")
    skipped = json.loads(attrs["skipped_sources"])
    assert [Path(entry["path"]).name for entry in skipped] == ["garbage.png", "truncated.png"]
    assert attrs["images"] == 4


def test_skip_bad_with_nothing_readable_says_so(tmp_path):
    (tmp_path / "x.png").write_bytes(b"nothing")
    with pytest.raises(InputFileError, match="none of the 1 source files could be read"):
        extract([tmp_path / "x.png"], tmp_path / "p.h5", skip_bad=True, warn=lambda text: None)


def test_the_exif_orientation_is_applied(tmp_path):
    """A 16x8 picture stored with orientation 6 (turn 90° clockwise) is cut as 8x16, turned."""
    stored = np.arange(16 * 8, dtype=np.uint8).reshape(16, 8) * 2
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "turned.png", exif=exif)
    extract(
        [tmp_path / "turned.png"], tmp_path / "p.h5", patch_size=(8, 16), stride=(8, 16), normalize="none"
    )
    rows, _ = read_with_attrs(tmp_path / "p.h5")
    upright = np.rot90(stored, k=-1)  # clockwise
    assert rows.shape == (1, 128)
    np.testing.assert_array_equal(rows[0].reshape(8, 16), upright.astype(np.float32))
