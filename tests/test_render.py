"""`streamae visualize` and streamae.render: the tile grid's pixels, the plots, bad input.

Expected pixels are computed here independently with NumPy: a unit's tile is
W1[i] / ‖W1[i]‖ reshaped to (h, w, c), then mapped to round(128 + 127 · t / max|t|);
the border is 0.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from helpers import assert_clean_failure, invoke
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from streamae.io.modelfile import HISTORY_FIELDS, load_model
from streamae.render import activation_histogram, plot_activations, plot_curves, tile_grid

BORDER = 0


def read_pixels(path) -> np.ndarray:
    """The decoded pixels of a PNG, with the file closed again."""
    with Image.open(path) as png:
        assert png.format == "PNG"
        return np.asarray(png)


def expected_tile(row: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """The notes' tile of one W1 row (n,): unit norm, symmetric stretch, uint8 (h, w, c)."""
    x = row / np.sqrt(np.sum(row**2))
    return np.rint(128 + 127 * x / np.max(np.abs(x))).astype(np.uint8).reshape(shape)


def expected_size(s: int, h: int, w: int, cols: int, scale: int) -> tuple[int, int]:
    """(width, height) as Pillow reports it, from the grid arithmetic."""
    rows = -(-s // cols)
    return (scale * (1 + cols * (w + 1)), scale * (1 + rows * (h + 1)))


def tile_at(image: np.ndarray, k: int, cols: int, h: int, w: int, scale: int) -> np.ndarray:
    """Tile k of a decoded image, sampled back to one pixel per value (h, w[, c])."""
    row, col = divmod(k, cols)
    top, left = scale * (1 + row * (h + 1)), scale * (1 + col * (w + 1))
    block = image[top : top + scale * h, left : left + scale * w]
    # Pixel repetition: every pixel of a K x K block equals its top-left one.
    sampled = block[::scale, ::scale]
    assert np.array_equal(np.repeat(np.repeat(sampled, scale, 0), scale, 1), block)
    return sampled


def border_mask(s: int, h: int, w: int, cols: int, scale: int) -> np.ndarray:
    """True where the image holds no tile pixel (borders and empty cells)."""
    width, height = expected_size(s, h, w, cols, scale)
    mask = np.ones((height, width), dtype=bool)
    for k in range(s):
        row, col = divmod(k, cols)
        top, left = scale * (1 + row * (h + 1)), scale * (1 + col * (w + 1))
        mask[top : top + scale * h, left : left + scale * w] = False
    return mask


@pytest.mark.parametrize(
    ("s", "h", "w", "cols", "scale"),
    [(25, 8, 8, None, 1), (10, 6, 5, None, 3), (10, 6, 5, 3, 2), (7, 4, 9, 7, 1)],
)
def test_gray_png_size_pixels_and_border(tmp_path, model_file, rng, s, h, w, cols, scale):
    W1 = rng.normal(size=(s, h * w))
    model = model_file(W1, patch_shape=(h, w))
    output = tmp_path / "features.png"
    args = [model, "-o", output, "--scale", scale] + (["--cols", cols] if cols else [])
    assert invoke("visualize", *args).exit_code == 0

    grid_cols = cols or int(np.ceil(np.sqrt(s)))
    with Image.open(output) as png:
        assert png.format == "PNG" and png.mode == "L"
        assert png.size == expected_size(s, h, w, grid_cols, scale)
        image = np.asarray(png)
    for k in {0, s // 2, s - 1}:
        assert np.array_equal(
            tile_at(image, k, grid_cols, h, w, scale), expected_tile(W1[k], (h, w, 1))[..., 0]
        )
    assert np.all(image[border_mask(s, h, w, grid_cols, scale)] == BORDER)


def test_rgb_model_gives_rgb_image(tmp_path, model_file, rng):
    s, shape = 6, (5, 4, 3)
    W1 = rng.normal(size=(s, 60))
    output = tmp_path / "features.png"
    assert invoke("visualize", model_file(W1, patch_shape=shape), "-o", output, "--scale", 2).exit_code == 0
    with Image.open(output) as png:
        assert png.mode == "RGB"
        assert png.size == expected_size(s, 5, 4, 3, 2)
        image = np.asarray(png)
    for k in range(s):
        assert np.array_equal(tile_at(image, k, 3, 5, 4, 2), expected_tile(W1[k], shape))
    assert np.all(image[border_mask(s, 5, 4, 3, 2)] == BORDER)


def planted_rows() -> np.ndarray:
    """W1 (3, 64): a horizontal edge, a vertical edge and a dot, as 8x8 images."""
    horizontal = np.ones((8, 8))
    horizontal[4:] = -1.0
    vertical = np.ones((8, 8))
    vertical[:, 4:] = -1.0
    dot = np.zeros((8, 8))
    dot[3, 3] = 1.0
    # Different magnitudes, so that --sort norm has an order to find.
    return np.stack([0.5 * horizontal.ravel(), 2.0 * vertical.ravel(), 3.0 * dot.ravel()])


@pytest.mark.parametrize(
    ("sort", "tiles"),
    [
        ("none", ("horizontal", "vertical", "dot")),
        ("activation", ("vertical", "dot", "horizontal")),
        ("norm", ("vertical", "horizontal", "dot")),
    ],
)
def test_planted_edges_and_dot_land_in_expected_tiles(tmp_path, model_file, sort, tiles):
    # norms: horizontal 0.5*8 = 4, vertical 2*8 = 16, dot 3; rho_hat puts vertical first.
    model = model_file(planted_rows(), patch_shape=(8, 8, 1), rho_hat=np.array([0.01, 0.3, 0.1]))
    output = tmp_path / "planted.png"
    assert invoke("visualize", model, "-o", output, "--scale", 1, "--sort", sort).exit_code == 0
    image = read_pixels(output)
    assert image.shape == (1 + 2 * 9, 1 + 2 * 9)  # 3 tiles: 2 columns, 2 rows
    top_half, bottom_half = np.full((4, 8), 255), np.full((4, 8), 1)
    pictures = {
        "horizontal": np.vstack([top_half, bottom_half]),
        "vertical": np.hstack([top_half.T, bottom_half.T]),
        "dot": np.where(np.arange(64).reshape(8, 8) == 27, 255, 128),
    }
    for k, name in enumerate(tiles):
        assert np.array_equal(tile_at(image, k, 2, 8, 8, 1), pictures[name]), (k, name)
    # The grid's fourth cell is empty and drawn like the border.
    assert np.all(image[10:18, 10:18] == BORDER)


def test_square_fallback_without_stored_patch_shape(tmp_path, model_file, rng):
    W1 = rng.normal(size=(4, 49))
    output = tmp_path / "features.png"
    assert invoke("visualize", model_file(W1), "-o", output, "--scale", 1).exit_code == 0
    image = read_pixels(output)
    assert image.shape == (1 + 2 * 8, 1 + 2 * 8)
    assert np.array_equal(tile_at(image, 3, 2, 7, 7, 1), expected_tile(W1[3], (7, 7, 1))[..., 0])


def test_patch_shape_option_overrides_and_zero_row_is_mid_gray(tmp_path, model_file, rng):
    W1 = rng.normal(size=(2, 12))
    W1[1] = 0.0
    output = tmp_path / "features.png"
    model = model_file(W1, patch_shape=(3, 4))
    assert invoke("visualize", model, "-o", output, "--patch-shape", "2x6", "--scale", 1).exit_code == 0
    image = read_pixels(output)
    assert image.shape == (1 + 2 + 1, 1 + 2 * 7)
    assert np.array_equal(tile_at(image, 0, 2, 2, 6, 1), expected_tile(W1[0], (2, 6, 1))[..., 0])
    assert np.all(tile_at(image, 1, 2, 2, 6, 1) == 128)


@settings(max_examples=40, deadline=None)
@given(
    s=st.integers(1, 12),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    c=st.sampled_from([1, 3]),
    cols=st.one_of(st.none(), st.integers(1, 13)),
    scale=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_tile_grid_matches_arithmetic_for_any_layout(s, h, w, c, cols, scale, seed):
    tiles = np.random.default_rng(seed).normal(size=(s, h, w, c))
    image, (rows, grid_cols) = tile_grid(tiles, cols, scale)
    expected_cols = cols or int(np.ceil(np.sqrt(s)))
    assert (rows, grid_cols) == (-(-s // expected_cols), expected_cols)
    width, height = expected_size(s, h, w, expected_cols, scale)
    assert image.shape == ((height, width) if c == 1 else (height, width, 3))
    for k in range(s):
        sampled = tile_at(image, k, expected_cols, h, w, scale)
        peak = np.max(np.abs(tiles[k]))
        levels = np.rint(128 + 127 * tiles[k] / peak).astype(np.uint8)
        assert np.array_equal(sampled, levels[..., 0] if c == 1 else levels)
    assert np.all(image[border_mask(s, h, w, expected_cols, scale)] == BORDER)


# --------------------------------------------------------------------------- plots


def history(iterations: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    values = {name: np.sort(rng.uniform(0.01, 1.0, iterations))[::-1] for name in HISTORY_FIELDS}
    values["sparsity"] = np.zeros(iterations)  # beta = 0: cannot appear on a log axis
    return values


def test_curves_and_activation_plots_are_pngs_of_the_expected_size(tmp_path, model_file, rng):
    rho_hat = rng.uniform(0.0, 0.2, 30)
    path = model_file(rng.normal(size=(30, 16)), history=history(12, rng), rho_hat=rho_hat, rho=0.05)
    curves, activations = tmp_path / "curves.png", tmp_path / "act.png"
    result = invoke("visualize", path, "--curves", curves, "--activations", activations)
    assert result.exit_code == 0
    assert "curves.png" in result.output and "act.png" in result.output
    for output in (curves, activations):
        with Image.open(output) as png:
            png.verify()
        with Image.open(output) as png:
            assert png.format == "PNG" and png.size == (800, 600)

    model = load_model(path)
    drawn = plot_activations(model, tmp_path / "again.png", name=path.name)
    assert np.array_equal(drawn.values, rho_hat)
    assert drawn.target == 0.05
    assert drawn.counts.sum() == 30
    assert np.array_equal(drawn.counts, np.histogram(rho_hat, bins=drawn.edges)[0])
    assert drawn.edges[0] == 0.0 and drawn.edges[-1] >= max(rho_hat.max(), 0.05)
    assert np.array_equal(activation_histogram(model).counts, drawn.counts)

    series = plot_curves(model, tmp_path / "curves2.png", name=path.name)
    assert np.array_equal(series.iteration, np.arange(1, 13))
    for name in ("cost", "reconstruction", "weight_decay", "sparsity", "grad_norm"):
        assert np.array_equal(series.series[name], model.history[name])


# --------------------------------------------------------------------------- bad input


def test_patch_file_given_to_visualize(tmp_path, patch_file, unit_patches):
    data = patch_file(unit_patches, patch_shape=(8, 8, 1))
    result = invoke("visualize", data, "-o", tmp_path / "f.png")
    assert_clean_failure(result, 2, str(data), "patch file, not a model file")
    assert not (tmp_path / "f.png").exists()


def test_model_with_missing_dataset(tmp_path, model_file, rng):
    path = model_file(rng.normal(size=(4, 16)))
    with h5py.File(path, "a") as handle:
        del handle["W2"]
    result = invoke("visualize", path, "-o", tmp_path / "f.png")
    assert_clean_failure(result, 2, str(path), "/W2")
    assert not (tmp_path / "f.png").exists()


def test_existing_output_needs_force(tmp_path, model_file, rng):
    path = model_file(rng.normal(size=(4, 16)))
    output = tmp_path / "f.png"
    output.write_bytes(b"keep me")
    assert_clean_failure(invoke("visualize", path, "-o", output), 2, str(output), "--force")
    assert output.read_bytes() == b"keep me"
    assert invoke("visualize", path, "-o", output, "--force").exit_code == 0
    with Image.open(output) as png:
        assert png.format == "PNG"
    assert [p.name for p in tmp_path.iterdir() if "streamae-tmp" in p.name] == []


def test_existing_plot_output_is_refused_before_anything_is_written(tmp_path, model_file, rng):
    path = model_file(rng.normal(size=(4, 16)), history=history(3, rng), rho_hat=np.full(4, 0.1))
    (tmp_path / "act.png").write_bytes(b"old")
    result = invoke("visualize", path, "-o", tmp_path / "f.png", "--activations", tmp_path / "act.png")
    assert_clean_failure(result, 2, "act.png", "--force")
    assert not (tmp_path / "f.png").exists()


def test_directory_as_output(tmp_path, model_file, rng):
    path = model_file(rng.normal(size=(4, 16)))
    assert_clean_failure(invoke("visualize", path, "-o", tmp_path), 2, str(tmp_path), "directory")


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        ([], ("nothing to write",)),
        (["--patch-shape", "5x5"], ("25 values", "20")),
        (["--patch-shape", "banana"], ("HxW",)),
        (["--sort", "activation", "--patch-shape", "4x5"], ("/rho_hat", "--sort norm")),
        (["--patch-shape", "2x5x2"], ("2 channels",)),
    ],
)
def test_bad_options_are_usage_errors(tmp_path, model_file, rng, options, fragments):
    path = model_file(rng.normal(size=(4, 20)))  # 20 inputs: no stored shape, not a square
    out = ["-o", tmp_path / "f.png"] if options else []
    assert_clean_failure(invoke("visualize", path, *out, *options), 2, *fragments)


def test_non_square_model_without_patch_shape(tmp_path, model_file, rng):
    path = model_file(rng.normal(size=(4, 20)))
    assert_clean_failure(invoke("visualize", path, "-o", tmp_path / "f.png"), 2, str(path), "--patch-shape")


def test_plots_of_a_model_without_history(tmp_path, model_file, rng):
    path = model_file(rng.normal(size=(4, 16)))
    assert_clean_failure(
        invoke("visualize", path, "--curves", tmp_path / "c.png"), 2, str(path), "0 iterations"
    )
    assert_clean_failure(
        invoke("visualize", path, "--activations", tmp_path / "a.png"), 2, str(path), "/rho_hat"
    )


def test_tanh_units_histogram_shows_the_mean_rho_targets(model_file, rng):
    """For tanh units ρ targets the mean of (a2 + 1)/2, so that is what the histogram counts."""
    from streamae.io.modelfile import load_model

    rho_hat = rng.uniform(-0.99, -0.9, size=6)
    model = load_model(model_file(rng.normal(size=(6, 4)), activation="tanh", rho_hat=rho_hat, rho=0.03))
    histogram = activation_histogram(model)
    np.testing.assert_allclose(histogram.values, (rho_hat + 1) / 2)
    assert histogram.edges[0] == 0.0 and histogram.counts.sum() == 6


def test_curves_get_an_elapsed_time_axis_when_the_seconds_rise(model_file, rng, tmp_path):
    from streamae.io.modelfile import load_model

    history = {
        key: np.linspace(2.0, 1.0, 5) for key in ("cost", "reconstruction", "weight_decay", "sparsity")
    }
    history.update(grad_norm=np.full(5, 0.1), seconds=np.array([0.5, 1.0, 1.6, 2.0, 2.9]))
    model = load_model(model_file(rng.normal(size=(3, 4)), history=history))
    plot_curves(model, tmp_path / "c.png")
    from streamae import render

    figure = render._new_figure()
    axes = figure.subplots()
    render._elapsed_axis(axes, np.arange(1, 6), history["seconds"])
    secondary = [child for child in axes.get_children() if child.__class__.__name__ == "SecondaryAxis"]
    assert len(secondary) == 1 and secondary[0].get_xlabel() == "elapsed time (s)"
    render._elapsed_axis(axes, np.arange(1, 6), np.array([0.5, 0.4, 1.0, 2.0, 3.0]))  # not rising
    assert len([c for c in axes.get_children() if c.__class__.__name__ == "SecondaryAxis"]) == 1
