"""The BLAS / row-vectorised products of streamae.compute.small, product by product.

Run:  python benchmarks/bench_kernels.py [--rows 512] [--rounds 21] [--shapes 64x25,784x196,...]

One core (Numba and OpenBLAS at one thread), float32, every contender taken in rotation,
medians of ``rounds`` x ``calls`` calls, the load average recorded before and after.  For
each layer shape (n x s):

- the products of one compute block of ``rows`` rows (default: the objective's compute
  block for the shape, ``compute_rows_for``; OpenBLAS's small-matrix kernels, taken up to
  m·n·k = 10⁶ on this CPU, make the rates depend on it), row-vectorised (compute/small.py)
  against OpenBLAS called as the BLAS path calls it: the forward product W1·xᵀ (with and
  without the transpose of x it needs), the decoder, the error W2ᵀ·δ3ᵀ, the weight
  gradient Σ δ3 a2ᵀ, and single-pass's input-layer sums Σ [e; g] xᵀ with the block's rows
  as the tiles' k (one of the two switches products="auto" calibrates);
- OpenBLAS for the forward, decoder and error products with the weight operand stored
  as the BLAS path stores it against the other way round (W1 or W1ᵀ contiguous, W2 or
  W2ᵀ), and single-pass's Σ [e; g] xᵀ as the pass calls it (one stacked product, or two
  where passes.splits_input_sums says) against the other way: the evidence for the
  choices gradient_pass makes;
- one single-pass gradient pass over 8 compute blocks, ``products="tiled"`` against
  ``"blas"`` (the whole block: products, transposes, the same elementwise kernels), in
  GFLOP/s of 10·rows·n·s (the other switch), each shape decided as
  streamae.compute.calibration decides (tiles only beyond max(noise, 5%)).

Then one full evaluation of case (a) (--eval-rows x 64 -> 25 in memory, one core) by
single-pass and in-core through make_objective with each product choice.  The choice
itself is calibrated on each host at run time (``streamae info --host`` shows it); this
is the detail behind it.  About 2 minutes.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from common import machine, print_host, save_json, table

SHAPES = "16x25,32x16,64x25,64x64,64x100,128x50,192x400,784x196"


def _rotate(contenders: dict, rounds: int, calls: int) -> dict:
    """Median seconds per call of each ``name -> fn(calls)``, in rotation."""
    times = {name: [] for name in contenders}
    names = list(contenders)
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            started = time.perf_counter()
            contenders[name](calls)
            times[name].append((time.perf_counter() - started) / calls)
    return {name: float(np.median(values)) for name, values in times.items()}


def _rotate_objectives(objectives: dict, contenders: dict, rounds: int, calls: int) -> dict:
    """:func:`_rotate` after one warm-up call each (compiling, first touches), then close
    the ``objectives`` the contenders call."""
    for contender in contenders.values():
        contender(1)
    try:
        return _rotate(contenders, rounds, calls)
    finally:
        for objective in objectives.values():
            objective.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help="rows of a compute block (default: the objective's for each shape)",
    )
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--shapes", default=SHAPES, help="comma-separated n x s")
    parser.add_argument("--eval-rows", type=int, default=1_000_000)
    parser.add_argument("--eval-rounds", type=int, default=7)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    print_host()

    import numba

    # The BLAS Numba's np.dot calls, loaded now so that the one-thread limit applies to it.
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import threadpool_info, threadpool_limits

    numba.set_num_threads(1)
    load_before = os.getloadavg()
    from streamae.compute.objective import compute_rows_for

    measured, measured_sums, product_rows, layout_rows, block_rows = {}, {}, [], [], []
    block_sizes: set[int] = set()
    with threadpool_limits(1, user_api="blas"):
        blas_threads = {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}
        if blas_threads != {1}:
            raise SystemExit(f"BLAS runs {sorted(blas_threads)} threads under the limit: not one core")
        for shape in args.shapes.split(","):
            n, s = (int(v) for v in shape.split("x"))
            rows = args.rows or compute_rows_for(n, s, np.dtype(np.float32).itemsize)
            block_sizes.add(rows)
            products = _products(n, s, rows, args.rounds, args.calls)
            flops = 2.0 * rows * n * s
            rate = {
                name: flops * (2.0 if name.startswith("input sums") else 1.0) / seconds / 1e9
                for name, seconds in products.items()
            }
            product_rows.append(
                [f"{n}x{s}"]
                + [
                    f"{rate[a]:.1f} / {rate[b]:.1f}"
                    for a, b in (
                        ("forward", "forward BLAS"),
                        ("transpose+forward", "forward BLAS"),
                        ("decoder", "decoder BLAS"),
                        ("error", "error BLAS"),
                        ("dW2", "dW2 BLAS"),
                        ("input sums", "input sums BLAS"),
                    )
                ]
                + [f"{products['transpose'] * 1e6:.1f}"]
            )
            measured_sums[(n, s)] = (rate["input sums"], rate["input sums BLAS"])
            layout_rows.append(
                [f"{n}x{s}"]
                + [
                    f"{rate[f'{name} BLAS']:.1f} / {rate[f'{name} BLAS other']:.1f}"
                    for name in ("forward", "decoder", "error", "input sums")
                ]
            )
            block = _block(n, s, rows, args.rounds)
            block_rate = {k: 10.0 * 8 * rows * n * s / v / 1e9 for k, v in block.items()}
            measured[(n, s)] = (block_rate["tiled"], block_rate["blas"])
            block_rows.append(
                [
                    f"{n}x{s}",
                    f"{block_rate['tiled']:.1f}",
                    f"{block_rate['blas']:.1f}",
                    f"{block_rate['tiled'] / block_rate['blas']:.2f}",
                ]
            )
            print(f"{n}x{s} done, load {os.getloadavg()[0]:.2f}", flush=True)

    choices = {f"{n}x{s}": _wins(*measured[(n, s)]) for (n, s) in measured}
    choices_sums = {f"{n}x{s}": _wins(*measured_sums[(n, s)]) for (n, s) in measured_sums}
    load_mid = os.getloadavg()
    evaluation = _evaluation(args.eval_rows, args.eval_rounds)
    load_after = os.getloadavg()
    products_text = table(
        product_rows,
        [
            "n x s",
            "W1·xᵀ row-vec / BLAS",
            "same + transpose / BLAS",
            "b2 + W2·a2ᵀ row-vec / a2·W2ᵀ BLAS",
            "W2ᵀ·δ3ᵀ row-vec / BLAS",
            "Σ δ3 a2ᵀ row_dots / BLAS",
            "single-pass [e; g]·x tiles / BLAS",
            "transpose x (us)",
        ],
    )
    layout_text = table(
        layout_rows,
        [
            "n x s",
            "W1·xᵀ: W1ᵀ stored / W1 stored",
            "a2·W2ᵀ: W2ᵀ stored / W2 stored",
            "W2ᵀ·δ3ᵀ: W2 stored / W2ᵀ stored",
            "single-pass [e; g]·x: as called / split or stacked the other way",
        ],
    )
    block_text = table(block_rows, ["n x s", "tiled GFLOP/s", "BLAS GFLOP/s", "tiled / BLAS"])
    eval_rows = [
        [scheme, products, f"{seconds * 1e3:.1f}", f"{10.0 * args.eval_rows * 64 * 25 / seconds / 1e9:.1f}"]
        for (scheme, products), seconds in evaluation.items()
    ]
    eval_text = table(eval_rows, ["scheme", "products", "ms / evaluation (median)", "GFLOP/s"])
    print(
        f"load average (1 min) {load_before[0]:.2f} before, {load_mid[0]:.2f} after the shapes, "
        f"{load_after[0]:.2f} after the evaluations; "
        f"{'/'.join(map(str, sorted(block_sizes)))}-row blocks, one core, float32"
    )
    print(
        "\nProducts of one block, GFLOP/s (2·rows·n·s each; the input sums 2·rows·2s·n), "
        "row-vectorised / OpenBLAS:"
    )
    print(products_text)
    print("\nOpenBLAS by the weights' storage, GFLOP/s: as the BLAS path calls it / the other way:")
    print(layout_text)
    print("\nOne single-pass gradient pass over 8 blocks (10·rows·n·s):")
    print(block_text)
    print("auto's choice at each measured shape: " + _choice_text(choices))
    print(f"\nCase (a), {args.eval_rows} x 64 -> 25 in memory, one core, one evaluation:")
    print(eval_text)
    print("auto's choice for the input sums: " + _choice_text(choices_sums))
    result = {
        "machine": machine(),
        "args": vars(args),
        "load_average": [load_before, load_mid, load_after],
        "measured": {f"{n}x{s}": v for (n, s), v in measured.items()},
        "auto_tiled": choices,
        "measured_sums": {f"{n}x{s}": v for (n, s), v in measured_sums.items()},
        "auto_tiled_sums": choices_sums,
        "evaluation_seconds": {f"{k[0]} {k[1]}": v for k, v in evaluation.items()},
        "tables": [products_text, layout_text, block_text, eval_text],
    }
    print(f"JSON: {save_json(result, args.json, 'kernels')}")


def _wins(tiles_rate: float, blas_rate: float) -> bool:
    """Whether the tiles' rate beats BLAS's by the calibration's least margin."""
    from streamae.compute.calibration import MIN_MARGIN

    return blas_rate / tiles_rate < 1.0 - MIN_MARGIN


