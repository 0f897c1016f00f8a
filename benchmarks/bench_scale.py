"""Scale and out of core: `streamae train` on files of 10^5 .. 10^8 patches; rates, peak RSS.

Run:  python benchmarks/bench_scale.py [--sizes 1e5,1e6,1e7,1e8] [--iterations 1] [--cold]
          [--workdir DIR] [--scheme single-pass]

For each size it writes a patch file once (n = 64, uniform float32, ~1 MiB chunks; 10^8
rows is 25.6 GB, more than this machine's memory), times ``cat FILE > /dev/null``, then
runs ``streamae.train`` (the library call behind the command: the read policy, the values
check, L-BFGS) in a fresh process, so its peak RSS (VmHWM) is its own, and deletes the
file.  With ``--cold`` the page cache is emptied (``echo 3 > /proc/sys/vm/drop_caches``,
root only) before ``cat`` and before training, so both read from the device: the
training's read rate (file bytes x evaluations / evaluation seconds) is set beside
``cat``'s cold rate.  Without it, small files are read from the page cache (the write put
them there).  Bounded: ``--iterations 1`` is the start plus one iteration (2-3
evaluations); at 10^8 cold each evaluation reads 25.6 GB (~20-30 s at ~1 GB/s).
Prints one table and writes benchmarks/results/scale-<time>.json.
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

from common import machine, print_host, save_json, table, write_patches

CHILD = r"""
import json, sys, time
import streamae

path, scheme, out = sys.argv[1], sys.argv[2], sys.argv[5]
iterations, threads = int(sys.argv[3]), int(sys.argv[4])
started = time.perf_counter()
model = streamae.train(path, out, max_iter=iterations, scheme=scheme, threads=threads, grad_tol=0.0,
                       progress_tol=0.0, force=True, checkpoint_every=0)
total = time.perf_counter() - started
# VmHWM: this process's own peak resident set (ru_maxrss from wait4 would also count
# the parent's pages at the fork before exec).
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"scheme": model.info["scheme"], "seconds": total, "train_seconds": model.info["seconds"],
                  "iterations": model.iterations, "evaluations": model.info["evaluations"],
                  "time_split": model.info["time_split"], "peak_rss_bytes": peak}))
"""


def drop_caches() -> None:
    """Empty the page cache (root only)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as handle:
        handle.write("3\n")


def run_child(path: Path, scheme: str, iterations: int, threads: int) -> dict:
    """Train in a fresh process; its JSON report, with its own peak RSS (bytes)."""
    out = path.with_suffix(".model.h5")
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), scheme, str(iterations), str(threads), str(out)],
        stdout=subprocess.PIPE,
        text=True,
    )
    output, _ = process.communicate()
    out.unlink(missing_ok=True)
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
    parser.add_argument("--iterations", type=int, default=1, help="L-BFGS iterations per size")
    parser.add_argument("--cold", action="store_true", help="empty the page cache before cat and training")
    parser.add_argument("--scheme", default="single-pass", help="scheme to train with")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--workdir", default=None, help="directory for the files (needs 26 GB for 1e8)")
    parser.add_argument("--json", default=None, help="output path (default benchmarks/results/...)")
    args = parser.parse_args()
    print_host()

    result = {
        "machine": machine(),
        "scheme": args.scheme,
        "iterations": args.iterations,
        "cold": args.cold,
        "sizes": {},
    }
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
                if args.cold:
                    drop_caches()
                cat = cat_seconds(path)
                print(f"{m:,} rows: cat {cat:.1f} s, training ...", file=sys.stderr, flush=True)
                if args.cold:
                    drop_caches()
                report = run_child(path, args.scheme, args.iterations, args.threads)
            finally:
                size = path.stat().st_size
                path.unlink()
            split = report["time_split"]
            # Every evaluation, the one at the starting point too (the split keeps it apart).
            iterations_seconds = split["waiting_seconds"] + split["computing_seconds"]
            eval_seconds = iterations_seconds + split.get("start_seconds", 0.0)
            reads_per_evaluation = {"two-pass": 2, "single-pass": 1}.get(report["scheme"], 0)
            evaluations = split["evaluations"] + ("start_seconds" in split)
            entry = {
                "m": m,
                "file_bytes": size,
                "write_seconds": written,
                "cat_seconds": cat,
                "seconds_per_evaluation": eval_seconds / evaluations,
                "examples_per_second": m * evaluations / eval_seconds,
                "data_gb_per_second": size * reads_per_evaluation * evaluations / eval_seconds / 1e9,
                "waiting_fraction": split["waiting_seconds"] / max(1e-12, iterations_seconds),
                **report,
            }
            result["sizes"][str(m)] = entry
            cat_rate = size / cat / 1e9
            rows_out.append(
                [
                    f"{m:,}",
                    f"{size / 1e9:.2f}",
                    f"{evaluations}",
                    f"{entry['seconds_per_evaluation']:.2f}",
                    f"{entry['examples_per_second']:,.0f}",
                    f"{entry['data_gb_per_second']:.2f}",
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
        "evaluations",
        "s/evaluation",
        "examples/s",
        "training reads GB/s",
        "cat GB/s" + (" (cold)" if args.cold else ""),
        "vs cat",
        "waiting for data",
        "peak RSS MiB",
    ]
    text = table(rows_out, header)
    result["table"] = text
    path = save_json(result, args.json, "scale")
    print(
        f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"{result['machine']['memory_gib']} GiB; scheme {args.scheme}, {args.iterations} L-BFGS iterations, "
        f"page cache {'cold' if args.cold else 'as left by the write'}; load average {os.getloadavg()[0]:.2f}"
    )
    print(text)
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
