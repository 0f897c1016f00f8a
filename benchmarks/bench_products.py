"""products="auto" against "blas" and "tiled": is the calibrated choice the faster path?

Run:  python benchmarks/bench_products.py [--cases a,b,c] [--schemes in-core,single-pass]
      [--rounds 7] [--threads N] [--size 1.0] [--keep-calibration]
      (smoke: --size 0.01 --rounds 2; the full run takes a few minutes on a quiet host)

For each case (the issue's (a) 10^6 x 64 -> 25, (b) 60000 x 784 -> 196, (c) 200000 x 192
-> 400) it writes a patch file (page cache warm), builds the objective `train` builds for
each scheme with each of products="auto", "blas" and "tiled" (auto calibrates on first
use: by default in a fresh cache folder, so this run's calibration is the one timed), and
times one evaluation of each, all of them in rotation, one round at a time (the host's
drift then touches every contender alike).  It prints, per case and scheme, what auto
chose and why, the medians, and auto's time over the faster of BLAS and tiles: the
issue's target is at most 1.03.  Then `streamae info --host`'s report of the calibrations.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine, print_host, save_json, table, write_patches

CASES = {
    "a": {"m": 1_000_000, "n": 64, "s": 25},
    "b": {"m": 60_000, "n": 784, "s": 196},
    "c": {"m": 200_000, "n": 192, "s": 400},
}
PRODUCTS = ("auto", "blas", "tiled")
TARGET = 1.03


def _objectives(path: Path, n: int, s: int, schemes: list[str]) -> dict:
    """(scheme, products) -> the objective `train` builds for this file, and its source."""
    from streamae.compute.parameters import Hyperparameters
    from streamae.compute.schemes import make_objective
    from streamae.io.readpolicy import open_patches

    built = {}
    for scheme in schemes:
        for products in PRODUCTS:
            source = open_patches(path, dtype=np.float32)
            objective = make_objective(
                source, Hyperparameters(hidden=s), n_visible=n, scheme=scheme, products=products
            )
            built[(scheme, products)] = (objective, source)
    return built


def _rotate(calls: dict, rounds: int) -> dict:
    """Seconds of each call per round, the order reversed every other round."""
    names = list(calls)
    seconds = {name: [] for name in names}
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            started = time.perf_counter()
            calls[name]()
            seconds[name].append(time.perf_counter() - started)
        print(f"  round {round_ + 1}/{rounds}", file=sys.stderr, flush=True)
    return seconds


def _case(name: str, args, workdir: Path) -> list[dict]:
    from streamae.compute.parameters import initialize

    spec = CASES[name]
    m, n, s = max(1, int(spec["m"] * args.size)), spec["n"], spec["s"]
    path = write_patches(workdir / f"case-{name}.h5", m, n)
    built = _objectives(path, n, s, args.schemes.split(","))
    theta = initialize(n, s, 0)
    calls = {key: (lambda o=objective: o(theta)) for key, (objective, _) in built.items()}
    for call in calls.values():  # compile (or load), fault in, warm the page cache
        call()
    seconds = _rotate(calls, args.rounds)
    rows = []
    for scheme in args.schemes.split(","):
        auto = built[(scheme, "auto")][0]
        medians = {p: float(np.median(seconds[(scheme, p)])) for p in PRODUCTS}
        rows.append(
            {
                "case": name,
                "m": m,
                "scheme": scheme,
                "auto_tiled_block": bool(auto.tiled),
                "auto_tiled_sums": bool(auto.tiled_sums),
                "auto_reason": auto.products_reason,
                "median_seconds": medians,
                "samples": {p: seconds[(scheme, p)] for p in PRODUCTS},
                "auto_over_best": medians["auto"] / min(medians["blas"], medians["tiled"]),
            }
        )
    for objective, source in built.values():
        objective.close()
        close = getattr(source, "close", None)
        if close is not None:
            close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="a,b,c")
    parser.add_argument("--schemes", default="in-core,single-pass")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--size", type=float, default=1.0, help="fraction of each case's m (smoke runs)")
    parser.add_argument(
        "--keep-calibration",
        action="store_true",
        help="use the calibrations already cached on this host (default: calibrate afresh)",
    )
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    print_host()
    from streamae.compute.calibration import format_host_report, host_report
    from streamae.runtime.threads import apply_threads

    apply_threads(args.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        if not args.keep_calibration:
            os.environ["STREAMAE_CACHE_DIR"] = str(Path(scratch) / "calibration")
        rows = []
        for name in args.cases.split(","):
            print(f"case ({name}) ...", file=sys.stderr, flush=True)
            rows += _case(name, args, Path(scratch))
        report = host_report()
    load_after = os.getloadavg()
    text = table(
        [
            [
                f"({r['case']}) {r['m']} rows",
                r["scheme"],
                ("tiled block" if r["auto_tiled_block"] else "BLAS block")
                + (", tiled sums" if r["auto_tiled_sums"] else ""),
                *(f"{r['median_seconds'][p]:.4f}" for p in PRODUCTS),
                f"{r['auto_over_best']:.3f}",
                "yes" if r["auto_over_best"] <= TARGET else "NO",
            ]
            for r in rows
        ],
        ["case", "scheme", "auto chose", "auto s", "blas s", "tiled s", "auto / best", f"<= {TARGET}"],
    )
    print(
        f"load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after; {args.threads} threads"
    )
    print(text)
    for r in rows:
        print(f"({r['case']}) {r['scheme']}: {r['auto_reason']}")
    print(format_host_report(report))
    result = {"machine": machine(), "args": vars(args), "rows": rows, "table": text, "calibration": report}
    print(f"JSON: {save_json(result, args.json, 'products')}")


if __name__ == "__main__":
    main()
