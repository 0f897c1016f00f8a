"""When the read policy's choices pay: chunk cache, byte runs, who reads, warm and cold.

Run:  python benchmarks/bench_read.py [--rows 1000000] [--n 64] [--rounds 7] [--cold]

Writes one patch file (n = 64, ~1 MiB chunks, like ``streamae extract``), then in rotation:
(1) reads it whole into 8 MiB blocks through h5py with its default 1 MiB chunk cache and
with none, and as byte runs (``streamae/io/rawread.py``) on one thread and on the policy's
threads; (2) times one single-pass evaluation (the objective ``train`` builds) with the
lanes reading their own rows (the policy when the page cache is warm), with one thread
reading each 8 MiB block through HDF5 for both lanes (how ``train`` read before byte runs),
and with the prefetching reader thread (the policy when the data is larger than memory).
With ``--cold`` every timed call starts from a cold page cache (``echo 3 >
/proc/sys/vm/drop_caches``, root only) and ``cat``'s cold rate is measured too.  About 1
minute warm for 10^6 rows; prints a Markdown table and the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine, print_host, read_through, save_json, table, write_patches


def drop_caches() -> None:
    """Empty the page cache (root only): the next read of every file comes from the disk."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as handle:
        handle.write("3\n")


def read_rate(path: Path, cache_bytes: int | None) -> float:
    """Seconds to read /patches whole into blocks of the policy's size."""
    import h5py

    from streamae.io.patchfile import inspect_patch_file
    from streamae.io.readpolicy import streaming_block_rows

    rows = streaming_block_rows(inspect_patch_file(path))
    options = {} if cache_bytes is None else {"rdcc_nbytes": cache_bytes}
    with h5py.File(path, "r", **options) as handle:
        dataset = handle["patches"]
        buffer = np.empty((rows, dataset.shape[1]), dtype=dataset.dtype)
        started = time.perf_counter()
        for first in range(0, dataset.shape[0], rows):
            last = min(first + rows, dataset.shape[0])
            dataset.read_direct(buffer[: last - first], np.s_[first:last], np.s_[0 : last - first])
        return time.perf_counter() - started


def raw_read_rate(path: Path, parallel: bool) -> float:
    """Seconds to read /patches whole as byte runs into blocks of the policy's size."""
    from streamae.io.patchfile import PatchFile, inspect_patch_file
    from streamae.io.readpolicy import streaming_block_rows

    rows = streaming_block_rows(inspect_patch_file(path))
    with PatchFile(path, block_rows=rows, chunk_cache_bytes=0) as source:
        buffer = np.empty((rows, source.layout.n_features), dtype=source.dtype)
        started = time.perf_counter()
        for first in range(0, source.n_rows, rows):
            last = min(first + rows, source.n_rows)
            if not source._raw.read(first, last, buffer[: last - first], parallel=parallel):
                raise RuntimeError("the byte-run reader declined the benchmark's own file")
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--cold", action="store_true", help="drop the page cache before every timed call")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    print_host()

    import numba

    from streamae.compute.parameters import Hyperparameters, initialize
    from streamae.compute.schemes import make_objective
    from streamae.io.readpolicy import open_patches

    numba.set_num_threads(args.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        path = write_patches(Path(workdir) / "read.h5", args.rows, args.n)
        nbytes = path.stat().st_size
        theta = initialize(args.n, args.hidden, 0)
        sources = {flag: open_patches(path, prefetch=flag) for flag in (False, True)}
        # How `train` read before byte runs: one thread reads each 8 MiB block through HDF5
        # while both lanes wait, then the lanes meet once per block.
        sources["old"] = open_patches(path, prefetch=False)
        sources["old"]._raw.close()
        sources["old"]._raw = None
        objectives = {
            flag: make_objective(
                source, Hyperparameters(hidden=args.hidden), n_visible=args.n, scheme="single-pass"
            )
            for flag, source in sources.items()
        }
        for objective in objectives.values():
            objective(theta)  # compile, touch the buffers
        tasks = {
            "read, h5py default chunk cache": lambda: read_rate(path, None),
            "read, h5py, no chunk cache": lambda: read_rate(path, 0),
            "read, byte runs, one thread": lambda: raw_read_rate(path, False),
            "read, byte runs, the policy's threads": lambda: raw_read_rate(path, True),
            "single-pass evaluation, lanes read their own rows (policy, warm)": lambda: _evaluate(
                objectives[False], theta
            ),
            "single-pass evaluation, one HDF5 reader for both lanes (before)": lambda: _evaluate(
                objectives["old"], theta
            ),
            "single-pass evaluation, prefetching reader thread (policy, cold)": lambda: _evaluate(
                objectives[True], theta
            ),
        }
        if args.cold:
            tasks["cat FILE > /dev/null"] = lambda: read_through(path)
        times: dict[str, list[float]] = {label: [] for label in tasks}
        waits: dict[str, list[float]] = {label: [] for label in tasks}
        labels = list(tasks)
        for round_ in range(args.rounds):
            for label in labels[round_ % len(labels) :] + labels[: round_ % len(labels)]:
                if args.cold:
                    drop_caches()
                elif label.startswith("read") or label.startswith("cat"):
                    read_through(path)
                times[label].append(tasks[label]())
                if "evaluation" in label:
                    key = "old" if "before" in label else "prefetching" in label
                    waits[label].append(objectives[key].timing.waiting)
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        for source in sources.values():
            source.close()
        for objective in objectives.values():
            objective.close()
    rows = []
    for label, values in times.items():
        median = float(np.median(values))
        wait = f"{np.median(waits[label]) * 1e3:.0f} ms" if waits[label] else "-"
        rows.append([label, f"{median:.3f}", f"{nbytes / median / 1e9:.2f}", wait])
    text = table(rows, ["what", "median s", "GB/s of the file", "waited for data"])
    result = {"machine": machine(), "args": vars(args), "times": times, "waits": waits, "table": text}
    out = save_json(result, args.json, "read")
    print(
        f"{'cold' if args.cold else 'warm'} page cache, {args.rows:,} x {args.n} float32 "
        f"({nbytes / 1e9:.2f} GB)"
    )
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    print(text)
    print(f"JSON: {out}")


def _evaluate(objective, theta) -> float:
    started = time.perf_counter()
    objective(theta)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
