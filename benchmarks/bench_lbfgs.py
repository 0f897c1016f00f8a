"""What an L-BFGS iteration costs besides the evaluation, with all its pairs held.

Run:  python benchmarks/bench_lbfgs.py [--parameters 308308] [--pairs 100] [--rounds 9]

For p parameters (default: case (b), 784 -> 196) and a full ring of correction pairs, in
rotation: (1) the search direction as `train` computes it (``search_direction``, the compact
form over the Gram matrices, after the newest pair is projected as in a run) against the
same compact form with NumPy's BLAS products (fast, but its sums change with the thread
count), and two NumPy two-loop recursions: 0.1's (ρ = 1/y·s recomputed for every pair at
every call) and with the curvatures kept (each pair read twice); NumPy's BLAS at its
default threads.  (2) a checkpoint's optimizer state written to a model file through
``write_model`` (the atomic HDF5 write `train` does, fsync and rename included): the pairs
as the ring holds them (``to_arrays``, views) against 0.1's copy into oldest-first order.
Prints medians and the load average; about a minute.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine, print_host, save_json, table


def two_loop(state, curvatures: np.ndarray | None) -> np.ndarray:
    """−H∇J by NumPy's dot and axpy over the ring (curvatures None: recomputed, as 0.1 did)."""
    direction = -state.g.copy()
    slots = [(state.head - 1 - k) % state.memory for k in range(state.pairs)]
    alphas = np.empty(state.pairs)
    rhos = np.empty(state.pairs)
    for k, slot in enumerate(slots):
        s, y = state.s_pairs[slot], state.y_pairs[slot]
        rhos[k] = 1.0 / (float(y @ s) if curvatures is None else curvatures[slot])
        alphas[k] = rhos[k] * float(s @ direction)
        direction -= alphas[k] * y
    newest = slots[0]
    y_newest = state.y_pairs[newest]
    direction *= float(state.s_pairs[newest] @ y_newest) / float(y_newest @ y_newest)
    for k in range(state.pairs - 1, -1, -1):
        s, y = state.s_pairs[slots[k]], state.y_pairs[slots[k]]
        beta = rhos[k] * float(y @ direction)
        direction += (alphas[k] - beta) * s
    return direction


def numpy_compact(state) -> np.ndarray:
    """The compact form with NumPy's BLAS products (a full ring: every slot valid).

    As fast as BLAS's gemv, but its sums follow OpenBLAS's threads: not the same bits for
    another thread count, which exact resume needs."""
    from streamae.compute.direction import compact_weights

    order = state.oldest_first()
    newest = order[-1]
    vectors = np.stack([state.g, state.y_pairs[newest]]).T  # (p, 2)
    s_products, y_products = state.s_pairs @ vectors, state.y_pairs @ vectors
    sy, yy = state.sy.copy(), state.yy.copy()
    sy[:, newest], yy[:, newest], yy[newest, :] = s_products[:, 1], y_products[:, 1], y_products[:, 1]
    gamma = sy[newest, newest] / yy[newest, newest]
    grid = np.ix_(order, order)
    s_weights, y_weights = compact_weights(
        sy[grid], yy[grid], s_products[order, 0], y_products[order, 0], gamma
    )
    s_by_slot, y_by_slot = np.empty(state.memory), np.empty(state.memory)
    s_by_slot[order], y_by_slot[order] = s_weights, y_weights
    return -gamma * state.g + s_by_slot @ state.s_pairs + y_by_slot @ state.y_pairs


def full_state(p: int, pairs: int, rng: np.random.Generator):
    """A state whose ring is full and has wrapped, its Gram matrices filled in."""
    from streamae.compute.lbfgs import LbfgsState, search_direction

    state = LbfgsState.start(np.zeros(p), 1.0, rng.standard_normal(p), memory=pairs)
    curvature = rng.uniform(0.5, 2.0, p)
    for _ in range(pairs + 3):
        s = rng.standard_normal(p)
        state.add_pair(s, curvature * s + 0.05 * rng.standard_normal(p))
    search_direction(state)  # projects every pair, as the iterations of a run did
    return state


