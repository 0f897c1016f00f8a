"""How fast the in-core evaluation's matrix products alone can run: the ceiling under it.

Run:  python benchmarks/bench_ceiling.py [--cases a,b,c] [--rounds 9]

For each case of bench_objective.py (m x n -> s, float32, the rows in memory), in
rotation with the large-sgemm rate (4096², OpenBLAS at 2 threads):

- the in-core evaluation, through ``make_objective`` as ``streamae train`` builds it;
- the in-core scheme's products alone, nothing elementwise between them: pass 1's
  a2ᵀ = W1·xᵀ over every block, then each block's decoder a2·W2ᵀ, Σ δ3 a2ᵀ, W2ᵀ·δ3ᵀ and
  Σ e xᵀ, with the adds of the two weight-gradient blocks into float64 totals.  The
  operands are laid out as the objective's BLAS path lays them, and Σ e xᵀ runs as the
  register tiles where ``auto`` picks them.  Two arrangements:
  (i) as the objective runs them: two lanes, OpenBLAS at one thread in each, on compute
      blocks of the objective's size and of 1024 and 2048 rows;
  (ii) OpenBLAS at two threads on chunks of 2048 and 8192 rows (the lane split's
      alternative).

Rates count 10·m·n·s FLOPs per evaluation, as bench_objective.py does.  The share of
sgemm sets each time against the sgemm sample of its own round, and the last column the
in-core evaluation's time of that round against this contender's (scaled to all m rows):
medians over the rounds, as the host's rate drifts.  An evaluation does all of these
products and more, so it cannot run faster than the best of them: that best, as a share
of sgemm, bounds what the in-core scheme can reach with these products.
About 3 minutes.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from common import machine, print_host, save_json, sgemm_rate, table
from numba import njit
from threadpoolctl import threadpool_limits

from streamae.compute.lanes import Lanes, SingleThreadedBlas, lane_ranges
from streamae.compute.objective import compute_rows_for
from streamae.compute.parameters import Hyperparameters, initialize, unpack
from streamae.compute.schemes import make_objective
from streamae.compute.small import rows_product
from streamae.io.patchfile import ArrayPatches

CASES = {"a": (1_000_000, 64, 25), "b": (60_000, 784, 196), "c": (200_000, 192, 400)}
LANE_BLOCK_ROWS = (1024, 2048)
THREADED_CHUNK_ROWS = (2048, 8192)


@njit(nogil=True, cache=True)
def lane_products(x, W1T, W2, W2T, tiled_sums, block_rows, cache, z3, e2t, dW1, dW2, sum_dW1, sum_dW2):
    """The in-core scheme's products over one lane's rows x (rows, n), nothing elementwise.

    W1T (n, s), W2 (n, s), W2T (s, n); cache (s·rows,) takes a2ᵀ block after block;
    scratch z3 (block_rows, n), e2t (s, block_rows), dW1 (s, n), dW2 (n, s); totals
    sum_dW1 (s·n,) and sum_dW2 (n·s,) float64.  Only whole blocks are run.
    """
    rows = x.shape[0] // block_rows * block_rows
    s = W1T.shape[1]
    for first in range(0, rows, block_rows):
        a2t = cache[s * first : s * (first + block_rows)].reshape(s, block_rows)
        np.dot(W1T.T, x[first : first + block_rows].T, a2t)
    no_bias = x[0, :0]
    for first in range(0, rows, block_rows):
        a2t = cache[s * first : s * (first + block_rows)].reshape(s, block_rows)
        xb = x[first : first + block_rows]
        np.dot(a2t.T, W2T, z3)
        np.dot(z3.T, a2t.T, dW2)
        np.dot(W2.T, z3.T, e2t)
        if tiled_sums:
            rows_product(e2t, xb, no_bias, dW1)
        else:
            np.dot(e2t, xb, dW1)
        flat = dW1.ravel()
        for i in range(flat.size):
            sum_dW1[i] += flat[i]
        flat = dW2.ravel()
        for i in range(flat.size):
            sum_dW2[i] += flat[i]


class LaneProducts:
    """Arrangement (i): two lanes, each with OpenBLAS at one thread, as the objective runs."""

    def __init__(self, x: np.ndarray, W1: np.ndarray, W2: np.ndarray, block_rows: int, tiled_sums: bool):
        self.lanes = Lanes(2)
        self.blas = SingleThreadedBlas()
        self.x, self.block_rows, self.tiled_sums = x, block_rows, tiled_sums
        self.W1T, self.W2, self.W2T = np.ascontiguousarray(W1.T), W2, np.ascontiguousarray(W2.T)
        n, s = x.shape[1], W1.shape[0]
        self.shares = lane_ranges(x.shape[0], block_rows, 2)
        self.rows = sum((stop - start) // block_rows * block_rows for start, stop in self.shares)
        self.cache = np.empty(s * x.shape[0], dtype=x.dtype)
        self.scratch = [
            (
                np.empty((block_rows, n), x.dtype),
                np.empty((s, block_rows), x.dtype),
                np.empty((s, n), x.dtype),
                np.empty((n, s), x.dtype),
                np.zeros(s * n),
                np.zeros(n * s),
            )
            for _ in range(2)
        ]

    def __call__(self) -> None:
        s = self.W1T.shape[1]

        def work(lane: int) -> None:
            start, stop = self.shares[lane]
            lane_products(
                self.x[start:stop],
                self.W1T,
                self.W2,
                self.W2T,
                self.tiled_sums,
                self.block_rows,
                self.cache[s * start : s * stop],
                *self.scratch[lane],
            )

        with self.blas:
            self.lanes.run(work)


class ThreadedProducts:
    """Arrangement (ii): the same products, OpenBLAS at two threads on large chunks."""

    def __init__(self, x: np.ndarray, W1: np.ndarray, W2: np.ndarray, chunk_rows: int):
        self.x, self.W1, self.W2, self.chunk_rows = x, W1, W2, chunk_rows
        n, s = x.shape[1], W1.shape[0]
        self.rows = x.shape[0] // chunk_rows * chunk_rows
        self.a2 = np.empty((x.shape[0], s), x.dtype)
        self.z3, self.e2 = np.empty((chunk_rows, n), x.dtype), np.empty((chunk_rows, s), x.dtype)
        self.dW1, self.dW2 = np.empty((s, n), x.dtype), np.empty((n, s), x.dtype)
        self.sum_dW1, self.sum_dW2 = np.zeros((s, n)), np.zeros((n, s))

    def __call__(self) -> None:
        step = self.chunk_rows
        with threadpool_limits(2, user_api="blas"):
            for first in range(0, self.rows, step):
                np.dot(self.x[first : first + step], self.W1.T, out=self.a2[first : first + step])
            for first in range(0, self.rows, step):
                a2 = self.a2[first : first + step]
                np.dot(a2, self.W2.T, out=self.z3)
                np.dot(self.z3.T, a2, out=self.dW2)
                np.dot(self.z3, self.W2, out=self.e2)
                np.dot(self.e2.T, self.x[first : first + step], out=self.dW1)
                self.sum_dW1 += self.dW1
                self.sum_dW2 += self.dW2


def _case(name: str, rounds: int) -> dict:
    m, n, s = CASES[name]
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 0.9, size=(m, n)).astype(np.float32)
    theta = initialize(n, s, seed=1)
    parameters = unpack(theta, n, s)
    W1, W2 = parameters.W1.astype(np.float32), parameters.W2.astype(np.float32)
    hyper = Hyperparameters(hidden=s)
    objective = make_objective(ArrayPatches(x), hyper, n_visible=n, scheme="in-core", threads=2)
    own_rows = compute_rows_for(n, s, 4)
    tiled_sums = bool(objective.tiled_sums)  # as the evaluation's calibration chose
    contenders: dict = {"in-core evaluation": (lambda: objective(theta), m)}
    for rows in sorted({own_rows, *LANE_BLOCK_ROWS}):
        run = LaneProducts(x, W1, W2, rows, tiled_sums)
        contenders[f"products alone, 2 lanes x 1 thread, blocks of {rows}"] = (run, run.rows)
    for rows in THREADED_CHUNK_ROWS:
        run = ThreadedProducts(x, W1, W2, rows)
        contenders[f"products alone, BLAS 2 threads, chunks of {rows}"] = (run, run.rows)
    for run, _ in contenders.values():  # compile, fault in, warm up
        run()
        run()
    seconds = {label: [] for label in contenders}
    sgemm = []
    labels = list(contenders)
    for round_ in range(rounds):
        for label in labels if round_ % 2 == 0 else labels[::-1]:
            started = time.perf_counter()
            contenders[label][0]()
            seconds[label].append(time.perf_counter() - started)
        sgemm.append(sgemm_rate())
    objective.close()
    rates = {
        label: 10.0 * rows * n * s / float(np.median(seconds[label])) / 1e9
        for label, (_, rows) in contenders.items()
    }
    # The host's rate drifts between rounds: each time is set against its own round's
    # sgemm and its own round's evaluation, and the medians of those ratios are reported.
    sgemm_rounds = np.array(sgemm)
    evaluation = np.array(seconds["in-core evaluation"])
    shares, evaluation_over = {}, {}
    for label, (_, rows) in contenders.items():
        times = np.array(seconds[label])
        shares[label] = float(np.median(10.0 * rows * n * s / times / 1e9 / sgemm_rounds))
        evaluation_over[label] = float(np.median(evaluation / (times * m / rows)))
    return {
        "m": m,
        "n": n,
        "s": s,
        "tiled_sums": tiled_sums,
        "compute_rows": own_rows,
        "sgemm_median": float(np.median(sgemm)),
        "sgemm_range": [float(min(sgemm)), float(max(sgemm))],
        "gflops": rates,
        "share_of_sgemm": shares,
        "evaluation_over": evaluation_over,
        "seconds": {label: [float(t) for t in values] for label, values in seconds.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="a,b,c", help="cases to run, of a, b, c (default: all)")
    parser.add_argument("--rounds", type=int, default=9, help="rounds in rotation (default: 9)")
    parser.add_argument("--out", default=None, help="JSON path (default: results/ceiling-<time>.json)")
    args = parser.parse_args()
    print_host()
    info = machine()
    load = info["load_average"][0]
    print(f"machine: {info['cpu']}, {info['cores']} cores; load average {load:.2f} at start")
    results = {}
    rows = []
    for name in args.cases.split(","):
        result = results[name] = _case(name, args.rounds)
        sgemm = result["sgemm_median"]
        low, high = result["sgemm_range"]
        case = f"({name}) {result['m']:,}x{result['n']}->{result['s']}"
        print(f"{case}: sgemm median {sgemm:.1f} GFLOP/s ({low:.0f}-{high:.0f}) over the case's rounds")
        for label, rate in result["gflops"].items():
            share, over = result["share_of_sgemm"][label], result["evaluation_over"][label]
            rows.append([case, label, f"{rate:.1f}", f"{share:.0%}", f"{over:.2f}"])
    info["load_average_end"] = os.getloadavg()
    header = ["case", "what runs", "GFLOP/s (10·m·n·s)", "% sgemm (its round's)", "evaluation time / this"]
    print(table(rows, header))
    print(f"load average {info['load_average_end'][0]:.2f} at the end")
    print(f"JSON: {save_json({'machine': info, 'cases': results}, args.out, 'ceiling')}")


if __name__ == "__main__":
    main()
