"""The compact-form L-BFGS direction against the two-loop recursion written in NumPy."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from streamae.compute.direction import COMBINE_SEGMENT, SEGMENT, combine, project
from streamae.compute.lbfgs import LbfgsState, search_direction


def two_loop_reference(gradient: np.ndarray, s_list: list, y_list: list) -> np.ndarray:
    """−H∇J by Nocedal & Wright's algorithm 7.4, pairs oldest first, in plain NumPy."""
    direction = -gradient.copy()
    alphas = []
    for s, y in zip(reversed(s_list), reversed(y_list), strict=True):
        alpha = (s @ direction) / (y @ s)
        alphas.append(alpha)
        direction -= alpha * y
    direction *= (s_list[-1] @ y_list[-1]) / (y_list[-1] @ y_list[-1])
    for (s, y), alpha in zip(zip(s_list, y_list, strict=True), reversed(alphas), strict=True):
        beta = (y @ direction) / (y @ s)
        direction += (alpha - beta) * s
    return direction


def random_pair(rng: np.random.Generator, p: int, curvature: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A pair (s, y = D s + noise) with positive curvature, as a smooth J gives."""
    s = rng.normal(size=p)
    return s, curvature * s + 0.05 * rng.normal(size=p)


def filled_state(rng, p: int, memory: int, added: int, *, directions_between: bool = True):
    """A state with ``added`` pairs stored (the ring wraps when added > memory)."""
    curvature = rng.uniform(0.5, 2.0, size=p)
    state = LbfgsState.start(np.zeros(p), 0.0, rng.normal(size=p), memory=memory)
    stored_s, stored_y = [], []
    for _ in range(added):
        s, y = random_pair(rng, p, curvature)
        assert state.add_pair(s, y)
        stored_s.append(s)
        stored_y.append(y)
        if directions_between:  # as a run does: the new pair is projected at the next direction
            search_direction(state)
        state.g = rng.normal(size=p)
    return state, stored_s[-memory:], stored_y[-memory:]


@pytest.mark.parametrize(
    ("p", "memory", "added"),
    [
        (5, 4, 1),
        (5, 4, 3),
        (SEGMENT - 1, 5, 5),
        (SEGMENT + 3, 5, 9),  # two segments, the ring wrapped
        (2 * COMBINE_SEGMENT + 7, 6, 7),  # three pieces of the direction, an odd number of pairs
        (3 * SEGMENT, 3, 2),
    ],
)
def test_direction_equals_the_two_loop_recursion(rng, p, memory, added):
    state, s_list, y_list = filled_state(rng, p, memory, added)
    expected = two_loop_reference(state.g, s_list, y_list)
    got = search_direction(state)
    assert np.linalg.norm(got - expected) <= 1e-10 * np.linalg.norm(expected)


def test_direction_without_pairs_is_steepest_descent(rng):
    state = LbfgsState.start(np.zeros(7), 0.0, rng.normal(size=7), memory=3)
    np.testing.assert_array_equal(search_direction(state), -state.g)


def test_direction_after_a_restart_uses_only_the_new_pairs(rng):
    # lbfgs_iteration drops the pairs (pairs = 0) when the direction loses descent.
    p = SEGMENT + 11
    state, _, _ = filled_state(rng, p, 4, 6)
    state.pairs = 0
    curvature = rng.uniform(0.5, 2.0, size=p)
    s_list, y_list = [], []
    for _ in range(2):
        s, y = random_pair(rng, p, curvature)
        state.add_pair(s, y)
        s_list.append(s)
        y_list.append(y)
    expected = two_loop_reference(state.g, s_list, y_list)
    assert np.linalg.norm(search_direction(state) - expected) <= 1e-10 * np.linalg.norm(expected)


def test_direction_does_not_depend_on_the_thread_count(rng):
    p = 5 * SEGMENT + 17
    state, _, _ = filled_state(rng, p, 6, 8)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = search_direction(state)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = search_direction(state)
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(one, many)


def test_restored_state_gives_the_identical_direction(rng):
    # The run projects one new pair per direction; the restored state projects all of its
    # pairs in batches.  Every Gram entry, hence the direction, must agree bit for bit.
    p = 2 * SEGMENT + 5
    state, _, _ = filled_state(rng, p, 20, 25)
    restored = LbfgsState.from_arrays(state.to_arrays())
    assert np.array_equal(search_direction(restored), search_direction(state))


def test_projection_entries_do_not_depend_on_their_neighbours(rng):
    p = 3 * SEGMENT + 1
    matrix = rng.normal(size=(4, p))
    first, second = rng.normal(size=p), rng.normal(size=p)
    rows = np.array([2, 0], dtype=np.int64)
    together = np.empty((2, 2))
    swapped = np.empty((2, 2))
    alone = np.empty((1, 2))
    project(matrix, rows, np.stack([first, second]), together)
    project(matrix, rows, np.stack([second, first]), swapped)
    project(matrix, rows[:1], np.stack([first, first]), alone)
    assert np.array_equal(together[:, 0], swapped[:, 1])
    assert together[0, 0] == alone[0, 0] == alone[0, 1]
    single = np.empty((2, 1))  # an odd count: the last vector goes through the same loop
    project(matrix, rows, first[None], single)
    assert np.array_equal(single[:, 0], together[:, 0])
    np.testing.assert_allclose(together, matrix[rows] @ np.stack([first, second]).T, rtol=1e-12)


def test_combine_adds_every_weighted_row(rng):
    p = COMBINE_SEGMENT + 9
    s_pairs, y_pairs = rng.normal(size=(5, p)), rng.normal(size=(5, p))
    gradient = rng.normal(size=p)
    rows = np.array([3, 1, 4], dtype=np.int64)
    s_weights, y_weights = rng.normal(size=3), rng.normal(size=3)
    expected = -0.7 * gradient + s_weights @ s_pairs[rows] + y_weights @ y_pairs[rows]
    np.testing.assert_allclose(
        combine(gradient, 0.7, s_pairs, s_weights, y_pairs, y_weights, rows), expected, rtol=1e-12, atol=1e-12
    )
