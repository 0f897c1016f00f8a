"""One full J + ∇J evaluation: streamae's schemes against NumPy, PyTorch and the sgemm rate.

Run:  python benchmarks/bench_objective.py [--cases a,b,c] [--rounds 5] [--threads 2]

For each case it writes a patch file (page cache warm), builds every implementation, checks
that they agree, then times them in rotation, one call each per round with one large
sgemm, so that the host's drift hits all of them alike; it prints medians and ratios as
a Markdown table and writes everything to benchmarks/results/objective-<time>.json.
Compile time is measured apart, in fresh processes (cold and warm Numba cache).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine, read_through, save_json, sgemm_rate, table, write_patches
from reference import TorchObjective, numpy_objective, torch_available

CASES = {
    "a": {"m": 1_000_000, "n": 64, "s": 25, "what": "8x8 patches (the notes)"},
    "b": {"m": 60_000, "n": 784, "s": 196, "what": "MNIST 28x28"},
    "c": {"m": 200_000, "n": 192, "s": 400, "what": "8x8 RGB, overcomplete"},
}
SCHEMES = ("two-pass", "single-pass", "in-core")


def streamae_impl(path: Path, n: int, s: int, scheme: str, threads: int, prefetch: bool):
    """A streamae objective over the patch file; (callable, objective, file, setup seconds)."""
    from streamae.compute.parameters import Hyperparameters
    from streamae.compute.schemes import make_objective
    from streamae.io.patchfile import PatchFile, inspect_patch_file, streaming_block_rows

    rows = streaming_block_rows(inspect_patch_file(path))
    source = PatchFile(path, dtype=np.float32, block_rows=rows, prefetch=prefetch)
    started = time.perf_counter()
    objective = make_objective(source, Hyperparameters(hidden=s), n_visible=n, scheme=scheme, threads=threads)
    setup = time.perf_counter() - started

    def call(theta):
        evaluation = objective(theta)
        return evaluation.cost, evaluation.gradient

    return call, objective, source, setup


def relative(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


def run_case(name: str, spec: dict, args, workdir: Path, sgemm_samples: list[float]) -> dict:
    import numba
    from threadpoolctl import threadpool_limits

    from streamae.compute.parameters import initialize
    from streamae.compute.schemes import choose_scheme
    from streamae.io.patchfile import PatchFile

    m = int(spec["m"] * args.size)
    n, s = spec["n"], spec["s"]
    path = write_patches(workdir / f"case-{name}.h5", m, n)
    cat_seconds = min(read_through(path) for _ in range(2))  # warms the page cache too
    file_bytes = path.stat().st_size
    theta = initialize(n, s, seed=0)
    numba.set_num_threads(args.threads)

    impls, objectives, sources, setup = {}, {}, [], {}
    for scheme in SCHEMES:
        call, objective, source, seconds = streamae_impl(path, n, s, scheme, args.threads, args.prefetch)
        impls[f"streamae {scheme}"], objectives[scheme], setup[scheme] = call, objective, seconds
        sources.append(source)
    with PatchFile(path) as probe:
        from streamae.runtime.mpi import SingleProcess

        choice = choose_scheme(probe, n, s, np.dtype(np.float32), None, SingleProcess())
    with PatchFile(path) as probe:
        X = np.empty((m, n), dtype=np.float32)
        for first, block in probe.blocks():
            X[first : first + block.shape[0]] = block

    def with_blas(fn):
        def call(theta):
            with threadpool_limits(args.threads, user_api="blas"):
                return fn(theta)

        return call

    impls["NumPy float32"] = with_blas(lambda theta: numpy_objective(theta, X, s))
    if torch_available() and not args.no_torch:
        import torch

        torch.set_num_threads(args.threads)
        impls["PyTorch autograd"] = TorchObjective(X, s, autograd=True)
        impls["PyTorch hand-written"] = TorchObjective(X, s, autograd=False)

    # Correctness first: every implementation against streamae two-pass (float32 all).
    reference = impls["streamae two-pass"](theta)
    agreement = {}
    for label, fn in impls.items():
        J, grad = fn(theta)  # also the warm-up call (compiles, touches buffers)
        agreement[label] = {
            "J": abs(J - reference[0]) / abs(reference[0]),
            "grad": relative(grad, reference[1]),
        }

    times = {label: [] for label in impls}
    details = {scheme: [] for scheme in SCHEMES}
    labels = list(impls)
    for round_ in range(args.rounds):
        with threadpool_limits(args.threads, user_api="blas"):
            sgemm_samples.append(sgemm_rate())
        order = labels[round_ % len(labels) :] + labels[: round_ % len(labels)]
        for label in order:
            started = time.perf_counter()
            impls[label](theta)
            times[label].append(time.perf_counter() - started)
            if label.startswith("streamae "):
                timing = objectives[label.split(" ", 1)[1]].timing
                details[label.split(" ", 1)[1]].append(
                    {
                        "waiting": timing.waiting,
                        "read_seconds": timing.read_seconds,
                        "read_bytes": timing.read_bytes,
                    }
                )
    for source in sources:
        source.close()
    for objective in objectives.values():
        objective.close()
    path.unlink()
    return {
        "m": m,
        "n": n,
        "s": s,
        "what": spec["what"],
        "file_bytes": file_bytes,
        "cat_seconds": cat_seconds,
        "auto": {"scheme": choice.name, "reason": choice.reason},
        "setup_seconds": setup,
        "agreement": agreement,
        "times": times,
        "streamae_io": details,
    }


COMPILE_SNIPPET = """
import time, numpy as np
t0 = time.perf_counter()
from streamae.compute.parameters import Hyperparameters, initialize
from streamae.compute.schemes import make_objective
from streamae.io.patchfile import ArrayPatches
t1 = time.perf_counter()
X = np.random.default_rng(0).uniform(0.1, 0.9, (4096, 64)).astype(np.float32)
times = {}
for scheme in ("two-pass", "single-pass", "in-core"):
    objective = make_objective(ArrayPatches(X), Hyperparameters(), n_visible=64, scheme=scheme)
    theta = initialize(64, 25)
    t = time.perf_counter(); objective(theta); first = time.perf_counter() - t
    t = time.perf_counter(); objective(theta); second = time.perf_counter() - t
    times[scheme] = first - second
