"""The README's "UFLDL exercises", run on small data; and every command the section shows parses."""

from __future__ import annotations

import gzip
import shlex

import h5py
import numpy as np
from click.testing import CliRunner
from helpers import MNIST_IMAGES, TESTS

from streamae.cli.main import cli
from streamae.io.modelfile import load_model

REPO = TESTS.parent

MNIST_LABELS = MNIST_IMAGES.with_name("t10k-labels-idx1-ubyte.gz")


def invoke(*args) -> None:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    print(result.output)
    assert result.exit_code == 0, result.output


def readme_commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    section = text.split("## UFLDL exercises", 1)[1].split("\n## ", 1)[0]
    return [shlex.split(line, comments=True) for line in section.splitlines() if line.startswith("streamae ")]


def test_the_readme_shows_the_four_exercises_and_every_command_parses():
    commands = readme_commands()
    assert len(commands) >= 12
    assert {words[1] for words in commands} == {"extract", "train", "visualize", "export"}
    for words in commands:
        command = cli.get_command(None, words[1])
        command.make_context(words[1], words[2:])  # raises on an unknown option or a bad value


def test_natural_images(images_dir, tmp_path):
    invoke("extract", images_dir, "-o", tmp_path / "patches.h5", "--patch-size", "8", "--num-patches", "2000")
    invoke(
        "train", tmp_path / "patches.h5", "-o", tmp_path / "model.h5", "--hidden", "25", "--max-iter", "20"
    )
    invoke("visualize", tmp_path / "model.h5", "-o", tmp_path / "features.png", "--scale", "4")
    assert (tmp_path / "features.png").stat().st_size > 0


def test_mnist_with_196_hidden_units(tmp_path):
    invoke(
        "extract",
        MNIST_IMAGES,
        "-o",
        tmp_path / "mnist.h5",
        "--patch-size",
        "28",
        "--stride",
        "28",
        "--normalize",
        "unit",
    )
    with h5py.File(tmp_path / "mnist.h5") as handle:
        rows = handle["patches"].shape[0]
    invoke(
        "train",
        tmp_path / "mnist.h5",
        "-o",
        tmp_path / "mnist-model.h5",
        "--hidden",
        "196",
        "--rho",
        "0.1",
        "--beta",
        "3",
        "--lambda",
        "3e-3",
        "--max-iter",
        "3",
        "--scheme",
        "single-pass",
    )
    invoke("visualize", tmp_path / "mnist-model.h5", "-o", tmp_path / "mnist-features.png", "--scale", "2")
    model = load_model(tmp_path / "mnist-model.h5")
    assert rows == 10_000 and model.W1.shape == (196, 784) and model.optimizer is None


def test_linear_decoder_on_zca_whitened_rgb_patches(images_dir, tmp_path):
    invoke(
        "extract",
        images_dir,
        "-o",
        tmp_path / "rgb.h5",
        "--color",
        "rgb",
        "--patch-size",
        "8",
        "--num-patches",
        "2000",
        "--normalize",
        "zca",
        "--zca-epsilon",
        "0.1",
    )
    invoke(
        "train",
        tmp_path / "rgb.h5",
        "-o",
        tmp_path / "rgb-model.h5",
        "--hidden",
        "30",
        "--decoder",
        "linear",
        "--rho",
        "0.035",
        "--beta",
        "5",
        "--lambda",
        "3e-3",
        "--max-iter",
        "10",
    )
    invoke("visualize", tmp_path / "rgb-model.h5", "-o", tmp_path / "rgb-features.png", "--scale", "4")
    invoke(
        "visualize",
        tmp_path / "rgb-model.h5",
        "--reconstructions",
        tmp_path / "rgb.h5",
        "-o",
        tmp_path / "rgb-reconstructions.png",
        "--scale",
        "4",
    )
    invoke(
        "extract",
        images_dir / "coffee.png",
        "-o",
        tmp_path / "new-rgb.h5",
        "--color",
        "rgb",
        "--patch-size",
        "8",
        "--normalize-like",
        tmp_path / "rgb.h5",
    )
    with h5py.File(tmp_path / "rgb.h5") as old, h5py.File(tmp_path / "new-rgb.h5") as new:
        assert np.array_equal(old["zca/matrix"][()], new["zca/matrix"][()])


def softmax_accuracy(train_x, train_y, test_x, test_y, classes: int, steps: int = 300) -> float:
    """The notes' softmax regression, fitted by plain gradient descent (weight decay 1e-4)."""
    weights = np.zeros((train_x.shape[1] + 1, classes))
    design = np.hstack([train_x, np.ones((train_x.shape[0], 1))])
    targets = np.eye(classes)[train_y]
    for _ in range(steps):
        scores = design @ weights
        scores -= scores.max(axis=1, keepdims=True)
        probabilities = np.exp(scores)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        weights -= 0.5 * (design.T @ (probabilities - targets) / design.shape[0] + 1e-4 * weights)
    predicted = np.argmax(np.hstack([test_x, np.ones((test_x.shape[0], 1))]) @ weights, axis=1)
    return float(np.mean(predicted == test_y))


def test_self_taught_learning(tmp_path):
    with gzip.open(MNIST_IMAGES) as handle:
        pixels = np.frombuffer(handle.read(), dtype=np.uint8, offset=16).reshape(-1, 784) / 255.0
    with gzip.open(MNIST_LABELS) as handle:
        labels = np.frombuffer(handle.read(), dtype=np.uint8, offset=8).astype(np.int64)
    unlabeled = pixels[labels >= 5][:2000]
    labeled, classes = pixels[labels < 5], labels[labels < 5]
    np.save(tmp_path / "unlabeled.npy", unlabeled)
    invoke("extract", "--vectors", tmp_path / "unlabeled.npy", "-o", tmp_path / "unlabeled.h5")
    invoke(
        "train",
        tmp_path / "unlabeled.h5",
        "-o",
        tmp_path / "digits-model.h5",
        "--hidden",
        "49",
        "--rho",
        "0.1",
        "--beta",
        "3",
        "--lambda",
        "3e-3",
        "--max-iter",
        "40",
    )
    invoke("export", tmp_path / "digits-model.h5", "-o", tmp_path / "digits-model.mat")
    model = load_model(tmp_path / "digits-model.h5")
    train_features = model.encode(labeled[:1000])
    test_features = model.encode(labeled[1000:1600])
    assert train_features.shape == (1000, 49)
    accuracy = softmax_accuracy(train_features, classes[:1000], test_features, classes[1000:1600], 5)
    assert accuracy > 0.6, accuracy  # chance is 0.2
