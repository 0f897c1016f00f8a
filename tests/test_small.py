"""The register-tiled products (compute/small.py) and the BLAS/tiled choice, on both sides.

Every path is compared with the dense NumPy twin (tests/naive.py) in float64, checked by
central differences, and run twice to be bitwise repeatable.
"""

from __future__ import annotations

import numpy as np
import pytest
from naive import dense_objective

from streamae.compute import small
from streamae.compute.parameters import Hyperparameters, initialize
from streamae.compute.schemes import make_objective
from streamae.io.patchfile import ArrayPatches

SCHEMES = ("two-pass", "single-pass", "in-core")


def relative(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


@pytest.mark.parametrize("rows", [1, 3, 4, 5, 17, 515])
@pytest.mark.parametrize("k", [1, 7, 64, 65])
@pytest.mark.parametrize("s", [1, 3, 4, 25, 26])
def test_tiled_abt_is_b_times_a_transposed(rng, rows, k, s):
    A = rng.normal(size=(rows, k))
    B = rng.normal(size=(s, k))
    out = np.full((s, rows), np.nan)
    small.tiled_abt(A, B, out)
    expected = B @ A.T
    assert np.max(np.abs(out - expected)) <= 1e-12 * max(1.0, np.max(np.abs(expected))) * k
    again = np.empty_like(out)
    small.tiled_abt(A, B, again)
    assert np.array_equal(out, again)  # bitwise repeatable


def test_tiled_abt_in_float32_is_within_float32_rounding(rng):
    A = rng.uniform(size=(300, 64)).astype(np.float32)
    B = rng.normal(size=(25, 64)).astype(np.float32)
    out = np.empty((25, 300), dtype=np.float32)
    small.tiled_abt(A, B, out)
    expected = B.astype(np.float64) @ A.astype(np.float64).T
    assert relative(out, expected) < 1e-6


def test_the_choice_follows_the_measured_crossover(monkeypatch):
    assert small.TILED_MAX_NS == small.crossover(small.MEASURED)
    assert small.crossover({(4, 4): (2.0, 1.0), (8, 8): (2.0, 1.0), (16, 16): (1.0, 2.0)}) == 64
    # A shape where BLAS wins stops the walk: a later noisy "win" does not count.
    assert small.crossover({(4, 4): (1.0, 2.0), (99, 99): (9.0, 1.0)}) == 0
    monkeypatch.setattr(small, "TILED_MAX_NS", 64 * 25)
    assert small.use_tiled(64, 25)  # at the crossover: tiled
    assert not small.use_tiled(64, 26)  # above it: BLAS
    assert small.use_tiled(784, 196, "tiled")
    assert not small.use_tiled(8, 3, "blas")
    with pytest.raises(ValueError, match="products"):
        small.use_tiled(8, 3, "fast")


def problem(rng, n, s, rows, decoder):
    X = rng.uniform(0.05, 0.95, size=(rows, n))
    hyper = Hyperparameters(hidden=s, rho=0.05, beta=2.0, lam=1e-3, decoder=decoder)
    theta = initialize(n, s, seed=3)
    theta[2 * n * s :] = rng.normal(0.0, 0.3, size=s + n)
    return X, hyper, theta


@pytest.mark.parametrize("decoder", ["sigmoid", "linear"])
@pytest.mark.parametrize(("n", "s", "compute_rows"), [(13, 7, 37), (64, 25, 100), (66, 27, 513)])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_both_sides_of_the_crossover_equal_the_dense_twin(
    rng, monkeypatch, scheme, n, s, compute_rows, decoder
):
    X, hyper, theta = problem(rng, n, s, 1100, decoder)
    J, grad, _ = dense_objective(theta, X, hidden=s, rho=0.05, beta=2.0, lam=1e-3, decoder=decoder)
    # "auto" on either side of a crossover placed at this layer's n·s.
    for threshold, expect_tiled in ((n * s, True), (n * s - 1, False)):
        monkeypatch.setattr(small, "TILED_MAX_NS", threshold)
        objective = make_objective(
            ArrayPatches(X, block_rows=301),
            hyper,
            n_visible=n,
            dtype=np.float64,
            scheme=scheme,
            compute_rows=compute_rows,
            threads=2,
        )
        assert objective.tiled is expect_tiled
        first = objective(theta)
        second = objective(theta)
        objective.close()
        assert first.cost == pytest.approx(J, rel=1e-12)
        assert relative(first.gradient, grad) < 1e-12
        assert first.cost == second.cost and np.array_equal(first.gradient, second.gradient)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_tiled_gradient_matches_central_differences(rng, scheme):
    n, s = 9, 5
    X, hyper, theta = problem(rng, n, s, 43, "sigmoid")
    objective = make_objective(
        ArrayPatches(X, block_rows=13), hyper, n_visible=n, dtype=np.float64, scheme=scheme, products="tiled"
    )
    assert objective.tiled
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
    X, hyper, theta = problem(rng, 64, 25, 5000, "sigmoid")
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