print(t1 - t0, times["two-pass"], times["single-pass"], times["in-core"])
"""


def compile_times() -> dict:
    """First-call overhead (first call minus second) in fresh processes: cold, then warm cache."""
    results = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for state in ("cold", "warm"):
            out = subprocess.run(
                [sys.executable, "-c", COMPILE_SNIPPET], env=env, capture_output=True, text=True, check=True
            ).stdout.split()
            imports, *first = (float(v) for v in out)
            results[state] = {"import_seconds": imports, **dict(zip(SCHEMES, first, strict=True))}
    return results


def summarize(cases: dict, sgemm: float, default_label: dict) -> str:
    header = [
        "case",
        "implementation",
        "median s",
        "examples/s",
        "GFLOP/s",
        "% sgemm",
        "x NumPy",
        "x PyTorch hand",
        "x PyTorch autograd",
    ]
    rows = []
    for name, case in cases.items():
        flops = 10.0 * case["m"] * case["n"] * case["s"]
        med = {label: float(np.median(v)) for label, v in case["times"].items()}
        for label, t in med.items():
            mark = " (auto)" if label == default_label[name] else ""

            def ratio(other: str, t: float = t, med: dict = med) -> str:
                return f"{med[other] / t:.2f}" if other in med else "-"

            rows.append(
                [
                    f"({name}) m={case['m']:,} n={case['n']} s={case['s']}",
                    label + mark,
                    f"{t:.4f}",
                    f"{case['m'] / t:,.0f}",
                    f"{flops / t / 1e9:.1f}",
                    f"{100 * flops / t / 1e9 / sgemm:.0f}%",
                    ratio("NumPy float32"),
                    ratio("PyTorch hand-written"),
                    ratio("PyTorch autograd"),
                ]
            )
    return table(rows, header)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="a,b,c", help="comma-separated cases among a, b, c")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per implementation")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--size", type=float, default=1.0, help="fraction of each case's m (quick runs)")
    parser.add_argument(
        "--prefetch", action="store_true", help="read with the reader thread (helps when the cache is cold)"
    )
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    parser.add_argument("--no-compile", action="store_true", help="skip the compile-time measurement")
    parser.add_argument("--workdir", default=None, help="where the temporary patch files go")
    parser.add_argument("--json", default=None, help="output path (default benchmarks/results/...)")
    args = parser.parse_args()

    result = {
        "machine": machine(),
        "threads": args.threads,
        "rounds": args.rounds,
        "prefetch": args.prefetch,
        "cases": {},
    }
    sgemm_samples: list[float] = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        for name in args.cases.split(","):
            print(f"case ({name}) ...", file=sys.stderr, flush=True)
            result["cases"][name] = run_case(name, CASES[name], args, Path(workdir), sgemm_samples)
    sgemm = float(np.median(sgemm_samples))
    result["sgemm_gflops"] = {"median": sgemm, "samples": sgemm_samples}
    if not args.no_compile:
        result["compile"] = compile_times()
    default_label = {name: f"streamae {case['auto']['scheme']}" for name, case in result["cases"].items()}
    text = summarize(result["cases"], sgemm, default_label)
    result["table"] = text
    path = save_json(result, args.json, "objective")
    print(
        f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"load average at start {result['machine']['load_average'][0]:.2f}"
    )
    print(
        f"sgemm (4096^2 float32, {args.threads} threads): median {sgemm:.1f} GFLOP/s "
        f"over {len(sgemm_samples)} samples ({min(sgemm_samples):.0f}-{max(sgemm_samples):.0f})"
    )
    print(text)
    for name, case in result["cases"].items():
        print(f"({name}) auto picks {case['auto']['scheme']}: {case['auto']['reason']}")
        worst = max(a["grad"] for a in case["agreement"].values())
        print(f"({name}) largest relative gradient difference to streamae two-pass: {worst:.1e}")
        for scheme, io in case["streamae_io"].items():
            if io and sum(d["read_bytes"] for d in io) > 0:
                read = np.median([d["read_bytes"] / max(d["read_seconds"], 1e-12) for d in io]) / 1e9
                wait = np.median([d["waiting"] for d in io])
                total = np.median(case["times"][f"streamae {scheme}"])
                rows_per_eval = case["m"] * (2 if scheme == "two-pass" else 1)
                print(
                    f"({name}) {scheme}: reading alone {read:.2f} GB/s, compute "
                    f"{rows_per_eval / max(total - wait, 1e-12):,.0f} rows/s, "
                    f"waited for data {wait * 1e3:.1f} ms of {total * 1e3:.1f} ms; "
                    f"cat: {case['file_bytes'] / case['cat_seconds'] / 1e9:.2f} GB/s"
                )
    if "compile" in result:
        for state, values in result["compile"].items():
            print(
                f"first-call overhead, {state} Numba cache: "
                + ", ".join(f"{k} {v:.2f} s" for k, v in values.items())
            )
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
