"""The row-vectorised products (compute/small.py) and the BLAS/tiled choice, on both sides.

Every path is compared with the dense NumPy twin (tests/naive.py) in float64, checked by
central differences, and run twice to be bitwise repeatable.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import objective_problem
from naive import dense_objective

from streamae.compute import calibration, small
from streamae.compute.schemes import make_objective
from streamae.io.patchfile import ArrayPatches

SCHEMES = ("two-pass", "single-pass", "in-core")


def relative(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


SIZES = [1, 3, 4, 5, 7, 17, 33, 513]


def assert_close_and_repeatable(kernel, args, out, expected, terms):
    """out equals the float64 reference to 1e-12 (relative to its scale), twice bitwise."""
    kernel(*args, out)
    scale = max(1.0, float(np.max(np.abs(expected))))
    assert np.max(np.abs(out - expected)) <= 1e-12 * scale * max(1, terms)
    again = np.full_like(out, np.nan)
    kernel(*args, again)
    assert np.array_equal(out, again)  # bitwise repeatable


@pytest.mark.parametrize("rows", SIZES)
@pytest.mark.parametrize("k", [1, 7, 64, 65])
@pytest.mark.parametrize("p", [1, 3, 4, 25, 26])
@pytest.mark.parametrize("with_bias", [False, True])
def test_rows_product_is_bias_plus_b_times_a_transposed(rng, rows, k, p, with_bias):
    AT = rng.normal(size=(k, rows))
    B = rng.normal(size=(p, k))
    bias = rng.normal(size=p) if with_bias else np.empty(0)
    expected = B @ AT + (bias[:, None] if with_bias else 0.0)
    out = np.full((p, rows), np.nan)
    assert_close_and_repeatable(small.rows_product, (B, AT, bias), out, expected, k)


def test_rows_product_writes_into_strided_row_views(rng):
    # The passes hand it reshaped slices of flat buffers; rows of out are contiguous.
    AT = rng.normal(size=(9, 40))
    B = rng.normal(size=(6, 9))
    flat = np.full(6 * 33 + 5, np.nan)
    out = flat[: 6 * 33].reshape(6, 33)
    small.rows_product(B, AT[:, :33].copy(), np.empty(0), out)
    assert np.allclose(out, B @ AT[:, :33], rtol=0, atol=1e-12)
    assert np.isnan(flat[6 * 33 :]).all()  # nothing written past the block


@pytest.mark.parametrize("rows", SIZES)
@pytest.mark.parametrize(("p", "q"), [(1, 1), (3, 5), (4, 4), (25, 64), (50, 65), (65, 27)])
def test_row_dots_is_a_times_b_transposed(rng, rows, p, q):
    A = rng.normal(size=(p, rows))
    B = rng.normal(size=(q, rows))
    out = np.full((p, q), np.nan)
    assert_close_and_repeatable(small.row_dots, (A, B), out, A @ B.T, rows)


@pytest.mark.parametrize("rows", SIZES)
@pytest.mark.parametrize("n", [1, 7, 16, 64, 65])
def test_transpose_into_and_row_sums(rng, rows, n):
    x = rng.normal(size=(rows, n))
    xt = np.full((n, rows), np.nan)
    small.transpose_into(x, xt)
    assert np.array_equal(xt, x.T)
    total = np.ones(n)
    small.add_row_sums(xt, total)
    assert np.allclose(total, 1.0 + x.sum(axis=0), rtol=1e-12, atol=1e-12)


def test_kernels_in_float32_are_within_float32_rounding(rng):
    AT = rng.uniform(size=(64, 300)).astype(np.float32)
    B = rng.normal(size=(25, 64)).astype(np.float32)
    out = np.empty((25, 300), dtype=np.float32)
    small.rows_product(B, AT, np.empty(0, np.float32), out)
    assert relative(out, B.astype(np.float64) @ AT.astype(np.float64)) < 1e-6
    dots = np.empty((25, 64), dtype=np.float32)
    small.row_dots(out, AT, dots)
    assert relative(dots, out.astype(np.float64) @ AT.astype(np.float64).T) < 1e-6


def planted(arm: str) -> dict:
    """A calibration entry that chose ``arm`` (what calibration.calibrate returns)."""
    return {
        "chosen": arm,
        "seconds": {name: 1.0 for name in calibration.ARMS},
        "noise": 0.0,
        "margin": calibration.MIN_MARGIN,
        "source": "planted",
    }


def test_products_asked_for_are_taken_and_auto_follows_the_calibration(monkeypatch):
    def refuse(*args):
        raise AssertionError("products asked for must not calibrate")

    monkeypatch.setattr(calibration, "calibrate", refuse)
    choose = calibration.choose
    assert choose("two-pass", 64, 25, np.float32, 512, "tiled")[:2] == (True, True)
    assert choose("two-pass", 64, 25, np.float32, 512, "blas")[:2] == (False, False)
    with pytest.raises(ValueError, match="products"):
        choose("two-pass", 8, 3, np.float32, 512, "fast")
    for arm, switches in calibration.ARMS.items():
        monkeypatch.setattr(calibration, "calibrate", lambda *args, arm=arm: planted(arm))
        assert tuple(choose("single-pass", 64, 25, np.float32, 512)[:2]) == switches


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
@pytest.mark.parametrize("decoder", ["sigmoid", "linear"])
@pytest.mark.parametrize(
    ("n", "s", "compute_rows"),
    [(13, 7, 1), (13, 7, 37), (64, 25, 100), (66, 27, 513), (17, 9, 7), (33, 30, 33)],
)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_choice_equals_the_dense_twin(
    rng, monkeypatch, scheme, n, s, compute_rows, decoder, activation
):
    X, hyper, theta = objective_problem(rng, n, s, 1100, decoder, activation)
    J, grad, _ = dense_objective(
        theta, X, hidden=s, rho=0.05, beta=2.0, lam=1e-3, decoder=decoder, activation=activation
    )
    # "auto" with calibrations that chose each of the four arms at this very shape (tiles or
    # BLAS for the block and for the input sums).
    for arm, (block_tiled, sums_tiled) in calibration.ARMS.items():
        monkeypatch.setattr(calibration, "calibrate", lambda *args, arm=arm: planted(arm))
        objective = make_objective(
            ArrayPatches(X, block_rows=301),
            hyper,
            n_visible=n,
            dtype=np.float64,
            scheme=scheme,
            compute_rows=compute_rows,
            threads=2,
        )
        assert objective.tiled is block_tiled and objective.tiled_sums is sums_tiled
        first = objective(theta)
        second = objective(theta)
        objective.close()
        assert first.cost == pytest.approx(J, rel=1e-12)
        assert relative(first.gradient, grad) < 1e-12
        assert first.cost == second.cost and np.array_equal(first.gradient, second.gradient)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_tiled_gradient_matches_central_differences(rng, scheme, activation):
    n, s = 9, 5
    X, hyper, theta = objective_problem(rng, n, s, 43, "sigmoid", activation)
    objective = make_objective(
        ArrayPatches(X, block_rows=13), hyper, n_visible=n, dtype=np.float64, scheme=scheme, products="tiled"
    )
    assert objective.tiled and objective.tiled_sums
    analytic = objective(theta).gradient
    numeric = np.empty_like(theta)
    epsilon = 1e-5
    for index in range(theta.size):
        step = np.zeros_like(theta)
        step[index] = epsilon
        numeric[index] = (objective(theta + step).cost - objective(theta - step).cost) / (2 * epsilon)
    objective.close()
    assert np.linalg.norm(numeric - analytic) / np.linalg.norm(numeric + analytic) < 1e-9


def test_tiled_and_blas_agree_in_float32(rng):
    X, hyper, theta = objective_problem(rng, 64, 25, 5000, "sigmoid")
    X = X.astype(np.float32)
    results = {}
    for products in ("tiled", "blas"):
        objective = make_objective(
            ArrayPatches(X), hyper, n_visible=64, dtype=np.float32, scheme="single-pass", products=products
        )
        results[products] = objective(theta)
        objective.close()
    assert results["tiled"].cost == pytest.approx(results["blas"].cost, rel=1e-6)
    assert relative(results["tiled"].gradient, results["blas"].gradient) < 1e-5


def test_the_tiled_kernels_refuse_rows_that_are_not_contiguous(rng):
    # The register tiles load whole vectors along a row; a strided view would feed them
    # the wrong values, so the kernels refuse it rather than compute.
    AT = rng.normal(size=(8, 64))
    with pytest.raises(ValueError, match="contiguous"):
        small.rows_product(rng.normal(size=(4, 8)), AT[:, ::2], np.empty(0), np.empty((4, 32)))
    with pytest.raises(ValueError, match="contiguous"):
        small.row_dots(AT[:, ::2], AT[:, ::2], np.empty((8, 8)))
    with pytest.raises(ValueError, match="contiguous"):
        small.transpose_into(AT.T, np.empty((8, 64)).T)
