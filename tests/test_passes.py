"""The compiled passes (compute/passes.py): the choices they make by shape, against the dense twin.

The schemes' tests (tests/test_schemes.py, tests/test_small.py) cover the passes on small
layers; here are the shapes where a pass changes how it calls BLAS.
"""

from __future__ import annotations

import numpy as np
import pytest
from naive import dense_objective

from streamae.compute import passes
from streamae.compute.kernels import SIGMOID
from streamae.compute.objective import LaneBuffers, sparsity_delta
from streamae.compute.parameters import Hyperparameters, initialize, unpack
from streamae.compute.schemes import make_objective
from streamae.io.patchfile import ArrayPatches


@pytest.mark.parametrize(("n", "s"), [(64, 25), (16, 25)])
@pytest.mark.parametrize("scheme", ["single-pass", "two-pass"])
def test_input_layer_sums_split_or_stacked_equal_the_dense_twin(rng, scheme, n, s):
    """Single-pass's Σ e xᵀ and Σ g xᵀ as two products (64 x 25, 512-row blocks) or one."""
    rows, compute_rows = 1100, 512  # two full blocks and a 76-row one
    # The full blocks take the branch this case is for.
    assert passes.splits_input_sums(s, n, compute_rows) is (n == 64)
    X = rng.uniform(0.05, 0.95, size=(rows, n))
    theta = initialize(n, s, seed=5)
    theta[2 * n * s :] = rng.normal(0.0, 0.3, size=s + n)
    J, grad, _ = dense_objective(theta, X, hidden=s, rho=0.05, beta=2.0, lam=1e-3)
    objective = make_objective(
        ArrayPatches(X, block_rows=700),
        Hyperparameters(hidden=s, rho=0.05, beta=2.0, lam=1e-3),
        n_visible=n,
        dtype=np.float64,
        scheme=scheme,
        compute_rows=compute_rows,
        threads=2,
        products="blas",
    )
    first, second = objective(theta), objective(theta)
    objective.close()
    assert first.cost == pytest.approx(J, rel=1e-12)
    assert np.linalg.norm(first.gradient - grad) / np.linalg.norm(grad) < 1e-12
    assert first.cost == second.cost and np.array_equal(first.gradient, second.gradient)


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("tiled", [False, True])
def test_gradient_pass_takes_its_arrays_bundled_and_equals_the_dense_twin(rng, tiled, cached):
    """gradient_pass(x, Weights, Plan, cache, Scratch, acc), BLAS or tiled block, with pass 1's
    activations cached or computed afresh: its sums over 3 blocks (the last one short) are
    the dense twin's, m times the gradient at λ = 0."""
    n, s, rows, block_rows = 16, 5, 300, 128
    X = rng.uniform(0.05, 0.95, size=(rows, n))
    theta = initialize(n, s, seed=2)
    theta[2 * n * s :] = rng.normal(0.0, 0.3, size=s + n)
    _, grad, terms = dense_objective(theta, X, hidden=s, rho=0.05, beta=2.0, lam=0.0)
    hyper = Hyperparameters(hidden=s, rho=0.05, beta=2.0, lam=0.0)
    params = unpack(theta, n, s)
    weights = passes.Weights(
        params.W1.copy(),
        params.W1.T.copy(),
        params.W2.copy(),
        params.W2.T.copy(),
        params.b1.copy(),
        params.b2.copy(),
    )
    buffers = LaneBuffers(block_rows, n, s, np.dtype(np.float64))
    cache = np.empty(s * rows if cached else 0)
    passes.forward_pass(
        X, weights.W1T, weights.b1, SIGMOID, block_rows, buffers.hidden, buffers.sum_a2, cache
    )
    rho_hat = buffers.sum_a2 / rows
    sparsity = sparsity_delta(hyper, rho_hat)
    plan = passes.Plan(SIGMOID, False, False, tiled, tiled, block_rows, sparsity)
    passes.gradient_pass(X, weights, plan, cache, buffers.scratch, buffers.acc)
    p = 2 * n * s + s + n
    assert buffers.acc[0] / rows == pytest.approx(terms["reconstruction"], rel=1e-12)
    assert np.linalg.norm(buffers.acc[1 : 1 + p] / rows - grad) / np.linalg.norm(grad) < 1e-12
    assert not buffers.acc[1 + p :].any()  # two-pass leaves the single-pass extras alone
