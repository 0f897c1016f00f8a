"""The path `streamae train` takes, timed: one evaluation, seconds per iteration, baselines.

Run:  python benchmarks/bench_objective.py [--cases a,b,c] [--rounds 5] [--threads 2]
      (quick: --size 0.05 --rounds 2 --no-compile; ~10 min for the full run on a quiet host)

For each case it writes a patch file (page cache warm) and then, in rotation, one round at
a time: the large-sgemm rate; one evaluation of every streamae scheme through the very
objective `train` builds (the file opened by the read policy, ``make_objective`` with
train's arguments); and every baseline in a fresh process, NumPy float32 and PyTorch
float32 (hand-written backward and autograd), each as-is and in the allocator's steady
state (MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736: freed memory is kept, no page
faults on re-allocated temporaries).  Ratios use the faster state of each baseline.  Then
it runs `streamae train` itself (its defaults, the case's --hidden) for 2 and for 12 L-BFGS
iterations per scheme: seconds per iteration = (t12 − t2) / 10, set beside evaluations of
the same objective timed right after those runs × evaluations per iteration; three repeats
(--train-repeats), the median of their ratios.  Those early iterations hold few L-BFGS
pairs, so one more single-pass run goes on to iteration 140 with --log: its seconds per
iteration over iterations 101-140, where the optimizer holds all 100 pairs and writes its
checkpoints as it does for the rest of a run, against evaluations timed right after and
against its own evaluations' time in the same log (waiting + computing: what the optimizer
adds, without the host's drift between runs).  It prints the issue's table and the load
average, and writes every sample to benchmarks/results/objective-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine, print_host, read_through, save_json, sgemm_rate, table, write_patches
from reference import torch_available

HERE = Path(__file__).resolve().parent
CASES = {
    "a": {"m": 1_000_000, "n": 64, "s": 25, "what": "8x8 patches (the notes)"},
    "b": {"m": 60_000, "n": 784, "s": 196, "what": "MNIST 28x28"},
    "c": {"m": 200_000, "n": 192, "s": 400, "what": "8x8 RGB, overcomplete"},
}
SCHEMES = ("two-pass", "single-pass", "in-core")
STEADY = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736"}
BASELINES = {
    "NumPy float32": "numpy",
    "PyTorch hand-written": "torch-hand",
    "PyTorch autograd": "torch-autograd",
}
# Timed calls of a baseline in each round's process (after its warm-up call), of which the
# round keeps the median: the first timed call of a fresh process ran up to 20% slower than
# the later ones (PyTorch hand-written, (b), steady: 0.516 s, then 0.472-0.504 s).
BASELINE_CALLS = 3
TRAIN_ITERATIONS = (2, 12)
# The window of the long run: from the iteration where L-BFGS holds all its (100) pairs.
LONG_WINDOW = (100, 140)


def streamae_objective(path: Path, n: int, s: int, scheme: str, threads: int):
    """The objective `train` builds for this file and scheme (train's own calls)."""
    from streamae.compute.parameters import Hyperparameters
    from streamae.compute.schemes import make_objective
    from streamae.io.readpolicy import open_patches
    from streamae.runtime.threads import apply_threads

    apply_threads(threads)
    source = open_patches(path, dtype=np.float32)
    objective = make_objective(source, Hyperparameters(hidden=s), n_visible=n, scheme=scheme)
    return objective, source


def baseline(path: Path, s: int, impl: str, threads: int, steady: bool, calls: int = 1) -> dict:
    """Time ``calls`` calls of a baseline in a fresh process (after one warm-up call)."""
    env = dict(os.environ, **STEADY) if steady else {k: v for k, v in os.environ.items() if k not in STEADY}
    out = subprocess.run(
        [sys.executable, str(HERE / "baseline_worker.py"), str(path), str(s), impl, str(threads), str(calls)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def streamae_command() -> str:
    """The installed `streamae` console script of this interpreter's environment."""
    beside = Path(sys.executable).parent / "streamae"
    return str(beside) if beside.exists() else (shutil.which("streamae") or "streamae")


def train_command(path: Path, out: Path, s: int, scheme: str, iterations: int, threads: int) -> list[str]:
    """The `streamae train` command line of a timed run (its defaults otherwise)."""
    return [
        streamae_command(),
        "train",
        str(path),
        "-o",
        str(out),
        "--hidden",
        str(s),
        "--max-iter",
        str(iterations),
        "--scheme",
        scheme,
        "--threads",
        str(threads),
        "--grad-tol",
        "0",
        "--progress-tol",
        "0",
        "--force",
        "--quiet",
    ]


def train_run(path: Path, s: int, scheme: str, iterations: int, threads: int, workdir: Path) -> dict:
    """`streamae train` for ``iterations`` iterations: wall seconds, evaluations, time split."""
    from streamae.io.modelfile import load_model

    out = workdir / f"model-{scheme}-{iterations}.h5"
    command = train_command(path, out, s, scheme, iterations, threads)
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    model = load_model(out)
    out.unlink()
    return {
        # The training loop's own time (the model's info): the command minus start-up,
        # the values check and the first evaluation, which the 12 - 2 difference cancels
        # anyway, with less of the noise of starting a process.
        "seconds": float(model.info.get("seconds", seconds)),
        "wall_seconds": seconds,
        "iterations": model.iterations,
        "evaluations": model.info.get("evaluations"),
        "time_split": model.info.get("time_split"),
    }


def median_evaluation(objective, theta: np.ndarray, calls: int = 3) -> float:
    """Median seconds of ``calls`` evaluations (timed right after a train run beside it)."""
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        objective(theta)
        seconds.append(time.perf_counter() - started)
    return float(np.median(seconds))


def long_train_run(path: Path, s: int, threads: int, workdir: Path) -> dict | None:
    """Single-pass `streamae train` to LONG_WINDOW[1] with --log: seconds and evaluations
    per iteration over the window, and the seconds its evaluations themselves took
    (waiting + computing, from the same log: free of the host's drift between runs).
    None if the run stopped before the window's end."""
    out, log = workdir / "model-long.h5", workdir / "long.jsonl"
    command = train_command(path, out, s, "single-pass", LONG_WINDOW[1], threads) + ["--log", str(log)]
    subprocess.run(command, check=True, capture_output=True)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    by_iteration = {record["iteration"]: record for record in records if "iteration" in record}
    out.unlink()
    log.unlink()
    first, last = (by_iteration.get(k) for k in LONG_WINDOW)
    if first is None or last is None:
        return None
    span = LONG_WINDOW[1] - LONG_WINDOW[0]
    inside = [by_iteration[k] for k in range(LONG_WINDOW[0] + 1, LONG_WINDOW[1] + 1) if k in by_iteration]
    return {
        "seconds_per_iteration": (last["seconds"] - first["seconds"]) / span,
        "evaluations_per_iteration": (last["evaluations"] - first["evaluations"]) / span,
        "evaluating_per_iteration": sum(r["waiting_seconds"] + r["computing_seconds"] for r in inside) / span,
    }


def run_case(name: str, spec: dict, args, workdir: Path, sgemm_samples: list[float]) -> dict:
    from streamae.compute.parameters import initialize

    m = int(spec["m"] * args.size)
    n, s = spec["n"], spec["s"]
    first_sample = len(sgemm_samples)
    path = write_patches(workdir / f"case-{name}.h5", m, n)
    cat_seconds = min(read_through(path) for _ in range(2))  # warms the page cache too
    theta = initialize(n, s, seed=0)

    objectives, sources = {}, []
    for scheme in SCHEMES:
        objective, source = streamae_objective(path, n, s, scheme, args.threads)
        objectives[scheme] = objective
        sources.append(source)
    calls = {f"streamae {scheme}": objectives[scheme] for scheme in SCHEMES}
    baselines = {}
    if not args.no_baselines:
        for label, impl in BASELINES.items():
            if impl.startswith("torch") and (args.no_torch or not torch_available()):
                continue
            for steady in (False, True):
                baselines[f"{label} ({'steady' if steady else 'as-is'})"] = (impl, steady)

    # Agreement first: every implementation's J against streamae two-pass (float32 all).
    reference = objectives["two-pass"](theta)
    agreement = {}
    for label, objective in calls.items():
        evaluation = objective(theta)  # also the warm-up call (compiles, touches buffers)
        agreement[label] = abs(evaluation.cost - reference.cost) / abs(reference.cost)

    labels = list(calls) + list(baselines)
    times = {label: [] for label in labels}
    waits = {label: [] for label in calls}
    for round_ in range(args.rounds):
        sgemm_samples.append(sgemm_rate())
        for label in labels[round_ % len(labels) :] + labels[: round_ % len(labels)]:
            if label in calls:
                started = time.perf_counter()
                calls[label](theta)
                times[label].append(time.perf_counter() - started)
                waits[label].append(calls[label].timing.waiting)
            else:
                impl, steady = baselines[label]
                report = baseline(path, s, impl, args.threads, steady, calls=BASELINE_CALLS)
                times[label].append(float(np.median(report["seconds"])))
                agreement.setdefault(label, abs(report["cost"] - reference.cost) / abs(reference.cost))
        print(f"  round {round_ + 1}/{args.rounds}", file=sys.stderr, flush=True)

    # `streamae train` beside the objective, repeat after repeat: each repeat runs the 2-
    # and the 12-iteration command and then times evaluations of the same scheme at once,
    # so the host's drift (up to 2x over minutes) stays out of each repeat's ratio.
    train = {scheme: [] for scheme in SCHEMES}
    if not args.no_train:
        for repeat in range(args.train_repeats):
            for scheme in SCHEMES:
                runs = {k: train_run(path, s, scheme, k, args.threads, workdir) for k in TRAIN_ITERATIONS}
                runs["evaluation_seconds"] = median_evaluation(objectives[scheme], theta)
                train[scheme].append(runs)
            print(f"  train repeat {repeat + 1}/{args.train_repeats} done", file=sys.stderr, flush=True)
    long_run = None
    if not args.no_train and not args.no_long:
        long_run = long_train_run(path, s, args.threads, workdir)
        if long_run is not None:
            long_run["evaluation_seconds"] = median_evaluation(objectives["single-pass"], theta)
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
        "cat_seconds": cat_seconds,
        "agreement_J": agreement,
        "times": times,
        "waiting": waits,
        "train": train,
        "long_train": long_run,
        # The sgemm samples of this case's own rounds: the host drifts within a run, so
        # the table's shares (of the whole run's median) can be read against these.
        "sgemm_samples": sgemm_samples[first_sample:],
    }


def train_agreement(case: dict, scheme: str) -> tuple[float, float, float] | None:
    """(train s/iter, evaluation × evaluations/iter, their ratio), medians over the repeats.

    Each repeat's ratio sets (t₁₂ − t₂)/10 of the command against the evaluations timed
    right after it; the ratio reported is the median of the repeats' ratios.
    """
    per_iteration, predicted, ratios = [], [], []
    for runs in case["train"].get(scheme) or []:
        short, long = (runs.get(k) for k in TRAIN_ITERATIONS)
        if not short or not long:
            continue
        span = long["iterations"] - short["iterations"]
        if span <= 0:
            continue
        seconds = (long["seconds"] - short["seconds"]) / span
        expected = runs["evaluation_seconds"] * (long["evaluations"] - short["evaluations"]) / span
        per_iteration.append(seconds)
        predicted.append(expected)
        ratios.append(seconds / expected)
    if not ratios:
        return None
    return float(np.median(per_iteration)), float(np.median(predicted)), float(np.median(ratios))


def summarize(cases: dict, sgemm: float) -> str:
    header = [
        "case",
        "implementation",
        "median s",
        "% sgemm",
        "x PyTorch hand (faster state)",
        "x NumPy (faster state)",
        "train s/iter",
        "bench eval x evals/iter",
        "train / bench",
    ]
    rows = []
    for name, case in cases.items():
        flops = 10.0 * case["m"] * case["n"] * case["s"]
        med = {label: float(np.median(v)) for label, v in case["times"].items() if v}

        def fastest(prefix: str, med: dict = med) -> float | None:
            found = [t for label, t in med.items() if label.startswith(prefix)]
            return min(found) if found else None

        torch_hand, numpy_best = fastest("PyTorch hand-written"), fastest("NumPy float32")
        for label, t in med.items():
            scheme = label.split(" ", 1)[1] if label.startswith("streamae ") else None
            agree = train_agreement(case, scheme) if scheme else None
            rows.append(
                [
                    f"({name}) {case['m']:,}x{case['n']}->{case['s']}",
                    label,
                    f"{t:.4f}",
                    f"{100 * flops / t / 1e9 / sgemm:.0f}%",
                    f"{torch_hand / t:.2f}" if torch_hand else "-",
                    f"{numpy_best / t:.2f}" if numpy_best else "-",
                    f"{agree[0]:.3f}" if agree else "-",
                    f"{agree[1]:.3f}" if agree else "-",
                    f"{agree[2]:.2f}" if agree else "-",
                ]
            )
    return table(rows, header)


COMPILE_SNIPPET = """
import time, numpy as np
import streamae.runtime
streamae.runtime.configure()  # as train does, before the kernels are defined
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="a,b,c", help="comma-separated cases among a, b, c")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per implementation")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--size", type=float, default=1.0, help="fraction of each case's m (quick runs)")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    parser.add_argument("--no-baselines", action="store_true", help="time streamae only")
    parser.add_argument("--no-train", action="store_true", help="skip the `streamae train` runs")
    parser.add_argument("--no-long", action="store_true", help="skip the run to iteration 140")
    parser.add_argument("--train-repeats", type=int, default=3, help="repeats of the train runs")
    parser.add_argument("--no-compile", action="store_true", help="skip the compile-time measurement")
    parser.add_argument("--workdir", default=None, help="where the temporary patch files go")
    parser.add_argument("--json", default=None, help="output path (default benchmarks/results/...)")
    args = parser.parse_args()
    print_host()

    load_start = os.getloadavg()
    result = {"machine": machine(), "threads": args.threads, "rounds": args.rounds, "cases": {}}
    sgemm_samples: list[float] = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        for name in args.cases.split(","):
            print(f"case ({name}) ...", file=sys.stderr, flush=True)
            result["cases"][name] = run_case(name, CASES[name], args, Path(workdir), sgemm_samples)
    sgemm = float(np.median(sgemm_samples))
    result["sgemm_gflops"] = {"median": sgemm, "samples": sgemm_samples}
    result["load_average"] = {"start": load_start, "end": os.getloadavg()}
    if not args.no_compile:
        result["compile"] = compile_times()
    text = summarize(result["cases"], sgemm)
    result["table"] = text
    path = save_json(result, args.json, "objective")
    print(
        f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; load average "
        f"{load_start[0]:.2f} at start, {result['load_average']['end'][0]:.2f} at the end"
    )
    print(
        f"sgemm (4096^2 float32, {args.threads} threads): median {sgemm:.1f} GFLOP/s "
        f"over {len(sgemm_samples)} samples ({min(sgemm_samples):.0f}-{max(sgemm_samples):.0f})"
    )
    print(text)
    for name, case in result["cases"].items():
        long_run = case.get("long_train")
        if long_run:
            expected = long_run["evaluation_seconds"] * long_run["evaluations_per_iteration"]
            ratio = long_run["seconds_per_iteration"] / expected
            print(
                f"({name}) train single-pass, iterations {LONG_WINDOW[0] + 1}-{LONG_WINDOW[1]} (all L-BFGS "
                f"pairs held): {long_run['seconds_per_iteration']:.3f} s/iter against evaluation "
                f"{long_run['evaluation_seconds']:.3f} s x {long_run['evaluations_per_iteration']:.2f} "
                f"evaluations/iter = {expected:.3f} s: ratio {ratio:.2f}; within the run, its "
                f"evaluations took {long_run['evaluating_per_iteration']:.3f} s/iter: ratio "
                f"{long_run['seconds_per_iteration'] / long_run['evaluating_per_iteration']:.2f}"
            )
        elif not args.no_train and not args.no_long:
            print(f"({name}) the long train run stopped before iteration {LONG_WINDOW[1]}")
    for name, case in result["cases"].items():
        med = {label: float(np.median(v)) for label, v in case["times"].items() if v}
        own = case["sgemm_samples"]
        if own:
            flops = 10.0 * case["m"] * case["n"] * case["s"]
            shares = ", ".join(
                f"{label.split(' ', 1)[1]} {100 * flops / med[label] / 1e9 / float(np.median(own)):.0f}%"
                for label in med
                if label.startswith("streamae ")
            )
            print(
                f"({name}) sgemm during this case's rounds: median {np.median(own):.1f} GFLOP/s "
                f"({min(own):.0f}-{max(own):.0f}); against it: {shares}"
            )
        two, single = med.get("streamae two-pass"), med.get("streamae single-pass")
        if two and single:
            print(f"({name}) two-pass / single-pass: {two / single:.2f}")
        worst = max(case["agreement_J"].values())
        print(f"({name}) largest relative J difference to streamae two-pass: {worst:.1e}")
        for label, waits in case["waiting"].items():
            print(
                f"({name}) {label}: waited for data {np.median(waits) * 1e3:.1f} ms "
                f"of {med[label] * 1e3:.1f} ms"
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
