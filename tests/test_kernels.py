"""The fused kernels and the vectorisable exp against plain NumPy, and the lane split."""

from __future__ import annotations

import numpy as np
import pytest

from streamae.compute import kernels
from streamae.compute.lanes import Lanes, lane_ranges


def sigmoid64(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


@kernels.njit(**kernels.STRICT_OPTIONS)
def _apply_exp32(values, result):
    for i in range(values.shape[0]):
        result[i] = kernels.exp32(values[i])


def exp32_of(x: np.ndarray) -> np.ndarray:
    """``kernels.exp32`` of each of ``x`` (n,) float32, called from a compiled loop as the kernels call it."""
    out = np.empty_like(x)
    _apply_exp32(x, out)
    return out


def test_exp32_relative_error_below_2e_7_over_its_range():
    x = np.concatenate([np.linspace(-87.0, 88.0, 200_001), [0.0, 1e-8, -1e-8, 0.5, -0.5]]).astype(np.float32)
    out = exp32_of(x)
    expected = np.exp(x.astype(np.float64))
    assert np.max(np.abs(out - expected) / expected) < 2e-7


def test_exp32_clamps_to_finite_normal_values():
    x = np.array([-1e4, -200.0, -88.0, 89.0, 200.0, 1e4], dtype=np.float32)
    out = exp32_of(x)
    assert np.all(np.isfinite(out)) and np.all(out > 0)
    assert out[0] == pytest.approx(np.exp(np.float64(-87.0)), rel=1e-6)
    assert out[-1] == pytest.approx(np.exp(np.float64(88.0)), rel=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_slope", [True, False])
def test_hidden_forward_matches_numpy(rng, dtype, with_slope):
    z = rng.normal(0.0, 4.0, size=(7, 301)).astype(dtype)
    b1 = rng.normal(0.0, 1.0, size=7).astype(dtype)
    a = z.copy()
    slope = np.empty_like(z) if with_slope else np.empty((0, 301), dtype=dtype)
    sum_a2, sum_slope = np.ones(7), np.ones(7)
    kernels.hidden_forward(a, b1, kernels.SIGMOID, slope, sum_a2, sum_slope)
    # The argument is rounded to the compute dtype, as the kernel adds in it.
    expected = sigmoid64((z + b1[:, None]).astype(dtype))
    tolerance = 3e-7 if dtype == np.float32 else 1e-15
    np.testing.assert_allclose(a, expected, rtol=tolerance)
    np.testing.assert_allclose(sum_a2, 1.0 + expected.sum(axis=1), rtol=tolerance)
    if with_slope:
        np.testing.assert_allclose(slope, a * (1 - a), rtol=1e-15 if dtype == np.float64 else 1e-6)
        np.testing.assert_allclose(
            sum_slope, 1.0 + (expected * (1 - expected)).sum(axis=1), rtol=tolerance * 4
        )
    else:
        assert np.all(sum_slope == 1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_slope", [True, False])
def test_hidden_forward_tanh_matches_numpy(rng, dtype, with_slope):
    # Wide arguments: saturation at both ends (the float32 form's clamp) and values near 0.
    z = np.concatenate([rng.normal(0.0, 4.0, size=(7, 290)), np.full((7, 11), 60.0)], axis=1)
    z[:, -5:] = -60.0
    z[:, :4] = [1e-6, -1e-6, 0.0, 1e-3]
    z = z.astype(dtype)
    b1 = np.zeros(7, dtype=dtype)
    b1[1:] = rng.normal(0.0, 1.0, size=6)
    a = z.copy()
    slope = np.empty_like(z) if with_slope else np.empty((0, 301), dtype=dtype)
    sum_a2, sum_slope = np.ones(7), np.ones(7)
    kernels.hidden_forward(a, b1, kernels.TANH, slope, sum_a2, sum_slope)
    expected = np.tanh((z + b1[:, None]).astype(dtype).astype(np.float64))
    # float64: libm's tanh; float32: 2·sigmoid(2z) − 1, exact to a few ulp of 1 (absolute).
    tolerance = 3e-7 if dtype == np.float32 else 1e-15
    np.testing.assert_allclose(a, expected, rtol=tolerance, atol=tolerance)
    assert np.all(np.abs(a) <= 1.0)
    np.testing.assert_allclose(sum_a2, 1.0 + expected.sum(axis=1), rtol=tolerance, atol=301 * tolerance)
    if with_slope:
        # 1 − a² of the stored a, to rounding (the kernel may fuse it into one FMA).
        eps = np.finfo(dtype).eps
        np.testing.assert_allclose(slope, 1 - a.astype(np.float64) ** 2, rtol=0, atol=2 * eps)
        np.testing.assert_allclose(
            sum_slope, 1.0 + (1 - expected**2).sum(axis=1), rtol=tolerance * 4, atol=301 * tolerance
        )
    else:
        assert np.all(sum_slope == 1.0)


@pytest.mark.parametrize("activation", [kernels.SIGMOID, kernels.TANH])
def test_slope_of_cached_activations_equals_hidden_forwards(rng, activation):
    z = rng.normal(0.0, 2.0, size=(5, 97))
    b1 = rng.normal(0.0, 1.0, size=5)
    a, slope = z.copy(), np.empty_like(z)
    kernels.hidden_forward(a, b1, activation, slope, np.zeros(5), np.zeros(5))
    again = np.empty_like(z)
    kernels.slope_of(a, activation, again)
    # Equal to rounding: the fused kernel may contract a product and a subtraction into an FMA.
    np.testing.assert_allclose(again, slope, rtol=0, atol=2 * np.finfo(np.float64).eps)
    assert np.all(again > 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_hidden_activation_row_major_matches_numpy(rng, dtype, activation):
    z = rng.normal(0.0, 3.0, size=(300, 9)).astype(dtype)
    b1 = rng.normal(0.0, 1.0, size=9).astype(dtype)
    a = z.copy()
    partial = np.empty((kernels.segment_count(300), 9))
    sum_a2 = np.zeros(9)
    kernels.hidden_activation(a, b1, kernels.activation_code(activation), partial, sum_a2)
    argument = (z + b1).astype(dtype).astype(np.float64)
    expected = np.tanh(argument) if activation == "tanh" else sigmoid64(argument)
    tolerance = 3e-7 if dtype == np.float32 else 1e-15
    np.testing.assert_allclose(a, expected, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(sum_a2, expected.sum(axis=0), rtol=1e-6 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("linear", [False, True])
def test_output_backward_matches_numpy(rng, linear):
    z3 = rng.normal(0.0, 2.0, size=(129, 17))
    b2 = rng.normal(0.0, 1.0, size=17)
    x = rng.uniform(0.0, 1.0, size=(129, 17))
    delta = z3.copy()
    sums = np.zeros(17)
    half_squared = kernels.output_backward(delta, b2, x, linear, sums, np.empty(17))
    a3 = z3 + b2 if linear else sigmoid64(z3 + b2)
    expected = (a3 - x) if linear else (a3 - x) * a3 * (1 - a3)
    np.testing.assert_allclose(delta, expected, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(sums, expected.sum(axis=0), rtol=1e-12)
    assert half_squared == pytest.approx(0.5 * np.sum((a3 - x) ** 2), rel=1e-13)


def test_hidden_backward_matches_numpy(rng):
    e = rng.normal(size=(5, 77))
    slope = rng.uniform(0.0, 0.25, size=(5, 77))
    sparsity = rng.normal(size=5)
    delta = e.copy()
    sums = np.zeros(5)
    kernels.hidden_backward(delta, slope, sparsity, sums)
    expected = (e + sparsity[:, None]) * slope
    np.testing.assert_allclose(delta, expected, rtol=1e-15)
    np.testing.assert_allclose(sums, expected.sum(axis=1), rtol=1e-12)


@pytest.mark.parametrize("rows", [1, 63, 64, 65, 1000])
@pytest.mark.parametrize("block_rows", [1, 64, 100])
@pytest.mark.parametrize("lanes", [1, 2, 3])
def test_lane_ranges_cover_every_row_once_in_whole_blocks(rows, block_rows, lanes):
    ranges = lane_ranges(rows, block_rows, lanes)
    assert len(ranges) == lanes
    covered = np.concatenate([np.arange(start, stop) for start, stop in ranges])
    np.testing.assert_array_equal(covered, np.arange(rows))
    for start, stop in ranges:
        assert start % block_rows == 0 and (stop == rows or stop % block_rows == 0)


def test_lanes_run_every_lane_and_raise_a_lanes_error():
    lanes = Lanes(3)
    seen = []
    lanes.run(seen.append)
    assert sorted(seen) == [0, 1, 2]

    def fail_on_two(lane):
        if lane == 2:
            raise RuntimeError("lane 2 failed")
        seen.append(lane)

    with pytest.raises(RuntimeError, match="lane 2 failed"):
        lanes.run(fail_on_two)
    lanes.close()
