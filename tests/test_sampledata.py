"""`streamae data`: the samples that ship are listed, copied with their licence notes, and loaded."""

from __future__ import annotations

import gzip

import numpy as np
from click.testing import CliRunner
from PIL import Image

import streamae
from streamae.cli.main import cli
from streamae.sampledata import SAMPLES


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    print(result.output)
    return result


def test_every_sample_ships_with_its_licence_note_and_is_package_data():
    import ast
    from fnmatch import fnmatch
    from pathlib import Path

    # tomllib is Python 3.11+; the one line is a TOML list that is also a Python literal.
    text = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    line = next(line for line in text.splitlines() if line.startswith('"streamae.data" = ['))
    patterns = ast.literal_eval(line.split("=", 1)[1].strip())
    for sample in SAMPLES.values():
        for name in (*sample.files, "LICENSES.md"):
            assert (sample.path / name).is_file(), (sample.name, name)
            relative = f"{sample.folder}/{name}"
            assert any(fnmatch(relative, pattern) for pattern in patterns), relative  # installed too


def test_data_lists_the_samples():
    result = invoke("data")
    assert result.exit_code == 0
    for name in ("photos", "mnist", "audio"):
        assert any(line.startswith(name) for line in result.stdout.splitlines()), name
    assert "t10k-images-idx3-ubyte.gz" in result.stdout and "CC BY-SA 3.0" in result.stdout


def test_data_copies_into_named_folders_byte_for_byte(tmp_path):
    result = invoke("data", "photos", "mnist", "audio", "-o", tmp_path)
    assert result.exit_code == 0 and f"Wrote {tmp_path / 'mnist'}/" in result.stdout
    for sample in SAMPLES.values():
        for name in (*sample.files, "LICENSES.md"):
            assert (tmp_path / sample.name / name).read_bytes() == (sample.path / name).read_bytes()
    with Image.open(tmp_path / "photos" / "camera.png") as image:
        assert image.size == (512, 512)
    assert sorted(p.name for p in tmp_path.rglob(".*")) == []  # no temporaries left


def test_an_existing_copy_is_replaced_only_with_force(tmp_path):
    assert invoke("data", "audio", "-o", tmp_path).exit_code == 0
    (tmp_path / "audio" / "chord.wav").write_bytes(b"mine")
    again = invoke("data", "audio", "-o", tmp_path)
    assert again.exit_code == 2 and "exists; pass --force" in again.stderr
    assert (tmp_path / "audio" / "chord.wav").read_bytes() == b"mine"
    assert invoke("data", "audio", "-o", tmp_path, "--force").exit_code == 0
    assert (tmp_path / "audio" / "chord.wav").read_bytes() == (
        SAMPLES["audio"].path / "chord.wav"
    ).read_bytes()


def test_load_digits_reads_the_shipped_mnist_test_set():
    X, y = streamae.load_digits()
    assert X.shape == (10_000, 784) and y.shape == (10_000,) and X.dtype == np.float64
    with gzip.open(SAMPLES["mnist"].path / "t10k-images-idx3-ubyte.gz") as handle:
        raw = handle.read()
    # The idx header by hand: magic 0x00000803, then 10000, 28, 28 as big-endian int32.
    assert raw[:4] == b"\x00\x00\x08\x03" and int.from_bytes(raw[4:8], "big") == 10_000
    assert X[0, 28 * 14 + 14] == raw[16 + 28 * 14 + 14] / 255.0
    assert sorted(set(y.tolist())) == list(range(10)) and y[0] == 7  # the test set's first digit
