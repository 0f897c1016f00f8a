"""Sampling plans, the cutting kernel and the streamed normalisations against slow NumPy twins."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from naive import notes_normalize

from streamae.extraction.normalize import Statistics
from streamae.extraction.sampling import SAMPLE_BLOCK_ROWS, cut_patches, plan_sampling

# --- slow twins ---------------------------------------------------------------------------


def naive_cut(images, image, top, left, height, width) -> np.ndarray:
    """Patches by plain slicing: row i is images[image[i]][top:top+h, left:left+w, :].ravel()."""
    return np.stack(
        [
            images[k][t : t + height, s : s + width, :].ravel()
            for k, t, s in zip(image, top, left, strict=True)
        ]
    )


def pack(images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images (H, W, C) packed as the cache packs them: flat pixels, offsets, widths."""
    pixels = np.concatenate([im.ravel() for im in images]).astype(np.float32)
    sizes = [im.size for im in images]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return pixels, offsets, np.array([im.shape[1] for im in images], dtype=np.int64)


def run_stats(mode: str, patches: np.ndarray, block_rows: int, **options):
    statistics = Statistics(mode, patches.shape[1], block_rows)
    for start in range(0, len(patches), block_rows):
        statistics.add(patches[start : start + block_rows])
    normalizer = statistics.finish(**options)
    out = patches.copy()
    for start in range(0, len(out), block_rows):
        normalizer.apply(out[start : start + block_rows])
    return normalizer, out


# --- cutting ------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_cut_matches_slicing(rng, channels):
    images = [rng.random((h, w, channels)).astype(np.float32) for h, w in [(10, 13), (17, 9), (12, 12)]]
    ph, pw = 5, 4
    plan = plan_sampling(
        [im.shape[0] for im in images],
        [im.shape[1] for im in images],
        (ph, pw),
        [(0, 3)],
        num_patches=500,
        seed=3,
    )
    image, top, left = plan.positions(0, 0, 500)
    out = np.empty((500, ph * pw * channels), dtype=np.float32)
    cut_patches(*pack(images), channels, image, top, left, ph, pw, out)
    np.testing.assert_array_equal(out, naive_cut(images, image, top, left, ph, pw))


# --- sampling plans -----------------------------------------------------------------------


def test_random_positions_are_inside_and_cover_every_image(rng):
    heights, widths = [20, 9, 33], [15, 40, 8]
    plan = plan_sampling(heights, widths, (8, 8), [(0, 3)], num_patches=30_000, seed=5)
    image, top, left = plan.positions(0, 0, 30_000)
    h, w = np.array(heights)[image], np.array(widths)[image]
    assert top.min() == 0 and left.min() == 0
    assert np.all(top + 8 <= h) and np.all(left + 8 <= w)
    for k in range(3):  # every image, and both extreme positions of each, are reached
        chosen = image == k
        assert abs(chosen.mean() - 1 / 3) < 0.02
        assert top[chosen].max() == heights[k] - 8 and left[chosen].max() == widths[k] - 8


def test_same_seed_same_positions_other_seed_other_positions():
    def draw(seed):
        return np.stack(
            plan_sampling([50], [60], (8, 8), [(0, 1)], num_patches=1000, seed=seed).positions(0, 0, 1000)
        )

    np.testing.assert_array_equal(draw(1), draw(1))
    assert not np.array_equal(draw(1), draw(2))


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(1, 3 * SAMPLE_BLOCK_ROWS - 1), max_size=6))
def test_positions_do_not_depend_on_how_rows_are_requested(cuts):
    total = 3 * SAMPLE_BLOCK_ROWS - 7
    plan = plan_sampling([30, 40], [50, 20], (6, 6), [(0, 2)], num_patches=total, seed=11)
    whole = np.stack(plan.positions(0, 0, total))
    bounds = [0, *sorted(c for c in set(cuts) if c < total), total]
    pieces = [np.stack(plan.positions(0, a, b)) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    np.testing.assert_array_equal(np.concatenate(pieces, axis=1), whole)


def test_grid_enumerates_every_position_image_by_image():
    heights, widths, patch, stride = [10, 7], [9, 12], (3, 4), (2, 3)
    plan = plan_sampling(heights, widths, patch, [(0, 1), (1, 2)], stride=stride)
    expected = [
        (k, y, x)
        for k in range(2)
        for y in range(0, heights[k] - patch[0] + 1, stride[0])
        for x in range(0, widths[k] - patch[1] + 1, stride[1])
    ]
    got = []
    for g, group in enumerate(plan.groups):
        image, top, left = plan.positions(g, 0, group.stop_row - group.start_row)
        got += [(group.first_image + k, y, x) for k, y, x in zip(image, top, left, strict=True)]
    assert got == expected
    assert plan.total_rows == len(expected)


def test_groups_share_the_patches_like_a_uniform_image_choice():
    plan = plan_sampling([10] * 6, [10] * 6, (4, 4), [(0, 1), (1, 4), (4, 6)], num_patches=60_000, seed=0)
    counts = np.array([g.stop_row - g.start_row for g in plan.groups])
    assert counts.sum() == 60_000
    np.testing.assert_allclose(counts / 60_000, [1 / 6, 3 / 6, 2 / 6], atol=0.01)


# --- normalisations -----------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(block_rows=st.integers(1, 700), seed=st.integers(0, 2**32 - 1))
def test_ufldl_streamed_equals_the_notes_for_any_block_size(block_rows, seed):
    patches = np.random.default_rng(seed).gamma(2.0, 30.0, size=(600, 64)).astype(np.float32)
    normalizer, out = run_stats("ufldl", patches, block_rows)
    expected = notes_normalize(patches)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
    assert normalizer.describe()["sigma"] == pytest.approx(
        (patches - patches.mean(axis=1, keepdims=True, dtype=np.float64)).std(ddof=1), rel=1e-10
    )


def test_ufldl_of_constant_patches_is_the_midpoint():
    _, out = run_stats("ufldl", np.full((10, 4), 7.0, dtype=np.float32), 3)
    np.testing.assert_array_equal(out, 0.5)


@settings(max_examples=20, deadline=None)
@given(block_rows=st.integers(1, 500))
def test_zscore_streamed_equals_numpy(block_rows):
    rng = np.random.default_rng(block_rows)
    patches = (rng.normal(100, 20, size=(400, 12)) * rng.uniform(0.5, 2, 12)).astype(np.float32)
    patches[:, 3] = 5.0  # a constant pixel is centred, not divided by zero
    normalizer, out = run_stats("zscore", patches, block_rows)
    x = patches.astype(np.float64)
    np.testing.assert_allclose(normalizer.mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(normalizer.std, x.std(axis=0), rtol=1e-9, atol=1e-12)
    std = x.std(axis=0)
    expected = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    np.testing.assert_allclose(out, expected, atol=2e-5)


@pytest.mark.parametrize("block_rows", [1, 37, 1000])
def test_zca_streamed_equals_numpy(rng, block_rows):
    mixing = rng.normal(size=(10, 10))
    patches = (rng.normal(size=(1000, 10)) @ mixing + 50).astype(np.float32)
    normalizer, out = run_stats("zca", patches, block_rows, epsilon=0.01)
    x = patches.astype(np.float64)
    mean = x.mean(axis=0)
    covariance = np.cov(x, rowvar=False, bias=True)
    values, vectors = np.linalg.eigh(covariance)
    whitening = vectors @ np.diag(1 / np.sqrt(values + 0.01)) @ vectors.T
    np.testing.assert_allclose(normalizer.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(normalizer.matrix, whitening, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(out, (x - mean) @ whitening.T, atol=1e-5)
