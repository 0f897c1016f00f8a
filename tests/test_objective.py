"""The streamed objective against the dense NumPy twin, for many block sizes."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import relative_difference
from naive import dense_objective

from streamae.compute.objective import check_values, kl_divergence, sparsity_cost, sparsity_delta
from streamae.compute.parameters import Hyperparameters, initialize
from streamae.compute.schemes import TwoPassObjective as Objective
from streamae.errors import DataError
from streamae.io.patchfile import ArrayPatches, PatchFile


@pytest.mark.parametrize("decoder", ["sigmoid", "linear"])
@pytest.mark.parametrize("block_rows", [1, 7, 333, 1000, 5000])
def test_streamed_float64_equals_dense(rng, decoder, block_rows):
    X = rng.uniform(0.05, 0.95, size=(1000, 36))
    hyper = Hyperparameters(hidden=11, rho=0.05, beta=2.0, lam=1e-3, decoder=decoder)
    theta = initialize(36, 11, seed=3)
    theta[2 * 36 * 11 :] = rng.normal(0, 0.3, size=11 + 36)  # non-zero biases
    J, grad, terms = dense_objective(theta, X, hidden=11, rho=0.05, beta=2.0, lam=1e-3, decoder=decoder)

    objective = Objective(ArrayPatches(X, block_rows=block_rows), hyper, n_visible=36, dtype=np.float64)
    evaluation = objective(theta)

    assert evaluation.cost == pytest.approx(J, rel=1e-12)
    assert relative_difference(evaluation.gradient, grad) < 1e-12
    for name, value in terms.items():
        assert getattr(evaluation, name) == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(
        evaluation.rho_hat,
        (1 / (1 + np.exp(-(X @ theta[:396].reshape(11, 36).T + theta[792:803])))).mean(0),
        rtol=1e-12,
    )


@pytest.mark.parametrize("decoder", ["sigmoid", "linear"])
@pytest.mark.parametrize("block_rows", [1, 7, 333, 5000])
def test_streamed_tanh_float64_equals_dense(rng, decoder, block_rows):
    X = rng.uniform(0.05, 0.95, size=(1000, 36))
    hyper = Hyperparameters(hidden=11, rho=0.05, beta=2.0, lam=1e-3, decoder=decoder, activation="tanh")
    theta = initialize(36, 11, seed=3)
    theta[2 * 36 * 11 :] = rng.normal(0, 0.3, size=11 + 36)
    J, grad, terms = dense_objective(
        theta, X, hidden=11, rho=0.05, beta=2.0, lam=1e-3, decoder=decoder, activation="tanh"
    )
    evaluation = Objective(ArrayPatches(X, block_rows=block_rows), hyper, n_visible=36, dtype=np.float64)(
        theta
    )
    assert evaluation.cost == pytest.approx(J, rel=1e-12)
    assert relative_difference(evaluation.gradient, grad) < 1e-12
    for name, value in terms.items():
        assert getattr(evaluation, name) == pytest.approx(value, rel=1e-12)
    # ρ̂ stays the plain mean of a2, here in (−1, 1).
    expected = np.tanh(X @ theta[:396].reshape(11, 36).T + theta[792:803]).mean(0)
    np.testing.assert_allclose(evaluation.rho_hat, expected, rtol=1e-12)


@pytest.mark.parametrize("decoder", ["sigmoid", "linear"])
def test_tanh_objective_is_the_sigmoid_objective_of_rescaled_parameters(rng, decoder):
    # tanh(z) = 2σ(2z) − 1, so a tanh net (W1, b1, W2, b2) computes what a sigmoid net
    # (2W1, 2b1, 2W2, b2 − W2·1) computes, and q = (a2 + 1)/2 is that net's σ(2z): J's
    # reconstruction and sparsity terms are equal, and (λ = 0) the gradients follow by the
    # chain rule.  An independent closed form for the tanh objective and its gradient.
    n, s = 20, 6
    X = rng.uniform(0.05, 0.95, size=(300, n))
    theta = initialize(n, s, seed=5)
    theta[2 * n * s :] = rng.normal(0, 0.3, size=s + n)
    W1, W2 = theta[: s * n].reshape(s, n), theta[s * n : 2 * s * n].reshape(n, s)
    b1, b2 = theta[2 * n * s : 2 * n * s + s], theta[2 * n * s + s :]
    mapped = np.concatenate([2 * W1.ravel(), 2 * W2.ravel(), 2 * b1, b2 - W2.sum(axis=1)])
    settings = {"hidden": s, "rho": 0.1, "beta": 3.0, "lam": 0.0, "decoder": decoder}
    tanh = Objective(
        ArrayPatches(X, block_rows=77),
        Hyperparameters(**settings, activation="tanh"),
        n_visible=n,
        dtype=np.float64,
    )(theta)
    sigmoid = Objective(
        ArrayPatches(X, block_rows=77), Hyperparameters(**settings), n_visible=n, dtype=np.float64
    )(mapped)
    assert tanh.cost == pytest.approx(sigmoid.cost, rel=1e-12)
    assert tanh.sparsity == pytest.approx(sigmoid.sparsity, rel=1e-12)
    np.testing.assert_allclose((tanh.rho_hat + 1) / 2, sigmoid.rho_hat, rtol=1e-12)
    g = sigmoid.gradient
    gW1, gW2 = g[: s * n].reshape(s, n), g[s * n : 2 * s * n].reshape(n, s)
    gb1, gb2 = g[2 * n * s : 2 * n * s + s], g[2 * n * s + s :]
    expected = np.concatenate([2 * gW1.ravel(), (2 * gW2 - gb2[:, None]).ravel(), 2 * gb1, gb2])
    assert relative_difference(tanh.gradient, expected) < 1e-12


def test_tanh_sparsity_applies_to_the_mean_of_a2_plus_1_over_2():
    rho_hat = np.array([-0.98, -0.5, 0.0, 0.6])  # means of tanh units
    tanh = Hyperparameters(hidden=4, rho=0.01, beta=3.0, activation="tanh")
    q = (rho_hat + 1) / 2  # [0.01, 0.25, 0.5, 0.8]
    expected_kl = 0.01 * np.log(0.01 / q) + 0.99 * np.log(0.99 / (1 - q))
    assert sparsity_cost(tanh, rho_hat) == pytest.approx(3.0 * expected_kl.sum(), rel=1e-14)
    # d/dρ̂ of β KL(ρ‖(ρ̂+1)/2) is (β/2)(−ρ/q + (1−ρ)/(1−q)), zero where q = ρ.
    expected_delta = 1.5 * (-0.01 / q + 0.99 / (1 - q))
    np.testing.assert_allclose(sparsity_delta(tanh, rho_hat), expected_delta, rtol=1e-14)
    assert sparsity_delta(tanh, rho_hat)[0] == pytest.approx(0.0, abs=1e-12)
    sigmoid = Hyperparameters(hidden=4, rho=0.01, beta=3.0)
    assert sparsity_cost(sigmoid, q) == pytest.approx(sparsity_cost(tanh, rho_hat), rel=1e-14)


@pytest.mark.parametrize("compute_rows", [128, 256, 1024])
def test_compute_block_size_does_not_change_the_result(rng, compute_rows):
    X = rng.uniform(0.0, 1.0, size=(2000, 64))
    hyper = Hyperparameters()
    theta = initialize(64, 25)
    reference = dense_objective(theta, X, hidden=25)
    evaluation = Objective(
        ArrayPatches(X, block_rows=777), hyper, n_visible=64, dtype=np.float64, compute_rows=compute_rows
    )(theta)
    assert evaluation.cost == pytest.approx(reference[0], rel=1e-12)
    assert relative_difference(evaluation.gradient, reference[1]) < 1e-12


def test_streamed_from_hdf5_equals_dense(rng, patch_file):
    X = rng.uniform(0.05, 0.95, size=(1001, 64))
    path = patch_file(X, chunk_rows=100)
    theta = initialize(64, 25)
    J, grad, _ = dense_objective(theta, X, hidden=25)
    for block_rows in (None, 1, 7, 333, 4000):
        with PatchFile(path, dtype=np.float64, block_rows=block_rows) as source:
            evaluation = Objective(source, Hyperparameters(), n_visible=64, dtype=np.float64)(theta)
        assert evaluation.cost == pytest.approx(J, rel=1e-12)
        assert relative_difference(evaluation.gradient, grad) < 1e-12


@pytest.mark.parametrize(
    ("decoder", "activation"), [("sigmoid", "sigmoid"), ("linear", "sigmoid"), ("sigmoid", "tanh")]
)
def test_float32_is_within_1e_5_of_float64(rng, decoder, activation):
    X = rng.uniform(0.1, 0.9, size=(20_000, 64))
    hyper = Hyperparameters(decoder=decoder, activation=activation)
    theta = initialize(64, 25)
    exact = Objective(ArrayPatches(X), hyper, n_visible=64, dtype=np.float64)(theta)
    single = Objective(
        ArrayPatches(X.astype(np.float32), block_rows=3000), hyper, n_visible=64, dtype=np.float32
    )(theta)
    assert single.cost == pytest.approx(exact.cost, rel=1e-5)
    assert relative_difference(single.gradient, exact.gradient) < 1e-5


def test_kl_divergence_closed_form():
    rho_hat = np.array([0.01, 0.2, 0.5])
    expected = [
        0.0,
        0.01 * np.log(0.01 / 0.2) + 0.99 * np.log(0.99 / 0.8),
        0.01 * np.log(0.02) + 0.99 * np.log(1.98),
    ]
    np.testing.assert_allclose(kl_divergence(0.01, rho_hat), expected, atol=1e-15)


def test_check_values_names_the_first_bad_row(rng):
    X = rng.uniform(0, 1, size=(500, 8))
    X[321, 3] = np.nan
    X[400, 0] = np.inf
    with pytest.raises(DataError, match=r"row 321 holds NaN or Inf"):
        check_values(ArrayPatches(X, block_rows=64), Hyperparameters(), "data.h5")


def test_check_values_range_for_sigmoid_decoder(rng):
    X = rng.uniform(-2, 3, size=(100, 8))
    with pytest.raises(DataError, match=r"outside the sigmoid decoder's range.*decoder='linear'"):
        check_values(ArrayPatches(X), Hyperparameters(), "data.h5")
    summary = check_values(ArrayPatches(X), Hyperparameters(decoder="linear"), "data.h5")
    assert summary.minimum == X.min() and summary.maximum == X.max()
