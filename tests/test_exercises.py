"""docs/exercises.md, run as written (only the sizes made small), in an empty folder, offline.

Each section of the page is one test: its ```bash lines run as ``streamae`` commands and its
```python blocks are executed, in order, in a fresh working folder; :data:`SMALLER` is the
only change made to the text.  Then a few checks that the exercise did what it says.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import TESTS

import streamae
from streamae.cli.main import cli
from streamae.io.modelfile import load_model

PAGE = TESTS.parent / "docs" / "exercises.md"

# Text replaced before running (whole words only): the sizes, nothing else.
SMALLER = {
    "--num-patches 10000": "--num-patches 2000",
    "--num-patches 100000": "--num-patches 2000",
    "--num-patches 4000": "--num-patches 2000",
    "--max-iter 400": "--max-iter 8",
    "--max-iter 150": "--max-iter 8",
    "max_iter=400": "max_iter=8",
}


def sections() -> dict[str, list[tuple[str, str]]]:
    """Each "## " section of the page: its fenced blocks as (language, text), in order."""
    found: dict[str, list[tuple[str, str]]] = {}
    for part in PAGE.read_text().split("\n## ")[1:]:
        title, _, body = part.partition("\n")
        found[title.strip()] = re.findall(r"```(bash|python)\n(.*?)```", body, flags=re.DOTALL)
    return found


def commands(text: str) -> list[list[str]]:
    """The ``streamae`` command lines of a bash block, split as a shell would (comments dropped)."""
    return [shlex.split(line, comments=True) for line in text.splitlines() if line.startswith("streamae ")]


def smaller(text: str) -> str:
    for old, new in SMALLER.items():
        text = re.sub(re.escape(old) + r"(?![\w.])", new, text)
    return text


def run_section(title: str, monkeypatch, tmp_path: Path, capsys) -> str:
    """Run one section's blocks in ``tmp_path``; returns what its Python printed."""
    monkeypatch.chdir(tmp_path)
    printed = []
    for language, text in sections()[title]:
        text = smaller(text)
        if language == "bash":
            for words in commands(text):
                result = CliRunner().invoke(cli, words[1:])
                assert result.exit_code == 0, f"{shlex.join(words)}\n{result.output}"
        else:
            exec(compile(text, f"{PAGE.name}: {title}", "exec"), {"__name__": "__exercise__"})
            printed.append(capsys.readouterr().out)
    return "".join(printed)


def test_the_page_has_the_exercises_and_every_command_parses():
    found = sections()
    assert {
        "Sparse autoencoder on natural images",
        "MNIST with 196 hidden units",
        "Linear decoder on ZCA-whitened RGB patches",
        "Self-taught learning",
        "Audio: a chord",
    } <= set(found)
    lines = [
        words
        for blocks in found.values()
        for lang, text in blocks
        if lang == "bash"
        for words in commands(text)
    ]
    assert {words[1] for words in lines} == {"data", "extract", "train", "visualize", "export"}
    for words in lines:
        command = cli.get_command(None, words[1])
        command.make_context(words[1], words[2:])  # raises on an unknown option or a bad value
    assert all(smaller(old) != old for old in SMALLER), "every size replaced is one the page shows"
    text = PAGE.read_text()
    assert all(old in text for old in SMALLER), "a size the page no longer shows"


def test_natural_images(monkeypatch, tmp_path, capsys):
    run_section("Sparse autoencoder on natural images", monkeypatch, tmp_path, capsys)
    for picture in ("features.png", "curves.png", "tanh-features.png"):
        assert (tmp_path / picture).stat().st_size > 0
    assert load_model(tmp_path / "tanh-model.h5").activation == "tanh"


def test_mnist_with_196_hidden_units(monkeypatch, tmp_path, capsys):
    run_section("MNIST with 196 hidden units", monkeypatch, tmp_path, capsys)
    with h5py.File(tmp_path / "mnist.h5") as handle:
        assert handle["patches"].shape == (10_000, 784)
    assert load_model(tmp_path / "mnist-model.h5").W1.shape == (196, 784)
    assert (tmp_path / "mnist-features.png").stat().st_size > 0


def test_linear_decoder_on_zca_whitened_rgb_patches(monkeypatch, tmp_path, capsys):
    run_section("Linear decoder on ZCA-whitened RGB patches", monkeypatch, tmp_path, capsys)
    with h5py.File(tmp_path / "rgb.h5") as old, h5py.File(tmp_path / "cat-rgb.h5") as new:
        assert np.array_equal(old["zca/matrix"][()], new["zca/matrix"][()])
    assert (tmp_path / "rgb-reconstructions.png").stat().st_size > 0


def test_self_taught_learning(monkeypatch, tmp_path, capsys):
    printed = run_section("Self-taught learning", monkeypatch, tmp_path, capsys)
    scores = [float(value) for value in re.findall(r"(?:pixels|features):\s+([0-9.]+)", printed)]
    pipeline = float(printed.strip().splitlines()[-1])
    assert len(scores) == 2 and all(score > 0.5 for score in scores), printed  # chance is 0.2
    assert pipeline > 0.3, printed  # ten classes: chance is 0.1
    assert (tmp_path / "digits-model.mat").stat().st_size > 0


def test_audio_chord(monkeypatch, tmp_path, capsys):
    run_section("Audio: a chord", monkeypatch, tmp_path, capsys)
    for picture in ("units.png", "audio-reconstructions.png"):
        assert (tmp_path / picture).stat().st_size > 0


@pytest.mark.slow
def test_the_tanh_settings_learn_the_notes_edges(images_dir, tmp_path):
    """The page's tanh example at full size: edges like the sigmoid's, where λ = 1e-4 gives noise."""
    from helpers import orientation_coherence

    data = tmp_path / "patches.h5"
    streamae.extract([images_dir], data, patch_size=8, num_patches=10_000)
    settings = {"hidden": 25, "activation": "tanh", "max_iter": 400, "stop_signals": False}
    edges = streamae.train(data, None, lam=5e-4, **settings)
    noisy = streamae.train(data, None, lam=1e-4, **settings)
    coherence = orientation_coherence(edges.W1, (8, 8))
    assert np.median(coherence) > 0.85 and np.mean(coherence > 0.6) >= 0.9, coherence
    assert np.median(orientation_coherence(noisy.W1, (8, 8))) < np.median(coherence) - 0.1
    assert "--activation tanh --lambda 5e-4" in PAGE.read_text()


def test_the_readme_exercises_are_lines_of_the_page_this_file_runs():
    """Every command of the README's exercise block stands in docs/exercises.md, which the
    tests above run as written, so the README cannot drift from what is tested."""
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    block = readme[readme.index("## UFLDL exercises") : readme.index("## Performance")]
    page = (root / "docs" / "exercises.md").read_text().splitlines()
    commands = [line.strip() for line in block.splitlines() if line.startswith("streamae ")]
    assert len(commands) >= 8
    missing = [command for command in commands if command not in page]
    assert not missing, f"README exercise commands not in docs/exercises.md: {missing}"
