"""L-BFGS and its line search on functions with known minima."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import rosen, rosen_der

from streamae.compute.lbfgs import (
    LbfgsState,
    StopRules,
    cubic_minimizer,
    lbfgs_iteration,
    minimize,
    search_direction,
    wolfe_line_search,
)


def rosenbrock(x):
    return float(rosen(x)), rosen_der(x)


def test_cubic_minimizer_recovers_a_cubic_minimum():
    # f(t) = (t - 2)^3 - 3(t - 2): minimum at t = 3 (f' = 3(t-2)^2 - 3 = 0, f'' > 0).
    def f(t):
        return (t - 2) ** 3 - 3 * (t - 2)

    def df(t):
        return 3 * (t - 2) ** 2 - 3

    assert cubic_minimizer(0.0, f(0.0), df(0.0), 4.0, f(4.0), df(4.0)) == pytest.approx(3.0)
    assert cubic_minimizer(2.5, f(2.5), df(2.5), 3.5, f(3.5), df(3.5)) == pytest.approx(3.0)


def test_lbfgs_minimises_rosenbrock():
    state = minimize(
        rosenbrock, np.array([-1.2, 1.0, -0.5, 0.8]), StopRules(max_iter=500, grad_tol=1e-8, progress_tol=0.0)
    )
    np.testing.assert_allclose(state.x, np.ones(4), atol=1e-5)
    assert "gradient" in state.finished


def test_lbfgs_solves_a_quadratic_exactly(rng):
    A = rng.normal(size=(20, 20))
    H = A @ A.T + 20 * np.eye(20)
    b = rng.normal(size=20)

    def quadratic(x):
        return float(0.5 * x @ H @ x - b @ x), H @ x - b

    # Near the minimum J changes by (∇J)²/λ, so with |J| ~ 0.3 a gradient tolerance much
    # below 1e-7 asks for changes in J below its rounding.  H's eigenvalues are >= 20,
    # so |x - x*| <= |∇J| / 20 when the run stops on its gradient.
    state = minimize(quadratic, np.zeros(20), StopRules(max_iter=200, grad_tol=1e-6, progress_tol=0))
    np.testing.assert_allclose(state.x, np.linalg.solve(H, b), rtol=0, atol=1e-6 / 20)
    assert "gradient" in state.finished


@pytest.mark.parametrize("start", [[-1.2, 1.0], [2.0, -1.0], [0.0, 3.0]])
def test_line_search_meets_strong_wolfe(start):
    rules = StopRules()
    x = np.array(start)
    f0, g0 = rosenbrock(x)
    direction = -g0 / np.linalg.norm(g0)
    result = wolfe_line_search(rosenbrock, x, f0, g0, direction, 1.0, rules)
    assert result.satisfied
    f, g = rosenbrock(x + result.step * direction)
    assert f <= f0 + rules.c1 * result.step * (g0 @ direction)
    assert abs(g @ direction) <= -rules.c2 * (g0 @ direction)
    assert f == result.f


def test_line_search_backs_off_from_non_finite_values():
    # J is infinite past t = 1: the search must come back below it.
    def barrier(x):
        if x[0] >= 1.0:
            return np.inf, np.array([np.nan])
        return float(-np.log(1.0 - x[0]) + x[0] ** 2), np.array([1.0 / (1.0 - x[0]) + 2 * x[0]])

    x = np.array([-3.0])
    f0, g0 = barrier(x)
    result = wolfe_line_search(barrier, x, f0, g0, np.array([1.0]), 10.0, StopRules())
    assert np.isfinite(result.f) and result.f < f0


def test_two_loop_recursion_equals_the_dense_bfgs_inverse(rng):
    # With pairs from a quadratic, the two-loop product equals H_k g built densely
    # by the BFGS inverse update from H_0 = (s'y / y'y) I.
    p = 6
    state = LbfgsState.start(np.zeros(p), 0.0, rng.normal(size=p), memory=10)
    pairs = [(rng.normal(size=p), None) for _ in range(4)]
    A = rng.normal(size=(p, p))
    H = A @ A.T + p * np.eye(p)
    for k, (s, _) in enumerate(pairs):
        pairs[k] = (s, H @ s)
        state.add_pair(*pairs[k])
    s_last, y_last = pairs[-1]
    inverse = (s_last @ y_last) / (y_last @ y_last) * np.eye(p)
    for s, y in pairs:
        r = 1.0 / (y @ s)
        left = np.eye(p) - r * np.outer(s, y)
        inverse = left @ inverse @ left.T + r * np.outer(s, s)
    np.testing.assert_allclose(search_direction(state), -inverse @ state.g, rtol=1e-10)


def test_state_round_trip_gives_the_identical_next_iterations():
    rules = StopRules(max_iter=1000, grad_tol=0, progress_tol=0)
    state = minimize(
        rosenbrock, np.array([-1.2, 1.0, 0.3]), StopRules(max_iter=7, grad_tol=0, progress_tol=0), memory=3
    )
    state.finished = ""
    restored = LbfgsState.from_arrays(state.to_arrays())
    for _ in range(5):
        lbfgs_iteration(rosenbrock, state, rules)
        lbfgs_iteration(rosenbrock, restored, rules)
    assert np.array_equal(state.x, restored.x)
    assert state.evaluations == restored.evaluations and state.iteration == restored.iteration


def test_ring_buffer_keeps_the_newest_pairs():
    state = LbfgsState.start(np.zeros(2), 0.0, np.ones(2), memory=3)
    for k in range(1, 6):
        state.add_pair(np.array([k, 0.0]), np.array([1.0, 0.0]))
    s_pairs, _ = state.ordered_pairs()
    np.testing.assert_array_equal(s_pairs[:, 0], [3.0, 4.0, 5.0])
    assert not state.add_pair(np.array([1.0, 0.0]), np.array([-1.0, 0.0]))  # negative curvature


def test_checkpoint_arrays_are_the_ring_as_it_lies(rng):
    # A full, wrapped ring: written without a copy, restored to the same pairs in order.
    state = LbfgsState.start(np.zeros(4), 0.0, rng.normal(size=4), memory=3)
    for k in range(1, 6):
        state.add_pair(np.array([k, 1.0, 0.0, 0.0]), np.array([1.0, 1.0, 0.0, 0.0]))
    arrays = state.to_arrays()
    assert np.shares_memory(arrays["s_pairs"], state.s_pairs) and arrays["oldest"] == state.head
    restored = LbfgsState.from_arrays(arrays)
    np.testing.assert_array_equal(restored.ordered_pairs()[0][:, 0], [3.0, 4.0, 5.0])
    # Older checkpoints stored the pairs oldest first and no "oldest".
    older = {**arrays, "s_pairs": state.ordered_pairs()[0], "y_pairs": state.ordered_pairs()[1]}
    del older["oldest"]
    np.testing.assert_array_equal(LbfgsState.from_arrays(older).ordered_pairs()[0], state.ordered_pairs()[0])
    assert np.array_equal(search_direction(LbfgsState.from_arrays(older)), search_direction(restored))