def write_checkpoint(state, path: Path, ordered: bool) -> None:
    """The optimizer state into a model file through train's atomic HDF5 write."""
    from streamae.compute.parameters import Hyperparameters
    from streamae.io.modelfile import Model, write_model

    arrays = state.to_arrays()
    if ordered:  # 0.1: the pairs copied into oldest-first order first
        arrays["s_pairs"], arrays["y_pairs"] = state.ordered_pairs()
        arrays.pop("oldest")
    model = Model(
        W1=np.zeros((1, 1)),
        b1=np.zeros(1),
        W2=np.zeros((1, 1)),
        b2=np.zeros(1),
        hyper=Hyperparameters(hidden=1),
        optimizer=arrays,
    )
    write_model(path, model, force=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parameters", type=int, default=308_308, help="p (default: 784 -> 196)")
    parser.add_argument("--pairs", type=int, default=100, help="correction pairs held")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--workdir", default=None, help="where the checkpoint files go")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    print_host()

    from streamae.compute.lbfgs import search_direction

    load_start = os.getloadavg()
    state = full_state(args.parameters, args.pairs, np.random.default_rng(0))
    curvatures = np.einsum("ij,ij->i", state.s_pairs, state.y_pairs)
    reference = two_loop(state, curvatures)
    assert np.linalg.norm(numpy_compact(state) - reference) <= 1e-10 * np.linalg.norm(reference)
    agreement = float(np.linalg.norm(search_direction(state) - reference) / np.linalg.norm(reference))
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        target = Path(workdir) / "checkpoint.h5"
        calls = {
            "direction: compact form (train)": lambda: search_direction(state),
            "direction: compact form, NumPy's BLAS": lambda: numpy_compact(state),
            "direction: NumPy two-loop, curvatures kept": lambda: two_loop(state, curvatures),
            "direction: NumPy two-loop, 0.1": lambda: two_loop(state, None),
            "checkpoint: pairs as the ring holds them (train)": lambda: write_checkpoint(
                state, target, False
            ),
            "checkpoint: pairs copied oldest first, 0.1": lambda: write_checkpoint(state, target, True),
        }
        for call in calls.values():
            call()  # compiles, touches the buffers
        times = {label: [] for label in calls}
        labels = list(calls)
        for round_ in range(args.rounds):
            for label in labels[round_ % len(labels) :] + labels[: round_ % len(labels)]:
                started = time.perf_counter()
                calls[label]()
                times[label].append(time.perf_counter() - started)
            print(f"  round {round_ + 1}/{args.rounds}", file=sys.stderr, flush=True)
    medians = {label: float(np.median(values)) for label, values in times.items()}
    pair_bytes = 2 * args.pairs * args.parameters * 8
    rows = [
        [
            label,
            f"{1e3 * medians[label]:.1f}",
            f"{1e3 * min(times[label]):.1f}",
            f"{pair_bytes / medians[label] / 1e9:.1f}",
        ]
        for label in labels
    ]
    text = table(rows, ["what", "median ms", "min ms", "pair GB/s"])
    result = {
        "machine": machine(),
        "parameters": args.parameters,
        "pairs": args.pairs,
        "times": times,
        "agreement": agreement,
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "table": text,
    }
    path = save_json(result, args.json, "lbfgs")
    print(
        f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; load average "
        f"{load_start[0]:.2f} at start, {result['load_average']['end'][0]:.2f} at the end"
    )
    print(
        f"p = {args.parameters:,}, {args.pairs} pairs ({pair_bytes / 1e6:.0f} MB), medians of {args.rounds}"
    )
    print(text)
    print(f"compact form against the two-loop: relative difference {agreement:.1e}")
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
