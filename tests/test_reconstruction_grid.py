"""The notes' pictures for whitened data: W1·ZCAWhite, and inputs beside their reconstructions."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from streamae.cli.main import cli
from streamae.compute.parameters import Hyperparameters
from streamae.extraction.pipeline import extract
from streamae.io.modelfile import Model, load_model
from streamae.reconstruction_grid import LABEL_BAND, labelled, pair_scale, reconstruction_grid
from streamae.render import contrast_stretch, feature_grid, features_in_space
from streamae.training.session import train


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    print(result.output)
    return result


@pytest.fixture
def zca_model(rng) -> Model:
    s, n = 6, 16
    A = rng.normal(size=(n, n))
    matrix = A @ A.T + n * np.eye(n)  # symmetric positive definite, like a ZCA matrix
    return Model(
        W1=rng.normal(size=(s, n)),
        W2=rng.normal(size=(n, s)),
        b1=rng.normal(size=s),
        b2=rng.normal(size=n),
        hyper=Hyperparameters(hidden=s, decoder="linear"),
        patch_shape=(4, 4, 1),
        normalization={"mode": "zca", "epsilon": 0.1, "mean": "/zca/mean", "matrix": "/zca/matrix"},
        normalization_arrays={"zca/mean": rng.normal(size=n), "zca/matrix": matrix},
    )


def test_the_zca_view_is_w1_times_zcawhite(zca_model):
    expected = zca_model.W1 @ zca_model.normalization_arrays["zca/matrix"]
    np.testing.assert_allclose(features_in_space(zca_model), expected, rtol=1e-12)
    np.testing.assert_array_equal(features_in_space(zca_model, "whitened"), zca_model.W1)
    grid = feature_grid(zca_model)  # the input space by default
    first = expected[0] / np.linalg.norm(expected[0])
    top, left = grid.origin(0)
    np.testing.assert_array_equal(
        grid.image[top : top + 4, left : left + 4], contrast_stretch(first).reshape(4, 4)
    )


def test_the_model_remembers_its_datas_zca_and_visualize_draws_both_spaces(images_dir, tmp_path):
    data = tmp_path / "zca.h5"
    extract([images_dir], data, num_patches=400, normalize="zca", patch_size=6)
    model_path = tmp_path / "m.h5"
    train(data, model_path, hidden=5, decoder="linear", max_iter=3, stop_signals=False)
    model = load_model(model_path)
    import h5py

    with h5py.File(data) as handle:
        assert np.array_equal(model.normalization_arrays["zca/matrix"], handle["zca/matrix"][()])
        assert np.array_equal(model.normalization_arrays["zca/mean"], handle["zca/mean"][()])
    assert model.normalization["mode"] == "zca"
    assert "normalization:    zca" in invoke("info", model_path).output
    for space in ("input", "whitened"):
        out = tmp_path / f"{space}.png"
        assert invoke("visualize", model_path, "-o", out, "--space", space, "--scale", "1").exit_code == 0
    default = tmp_path / "default.png"
    assert invoke("visualize", model_path, "-o", default, "--scale", "1").exit_code == 0
    assert np.array_equal(np.asarray(Image.open(default)), np.asarray(Image.open(tmp_path / "input.png")))
    assert not np.array_equal(
        np.asarray(Image.open(default)), np.asarray(Image.open(tmp_path / "whitened.png"))
    )


def test_reconstructions_show_the_inputs_unwhitened(images_dir, tmp_path):
    """The un-whitened inputs equal the same patches extracted with plain unit scaling."""
    zca, unit = tmp_path / "zca.h5", tmp_path / "unit.h5"
    extract([images_dir], zca, num_patches=300, normalize="zca", patch_size=6, seed=2)
    extract([images_dir], unit, num_patches=300, normalize="unit", patch_size=6, seed=2)
    model_path = tmp_path / "m.h5"
    train(zca, model_path, hidden=5, decoder="linear", max_iter=2, stop_signals=False)
    model = load_model(model_path)
    grid = reconstruction_grid(model, zca, pairs=9, seed=1)
    import h5py

    with h5py.File(unit) as handle:
        raw = handle["patches"][()][grid.rows]
    np.testing.assert_allclose(grid.inputs, raw, rtol=0, atol=1e-4)
    assert grid.grid == (3, 6) and grid.image.shape == (1 + 3 * 7, 1 + 6 * 7)
    again = reconstruction_grid(model, zca, pairs=9, seed=1)
    assert np.array_equal(again.rows, grid.rows)  # chosen by the seed
    out = tmp_path / "rec.png"
    result = invoke(
        "visualize", model_path, "--reconstructions", zca, "-o", out, "--pairs", "9", "--scale", "2"
    )
    assert result.exit_code == 0 and "9 patches of" in result.output
    drawn = pixels(out)  # the grid under a band of labels
    assert drawn.shape == (LABEL_BAND + 2 * (1 + 3 * 7), 2 * (1 + 6 * 7))
    grid2 = reconstruction_grid(model, zca, pairs=9, seed=0, scale=2)  # the command's default seed
    np.testing.assert_array_equal(drawn[LABEL_BAND:], grid2.image)
    assert np.any(drawn[:LABEL_BAND] < 128)  # dark text on the white band


def test_each_pair_is_on_its_inputs_scale_and_a_flat_black_patch_stays_black(tmp_path, rng):
    """The issue's case: a black patch reconstructed within 0.0045 was stretched into a colour square."""
    n = 16
    data = np.clip(rng.uniform(0.0, 1.0, size=(4, n)), 0, 1)
    data[1] = 0.0  # a black patch
    model = Model(
        W1=np.zeros((2, n)), W2=np.zeros((n, 2)), b1=np.zeros(2), b2=np.full(n, 0.0045),
        hyper=Hyperparameters(hidden=2, decoder="linear"), patch_shape=(4, 4, 1),
    )  # fmt: skip
    import h5py

    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("patches", data=data.astype(np.float32))
        handle.attrs["format"] = "streamae.patches/1"
        handle.attrs["patch_shape"] = np.array([4, 4, 1])
    grid = reconstruction_grid(model, path, pairs=4, seed=0, cols=4)
    black = int(np.flatnonzero(grid.rows == 1)[0])
    top, left = 1, 1 + 2 * black * 5
    assert np.all(grid.image[top : top + 4, left : left + 4] == 0)  # the input: black
    rebuilt = grid.image[top : top + 4, left + 5 : left + 9]
    low, high = grid.scales[black]
    assert low == 0.0 and np.all(rebuilt == round(255 * 0.0045 / high))  # the input's scale
    assert np.all(rebuilt < 10), rebuilt  # 0.0045 on a scale of a quarter of ~0.9: still black
    for k in range(4):  # the scale is the input's own range wherever the input is not flat
        if k != black:
            assert tuple(grid.scales[k]) == (grid.inputs[k].min(), grid.inputs[k].max())
    labels = labelled(grid, 1)
    assert labels.shape == (LABEL_BAND + grid.image.shape[0], grid.image.shape[1])


def test_pair_scale_widens_a_flat_input_where_it_sits():
    assert pair_scale(np.array([0.2, 0.8]), (0.0, 1.0), 0.5) == (0.2, 0.8)
    assert pair_scale(np.zeros(4), (0.0, 1.0), 0.5) == (0.0, 0.5)  # black stays at the bottom
    assert pair_scale(np.ones(4), (0.0, 1.0), 0.5) == (0.5, 1.0)  # white at the top
    assert pair_scale(np.full(4, 0.5), (0.0, 1.0), 0.5) == (0.25, 0.75)  # mid-gray in the middle
