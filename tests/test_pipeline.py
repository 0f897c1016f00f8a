"""extract's issue-14 behaviours: one path is one source, normalisation reused, bad files skipped, EXIF."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from streamae.cli.main import cli
from streamae.errors import InputFileError, UsageError
from streamae.extraction.pipeline import extract


def read(path: Path) -> tuple[np.ndarray, dict]:
    with h5py.File(path, "r") as handle:
        return handle["patches"][...], dict(handle.attrs)


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    print(result.output)
    return result


def gray_png(path: Path, seed: int, size=(40, 48)) -> Path:
    values = np.random.default_rng(seed).integers(0, 256, size=size, dtype=np.uint8)
    Image.fromarray(values).save(path)
    return path


@pytest.mark.parametrize("as_path", [False, True])
def test_a_single_path_is_one_source_and_nothing_outside_it_is_read(tmp_path, monkeypatch, as_path):
    """Folders "a" and "b" beside "ab": the string "ab" must not be read as the sources a and b."""
    for folder, count in (("ab", 1), ("a", 2), ("b", 3)):
        (tmp_path / folder).mkdir()
        for i in range(count):
            gray_png(tmp_path / folder / f"{i}.png", seed=10 * count + i)
    monkeypatch.chdir(tmp_path)
    result = extract(Path("ab") if as_path else "ab", "out.h5", num_patches=20)
    assert result.images == 1
    assert json.loads(read(tmp_path / "out.h5")[1]["sources"]) == ["ab"]


@pytest.mark.parametrize("mode", ["zca", "zscore", "ufldl"])
def test_normalize_like_on_the_same_images_gives_the_same_rows(images_dir, tmp_path, mode):
    first = tmp_path / "first.h5"
    extract([images_dir], first, num_patches=600, seed=4, normalize=mode, color="rgb")
    again = tmp_path / "again.h5"
    result = invoke("extract", images_dir, "-o", again, "--num-patches", "600", "--seed", "4",
                    "--color", "rgb", "--normalize-like", first)  # fmt: skip
    assert result.exit_code == 0
    rows, attrs = read(first)
    same, same_attrs = read(again)
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
    _, attrs = read(tmp_path / "p.h5")
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
    rows, _ = read(tmp_path / "p.h5")
    upright = np.rot90(stored, k=-1)  # clockwise
    assert rows.shape == (1, 128)
    np.testing.assert_array_equal(rows[0].reshape(8, 16), upright.astype(np.float32))