def _choice_text(choices: dict) -> str:
    return ", ".join(f"{shape} {'tiles' if tiled else 'BLAS'}" for shape, tiled in choices.items())


def _products(n: int, s: int, rows: int, rounds: int, calls: int) -> dict:
    """Median seconds of each product of one block, row-vectorised, by OpenBLAS as the
    BLAS path calls it, and by OpenBLAS with the weights stored the other way round.

    Keys: "<product>" (row-vectorised), "<product> BLAS" (as gradient_pass calls it),
    "<product> BLAS other" (the weight operand in the other storage order), "transpose".
    """
    from numba import njit

    from streamae.compute import passes, small

    @njit(nogil=True)
    def gemm(A, B, out, times):  # compiled once per operand layout (C or F)
        for _ in range(times):
            np.dot(A, B, out)

    @njit(nogil=True)
    def gemm_halves(A, B, out, times):  # out = A · B as two products of half A's rows each
        half = A.shape[0] // 2
        for _ in range(times):
            np.dot(A[:half], B, out[:half])
            np.dot(A[half:], B, out[half:])

    @njit(nogil=True)
    def rows_times(B, AT, bias, out, times):
        for _ in range(times):
            small.rows_product(B, AT, bias, out)

    @njit(nogil=True)
    def transpose_rows_times(B, A, AT, bias, out, times):
        for _ in range(times):
            small.transpose_into(A, AT)
            small.rows_product(B, AT, bias, out)

    @njit(nogil=True)
    def transpose_times(A, AT, times):
        for _ in range(times):
            small.transpose_into(A, AT)

    @njit(nogil=True)
    def dots_times(A, B, out, times):
        for _ in range(times):
            small.row_dots(A, B, out)

    rng = np.random.default_rng(0)
    f32 = np.float32
    x = rng.random((rows, n), dtype=f32)
    xt = np.ascontiguousarray(x.T)
    W1 = rng.random((s, n), dtype=f32)
    W1T = np.ascontiguousarray(W1.T)
    W2 = rng.random((n, s), dtype=f32)
    W2T = np.ascontiguousarray(W2.T)
    b2 = rng.random(n, dtype=f32)
    z3 = rng.random((rows, n), dtype=f32)
    z3t = np.ascontiguousarray(z3.T)
    a2t = rng.random((s, rows), dtype=f32)
    eg = rng.random((2 * s, rows), dtype=f32)
    input_sums = np.empty((2 * s, n), dtype=f32)
    split = passes.splits_input_sums(s, n, rows)
    stacked_call = lambda c: gemm(eg, x, input_sums, c)  # noqa: E731
    split_call = lambda c: gemm_halves(eg, x, input_sums, c)  # noqa: E731
    hidden = np.empty((s, rows), dtype=f32)
    output = np.empty((rows, n), dtype=f32)
    small_out = np.empty((n, s), dtype=f32)
    scratch = np.empty((n, rows), dtype=f32)
    none = np.empty(0, dtype=f32)
    contenders = {
        "forward": lambda c: rows_times(W1, xt, none, hidden, c),
        "transpose+forward": lambda c: transpose_rows_times(W1, x, scratch, none, hidden, c),
        "forward BLAS": lambda c: gemm(W1T.T, x.T, hidden, c),
        "forward BLAS other": lambda c: gemm(W1, x.T, hidden, c),
        "decoder": lambda c: rows_times(W2, a2t, b2, scratch, c),
        "decoder BLAS": lambda c: gemm(a2t.T, W2T, output, c),
        "decoder BLAS other": lambda c: gemm(a2t.T, W2.T, output, c),
        "error": lambda c: rows_times(W2T, z3t, none, hidden, c),
        "error BLAS": lambda c: gemm(W2.T, z3.T, hidden, c),
        "error BLAS other": lambda c: gemm(W2T, z3.T, hidden, c),
        "dW2": lambda c: dots_times(z3t, a2t, small_out, c),
        "dW2 BLAS": lambda c: gemm(z3.T, a2t.T, small_out, c),
        "input sums": lambda c: rows_times(eg, x, none, input_sums, c),
        "input sums BLAS": split_call if split else stacked_call,
        "input sums BLAS other": stacked_call if split else split_call,
        "transpose": lambda c: transpose_times(x, scratch, c),
    }
    for run in contenders.values():
        run(1)
    return _rotate(contenders, rounds, calls)


