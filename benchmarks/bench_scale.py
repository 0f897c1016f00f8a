"""Scale: train a few iterations on files of 10^5 .. 10^8 patches; throughput and peak RSS.

Run:  python benchmarks/bench_scale.py [--sizes 1e5,1e6,1e7,1e8] [--iterations 3]
          [--workdir DIR] [--scheme single-pass]

For each size it writes a patch file (n = 64, uniform float32, ~1 MiB chunks; 10^8 rows is
25.6 GB, more than this machine's memory), times ``cat FILE > /dev/null``, then trains
in a fresh process (so its peak RSS is its own, from wait4) with the streaming scheme,
the prefetching reader and L-BFGS, and deletes the file.  It prints one table and writes
benchmarks/results/scale-<time>.json.  Files that fit in the page cache are read from
memory (warm: the write just put them there); the largest is not, so it is read from disk.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, save_json, table, write_patches

CHILD = r"""
import json, sys, time
import numba, numpy as np
from streamae.compute.parameters import Hyperparameters, initialize
from streamae.compute.lbfgs import LbfgsState, StopRules, lbfgs_iteration
from streamae.compute.schemes import make_objective
from streamae.io.patchfile import PatchFile, inspect_patch_file, streaming_block_rows

path, scheme, iterations, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
numba.set_num_threads(threads)
layout = inspect_patch_file(path)
with PatchFile(path, block_rows=streaming_block_rows(layout), prefetch=True) as source:
    objective = make_objective(source, Hyperparameters(), n_visible=layout.n_features, scheme=scheme)
    records = []

    def fun(theta):
        evaluation = objective(theta)
        t = objective.timing
        records.append({"seconds": t.seconds, "waiting": t.waiting, "read_seconds": t.read_seconds,
                        "read_bytes": t.read_bytes, "rows": t.rows_read})
        return evaluation.cost, evaluation.gradient

    theta = initialize(layout.n_features, 25)
    started = time.perf_counter()
    f0, g0 = fun(theta)
    state = LbfgsState.start(theta, f0, g0)
    costs = [f0]
    for _ in range(iterations):
        lbfgs_iteration(fun, state, StopRules(max_iter=iterations))
        costs.append(state.f)
    total = time.perf_counter() - started
# VmHWM: this process's own peak resident set (ru_maxrss from wait4 would also count
# the parent's pages at the fork before exec).
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"scheme": objective.scheme, "evaluations": len(records), "seconds": total,
                  "records": records, "costs": costs, "peak_rss_bytes": peak}))
"""


def run_child(path: Path, scheme: str, iterations: int, threads: int) -> dict:
    """Train in a fresh process; its JSON report, with its own peak RSS (bytes)."""
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), scheme, str(iterations), str(threads)],
        stdout=subprocess.PIPE,
        text=True,
    )
    output, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"training on {path} failed with exit code {process.returncode}")
    return json.loads(output.strip().splitlines()[-1])


def cat_seconds(path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e5,1e6,1e7,1e8", help="comma-separated row counts")
    parser.add_argument("--iterations", type=int, default=3, help="L-BFGS iterations per size")
    parser.add_argument("--scheme", default="single-pass", help="scheme to train with")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--workdir", default=None, help="directory for the files (needs 26 GB for 1e8)")
    parser.add_argument("--json", default=None, help="output path (default benchmarks/results/...)")
    args = parser.parse_args()

    result = {"machine": machine(), "scheme": args.scheme, "iterations": args.iterations, "sizes": {}}
    rows_out = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        for text in args.sizes.split(","):
            m = int(float(text))
            path = Path(workdir) / f"scale-{m}.h5"
            print(f"{m:,} rows: writing ...", file=sys.stderr, flush=True)
            started = time.perf_counter()
            write_patches(path, m, 64, rows_per_write=1 << 18)
            written = time.perf_counter() - started
            try:
                cat = cat_seconds(path)
                print(f"{m:,} rows: cat {cat:.1f} s, training ...", file=sys.stderr, flush=True)
                report = run_child(path, args.scheme, args.iterations, args.threads)
                cat_after = cat_seconds(path)
            finally:
                size = path.stat().st_size
                path.unlink()
            # The first evaluation also loads the compiled kernels and touches new buffers.
            evaluations = report["records"][1:]
            eval_seconds = sum(r["seconds"] for r in evaluations)
            rows = sum(r["rows"] for r in evaluations)
            reads = sum(r["read_bytes"] for r in evaluations)
            read_seconds = sum(r["read_seconds"] for r in evaluations)
            waiting = sum(r["waiting"] for r in evaluations)
            entry = {
                "m": m,
                "file_bytes": size,
                "write_seconds": written,
                "cat_seconds": [cat, cat_after],
                "first_evaluation_seconds": report["records"][0]["seconds"],
                "examples_per_second": rows / eval_seconds,
                "data_gb_per_second": reads / eval_seconds / 1e9,
                "reading_alone_gb_per_second": reads / max(read_seconds, 1e-12) / 1e9,
                "waiting_fraction": waiting / eval_seconds,
                **report,
            }
            result["sizes"][str(m)] = entry
            cat_rate = size / min(cat, cat_after) / 1e9
            rows_out.append(
                [
                    f"{m:,}",
                    f"{size / 1e9:.2f}",
                    f"{len(evaluations)}",
                    f"{entry['examples_per_second']:,.0f}",
                    f"{entry['data_gb_per_second']:.2f}",
                    f"{entry['reading_alone_gb_per_second']:.2f}",
                    f"{cat_rate:.2f}",
                    f"{entry['data_gb_per_second'] / cat_rate:.0%}",
                    f"{100 * entry['waiting_fraction']:.0f}%",
                    f"{report['peak_rss_bytes'] / 2**20:,.0f}",
                ]
            )
            print(f"{m:,} rows: done", file=sys.stderr, flush=True)
    header = [
        "rows",
        "file GB",
        "timed evaluations",
        "examples/s",
        "training reads GB/s",
        "reader alone GB/s",
        "cat GB/s",
        "vs cat",
        "waiting for data",
        "peak RSS MiB",
    ]
    text = table(rows_out, header)
    result["table"] = text
    path = save_json(result, args.json, "scale")
    print(
        f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"{result['machine']['memory_gib']} GiB; scheme {args.scheme}, {args.iterations} L-BFGS iterations"
    )
    print(text)
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
