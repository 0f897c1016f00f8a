"""Every scheme computes the same exact J and ∇J: against two-pass and the dense NumPy twin."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import objective_problem, relative_difference
from naive import dense_objective, hidden_layer

from streamae.compute.parameters import Hyperparameters, initialize
from streamae.compute.schemes import (
    SCHEMES,
    choose_scheme,
    in_core_bytes,
    make_objective,
    parse_memory_budget,
)
from streamae.errors import UsageError
from streamae.io.patchfile import ArrayPatches, PatchFile
from streamae.runtime.mpi import SingleProcess

EXACT = ("two-pass", "single-pass", "in-core")
N, S = 36, 11


def problem(rng, decoder="sigmoid", rows=1000, activation="sigmoid"):
    """Data in [0.05, 0.95] (rows, N), hyperparameters and a point with non-zero biases."""
    return objective_problem(rng, N, S, rows, decoder, activation)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
@pytest.mark.parametrize("decoder", ["sigmoid", "linear"])
@pytest.mark.parametrize("block_rows", [1, 7, 333, 5000])
@pytest.mark.parametrize("scheme", EXACT)
def test_each_scheme_equals_dense_and_two_pass_in_float64(rng, scheme, decoder, block_rows, activation):
    X, hyper, theta = problem(rng, decoder, activation=activation)
    J, grad, terms = dense_objective(
        theta, X, hidden=S, rho=0.05, beta=2.0, lam=1e-3, decoder=decoder, activation=activation
    )
    two_pass = make_objective(
        ArrayPatches(X, block_rows=block_rows), hyper, n_visible=N, dtype=np.float64, scheme="two-pass"
    )(theta)
    objective = make_objective(
        ArrayPatches(X, block_rows=block_rows),
        hyper,
        n_visible=N,
        dtype=np.float64,
        scheme=scheme,
        compute_rows=128,
    )
    evaluation = objective(theta)
    assert objective.scheme == scheme
    assert evaluation.cost == pytest.approx(J, rel=1e-12)
    assert evaluation.cost == pytest.approx(two_pass.cost, rel=1e-12)
    assert relative_difference(evaluation.gradient, grad) < 1e-12
    assert relative_difference(evaluation.gradient, two_pass.gradient) < 1e-12
    for name, value in terms.items():
        assert getattr(evaluation, name) == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(evaluation.rho_hat, two_pass.rho_hat, rtol=1e-12)


@pytest.mark.parametrize("scheme", EXACT)
def test_threads_and_compute_rows_change_only_rounding(rng, scheme):
    X, hyper, theta = problem(rng, rows=3000)
    results = []
    for threads in (1, 2, 3):
        for compute_rows in (64, 256, 5000):
            objective = make_objective(
                ArrayPatches(X, block_rows=1000),
                hyper,
                n_visible=N,
                dtype=np.float64,
                scheme=scheme,
                threads=threads,
                compute_rows=compute_rows,
            )
            first, again = objective(theta), objective(theta)
            # Same configuration: bitwise the same answer.
            assert first.cost == again.cost
            np.testing.assert_array_equal(first.gradient, again.gradient)
            results.append(first)
    for other in results[1:]:
        assert other.cost == pytest.approx(results[0].cost, rel=1e-13)
        assert relative_difference(other.gradient, results[0].gradient) < 1e-13


@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize("scheme", EXACT)
def test_streamed_from_hdf5_equals_in_memory(rng, patch_file, scheme, prefetch):
    X, hyper, theta = problem(rng, rows=1001)
    path = patch_file(X, chunk_rows=100)
    reference = make_objective(ArrayPatches(X), hyper, n_visible=N, dtype=np.float64, scheme="two-pass")(
        theta
    )
    for block_rows in (None, 7, 450):
        with PatchFile(path, dtype=np.float64, block_rows=block_rows, prefetch=prefetch) as source:
            objective = make_objective(source, hyper, n_visible=N, dtype=np.float64, scheme=scheme)
            evaluation = objective(theta)
            again = objective(theta)  # the second evaluation reads (or reuses) the data again
        assert evaluation.cost == pytest.approx(reference.cost, rel=1e-12)
        assert relative_difference(evaluation.gradient, reference.gradient) < 1e-12
        assert again.cost == evaluation.cost
        reads = {"two-pass": 2, "single-pass": 1, "in-core": 0}[scheme]
        assert objective.timing.read_bytes == reads * X.size * 8
        assert objective.timing.passes == (1 if scheme == "single-pass" else 2)
        summary = objective.timing.summary()
        assert "computing" in summary and ("GB/s alone" in summary) == (reads > 0)


@pytest.mark.parametrize("decoder", ["sigmoid", "linear"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
@pytest.mark.parametrize("scheme", EXACT)
def test_float32_within_1e_5_of_float64(rng, scheme, decoder, activation):
    X = rng.uniform(0.1, 0.9, size=(20_000, 64))
    hyper = Hyperparameters(decoder=decoder, activation=activation)
    theta = initialize(64, 25)
    exact = make_objective(ArrayPatches(X), hyper, n_visible=64, dtype=np.float64, scheme="two-pass")(theta)
    single = make_objective(
        ArrayPatches(X.astype(np.float32), block_rows=3000),
        hyper,
        n_visible=64,
        dtype=np.float32,
        scheme=scheme,
    )(theta)
    assert single.cost == pytest.approx(exact.cost, rel=1e-5)
    assert relative_difference(single.gradient, exact.gradient) < 1e-5
    np.testing.assert_allclose(single.rho_hat, exact.rho_hat, rtol=1e-5)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
@pytest.mark.parametrize("decoder", ["sigmoid", "linear"])
@pytest.mark.parametrize("scheme", ["single-pass", "in-core"])
def test_gradient_matches_central_differences(rng, scheme, decoder, activation):
    n, s = 8, 3
    X = rng.uniform(0.05, 0.95, size=(40, n))
    hyper = Hyperparameters(hidden=s, rho=0.1, beta=3.0, lam=1e-3, decoder=decoder, activation=activation)
    theta = initialize(n, s, seed=1)
    theta[2 * n * s :] = rng.normal(0.0, 0.1, size=s + n)
    objective = make_objective(
        ArrayPatches(X, block_rows=13), hyper, n_visible=n, dtype=np.float64, scheme=scheme
    )
    analytic = objective(theta).gradient
    numeric = np.empty_like(theta)
    epsilon = 1e-5
    for index in range(theta.size):
        step = np.zeros_like(theta)
        step[index] = epsilon
        numeric[index] = (objective(theta + step).cost - objective(theta - step).cost) / (2 * epsilon)
    assert np.linalg.norm(numeric - analytic) / np.linalg.norm(numeric + analytic) < 1e-9


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_mean_activation_is_dense_rho_hat(rng, activation):
    X, hyper, theta = problem(rng, activation=activation)
    W1, b1 = theta[: S * N].reshape(S, N), theta[2 * S * N : 2 * S * N + S]
    expected = hidden_layer(X, W1, b1, activation).mean(axis=0)
    for scheme in EXACT:
        objective = make_objective(
            ArrayPatches(X, block_rows=100), hyper, n_visible=N, dtype=np.float64, scheme=scheme
        )
        np.testing.assert_allclose(objective.mean_activation(theta), expected, rtol=1e-12)


def test_auto_picks_in_core_when_it_fits_and_says_why(rng, patch_file):
    X, hyper, _ = problem(rng, rows=500)
    path = patch_file(X.astype(np.float32), chunk_rows=100)
    with PatchFile(path) as source:
        need = in_core_bytes(source, N, S, np.dtype(np.float32))
        assert need == 500 * (N + S) * 4
        fits = make_objective(source, hyper, n_visible=N, memory_budget=need)
        assert fits.scheme == "in-core" and "fit the memory budget" in fits.reason
        tight = make_objective(source, hyper, n_visible=N, memory_budget=need - 1)
        assert tight.scheme == "single-pass" and "exceed the memory budget" in tight.reason
        assert fits(initialize(N, S)).cost == pytest.approx(tight(initialize(N, S)).cost, rel=1e-5)
    # Data already in memory costs only the activations.
    assert in_core_bytes(ArrayPatches(X.astype(np.float32)), N, S, np.dtype(np.float32)) == 500 * S * 4
    assert (
        choose_scheme(ArrayPatches(X), N, S, np.dtype(np.float64), 0, SingleProcess()).name == "single-pass"
    )


def test_asked_for_scheme_is_reported():
    X = np.full((10, 4), 0.5, dtype=np.float32)
    for scheme in EXACT:
        objective = make_objective(ArrayPatches(X), Hyperparameters(hidden=2), n_visible=4, scheme=scheme)
        assert (objective.scheme, objective.reason) == (scheme, "asked for")
        assert objective.n_rows == 10 and objective.n_hidden == 2 and objective.evaluations == 0
    assert "auto" in SCHEMES


def test_bad_scheme_and_budget_are_refused():
    X = np.full((10, 4), 0.5, dtype=np.float32)
    with pytest.raises(
        UsageError, match=r"scheme must be one of auto, two-pass, single-pass, in-core, got 'fast'"
    ):
        make_objective(ArrayPatches(X), Hyperparameters(hidden=2), n_visible=4, scheme="fast")
    with pytest.raises(UsageError, match=r"^memory_budget must be at least 0"):
        make_objective(ArrayPatches(X), Hyperparameters(hidden=2), n_visible=4, memory_budget=-1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1000", 1000),
        ("8G", 8 << 30),
        ("512M", 512 << 20),
        ("1.5GiB", int(1.5 * (1 << 30))),
        ("64kb", 64 << 10),
    ],
)
def test_parse_memory_budget(text, expected):
    assert parse_memory_budget(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1G", "nanG"])
def test_parse_memory_budget_refuses_nonsense(text):
    with pytest.raises(UsageError, match="^memory_budget must be") as caught:
        parse_memory_budget(text)
    assert caught.value.parameter == "memory_budget"