def _block(n: int, s: int, rows: int, rounds: int) -> dict:
    """Median seconds of one single-pass gradient pass over 8 compute blocks, each choice."""
    from streamae.compute.parameters import Hyperparameters, initialize
    from streamae.compute.schemes import make_objective
    from streamae.io.patchfile import ArrayPatches

    X = np.random.default_rng(1).uniform(0.1, 0.9, size=(8 * rows, n)).astype(np.float32)
    theta = initialize(n, s, 0)
    objectives = {}
    for products in ("tiled", "blas"):
        objective = make_objective(
            ArrayPatches(X),
            Hyperparameters(hidden=s),
            n_visible=n,
            scheme="single-pass",
            compute_rows=rows,
            threads=1,
            products=products,
        )
        # The input sums are a switch of their own: BLAS in both, so this measures only
        # what the block switch changes.
        objective.tiled_sums = False
        objective._load_parameters(theta)
        objectives[products] = objective

    def run(objective, calls: int) -> None:
        plan = objective._plan(single=True)
        for _ in range(calls):
            objective._gradient_visit(0, X, plan, objective.no_cache)

    contenders = {name: (lambda c, o=o: run(o, c)) for name, o in objectives.items()}
    return _rotate_objectives(objectives, contenders, rounds, 10)


def _evaluation(rows: int, rounds: int) -> dict:
    """Median seconds of one evaluation of case (a), single-pass and in-core, each choice."""
    from streamae.compute.parameters import Hyperparameters, initialize
    from streamae.compute.schemes import make_objective
    from streamae.io.patchfile import ArrayPatches

    X = np.random.default_rng(1).uniform(0.1, 0.9, size=(rows, 64)).astype(np.float32)
    theta = initialize(64, 25, 0)
    objectives = {
        (scheme, products): make_objective(
            ArrayPatches(X, block_rows=32768),
            Hyperparameters(),
            n_visible=64,
            scheme=scheme,
            products=products,
            threads=1,
        )
        for scheme in ("single-pass", "in-core")
        for products in ("blas", "tiled")
    }
    contenders = {key: (lambda c, o=o: [o(theta) for _ in range(c)]) for key, o in objectives.items()}
    return _rotate_objectives(objectives, contenders, rounds, 1)


if __name__ == "__main__":
    main()
