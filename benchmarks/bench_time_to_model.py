"""Time to a model: full-data passes and wall time to come within 1% and 0.1% of the notes' J.

For each case the notes' run (``--warm-start none --tolerance 0``, 400 iterations) sets the
reference J400 in the same run; then

- (i)   ``streamae train`` with its defaults (warm start ``auto``, the relative-progress stop),
- (ii)  the notes' run itself,
- (iii) minibatch Adam in PyTorch, as a PyTorch user would write it, given its best chance:
        every learning rate of ``--adam-lrs`` with every batch size of ``--adam-batches``,
        a cosine schedule over ``--adam-epochs`` epochs, ρ̂ per batch; the exact J over all
        rows after every epoch (not timed); the best run is reported (first to 0.1%, else
        to 1%, else the lowest J).

Passes count full-data evaluations: an L-BFGS evaluation on a sample of r rows counts r/m,
an Adam epoch counts 1.  Passes and J values do not depend on the machine's load; wall
times do: quote them from a quiet machine only.

Cases: ``photos`` (``--patches`` 8x8 patches of the shipped photographs, UFLDL
normalisation, the notes' settings) and ``mnist`` (the 10,000 MNIST test digits kept for the
tests, 784 -> 196, λ 3e-3, β 3, ρ 0.1).

Out of core (``--out-of-core ROWS``): ROWS photo patches written as float32 and as float16,
each file's pages dropped from the page cache (``posix_fadvise(DONTNEED)``), then one cold
single-pass evaluation and the default run in a child process (wall time, passes, waiting
vs computing, peak RSS), then 50 plain full-data L-BFGS iterations from its model (how
much J still falls).

    python benchmarks/bench_time_to_model.py --cases photos,mnist --patches 1e6
    python benchmarks/bench_time_to_model.py --out-of-core 1e8 --scratch /big/disk
    python benchmarks/bench_time_to_model.py --cases photos --patches 2e4 --adam-epochs 2   # smoke
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, orientation_coherence, print_host, save_json, table  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MNIST = REPO / "streamae" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"
TOLERANCES = (0.01, 0.001)
HYPER = {"photos": {}, "mnist": {"hidden": 196, "lam": 3e-3, "beta": 3.0, "rho": 0.1}}


# --- data and the L-BFGS runs ------------------------------------------------------------


def make_data(case: str, patches: int, folder: Path, storage: str = "float32", reuse: bool = False) -> Path:
    """The case's patch file (photos: ``patches`` random 8x8 patches; mnist: whole digits);
    ``reuse``: an existing file of that name written by this function before."""
    from streamae.demo import shipped_images
    from streamae.extraction.pipeline import extract

    path = folder / f"{case}-{patches}-{storage}.h5"
    if reuse and path.exists():
        return path
    if case == "photos":
        images = sorted(str(p) for p in shipped_images().glob("*.png"))
        extract(images, path, patch_size=8, num_patches=patches, normalize="ufldl", seed=0, storage=storage)
    else:
        extract([MNIST], path, patch_size=28, stride=28, normalize="unit", storage=storage)
    return path


def first_within(costs, on_full, done, seconds, target: float) -> tuple[float | None, float | None]:
    """(passes, seconds) when a full-data J first is ≤ ``target``; Nones if never."""
    hits = np.flatnonzero(np.asarray(on_full) & (np.asarray(costs) <= target))
    if hits.size == 0:
        return None, None
    return float(done[hits[0]]), float(seconds[hits[0]])


def lbfgs_run(name: str, path: Path, out: Path, options: dict) -> dict:
    """One ``train`` call; its history in passes, its final J and why it stopped."""
    from streamae.training.session import train
    from streamae.training.warmstart import full_data_passes

    started = time.perf_counter()
    model = train(path, out, force=True, checkpoint_every=0, stop_signals=False, **options)
    wall = time.perf_counter() - started
    m = int(model.data["shape"][0])
    history = {key: np.asarray(values) for key, values in model.history.items()}
    return {
        "name": name,
        "costs": history["cost"],
        "on_full": history["sample_rows"] == m,
        "passes": full_data_passes(history, m),
        "seconds": history["seconds"],
        "final": float(model.info["cost"]),
        "wall": wall,
        "finished": model.info["finished"],
        "stages": model.info["warm_start"]["stages"],
        "W1": model.W1,
    }


# --- PyTorch minibatch Adam --------------------------------------------------------------


def adam_run(X: np.ndarray, hyper: dict, lr: float, batch: int, epochs: int, exact) -> dict:
    """Minibatch Adam with a cosine schedule; the exact J (``exact(theta)``) after each epoch."""
    import torch

    from streamae.compute.parameters import initialize

    n, s = X.shape[1], hyper.get("hidden", 25)
    rho, beta, lam = hyper.get("rho", 0.01), hyper.get("beta", 3.0), hyper.get("lam", 1e-4)
    theta = torch.from_numpy(initialize(n, s, 0).astype(np.float32)).requires_grad_(True)
    data = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    optimizer = torch.optim.Adam([theta], lr=lr)
    steps = epochs * math.ceil(len(X) / batch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    generator = torch.Generator().manual_seed(0)
    costs, seconds, clock = [], [], 0.0
    for _ in range(epochs):
        started = time.perf_counter()
        for rows in torch.randperm(len(X), generator=generator).split(batch):
            optimizer.zero_grad(set_to_none=True)
            _batch_loss(theta, data[rows], n, s, rho, beta, lam).backward()
            optimizer.step()
            schedule.step()
        clock += time.perf_counter() - started
        costs.append(exact(theta.detach().numpy().astype(np.float64)))
        seconds.append(clock)
        if not math.isfinite(costs[-1]):
            break
    return {"lr": lr, "batch": batch, "costs": np.array(costs), "seconds": np.array(seconds)}


def _batch_loss(theta, x, n: int, s: int, rho: float, beta: float, lam: float):
    """The notes' J on one minibatch x (rows, n), ρ̂ from the batch (what a PyTorch user writes)."""
    import torch

    W1 = theta[: s * n].reshape(s, n)
    W2 = theta[s * n : 2 * s * n].reshape(n, s)
    b1, b2 = theta[2 * s * n : 2 * s * n + s], theta[2 * s * n + s :]
    a2 = torch.sigmoid(torch.addmm(b1, x, W1.T))
    a3 = torch.sigmoid(torch.addmm(b2, a2, W2.T))
    rho_hat = a2.mean(0).clamp(1e-7, 1 - 1e-7)
    kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
    decay = 0.5 * lam * ((W1**2).sum() + (W2**2).sum())
    return 0.5 * ((a3 - x) ** 2).sum() / x.shape[0] + decay + beta * kl.sum()


def best_adam(runs: list[dict], reference: float) -> dict:
    """The run first within 0.1% of ``reference``, else first within 1%, else lowest J."""
    for tolerance in reversed(TOLERANCES):
        hits = [(int(np.argmax(r["costs"] <= reference * (1 + tolerance))), r) for r in runs]
        hits = [(i, r) for i, r in hits if r["costs"][i] <= reference * (1 + tolerance)]
        if hits:
            return min(hits, key=lambda hit: hit[0])[1]
    return min(runs, key=lambda r: np.nanmin(r["costs"]))


def adam_case(path: Path, hyper: dict, reference: float, arguments) -> dict:
    """Every (learning rate, batch) pair; the best as a row like the L-BFGS runs'."""
    from streamae.training.evaluate import objective

    with __import__("h5py").File(path, "r") as handle:
        X = handle["patches"][...].astype(np.float32)

    def exact(theta: np.ndarray) -> float:
        return float(objective(X, theta, dtype="float32", **hyper).cost)

    runs = []
    for lr in [float(v) for v in arguments.adam_lrs.split(",")]:
        for batch in [int(v) for v in arguments.adam_batches.split(",")]:
            runs.append(adam_run(X, hyper, lr, batch, arguments.adam_epochs, exact))
            print(f"  adam lr {lr:g} batch {batch}: final J {runs[-1]['costs'][-1]:.6g}", flush=True)
    best = best_adam(runs, reference)
    epochs = np.arange(1, len(best["costs"]) + 1, dtype=np.float64)
    return {
        "name": f"Adam lr {best['lr']:g} batch {best['batch']}",
        "costs": best["costs"],
        "on_full": np.ones(len(epochs), dtype=bool),
        "passes": epochs,
        "seconds": best["seconds"],
        "final": float(best["costs"][-1]),
        "wall": float(best["seconds"][-1]),
        "finished": f"{len(epochs)} epochs (best of {len(runs)} runs)",
        "tried": [{"lr": r["lr"], "batch": r["batch"], "final": float(r["costs"][-1])} for r in runs],
    }


# --- one case ----------------------------------------------------------------------------


def summary(run: dict, reference: float) -> dict:
    """The row of one run: passes and seconds to 1% and 0.1% of ``reference``, final J."""
    row = {"run": run["name"], "final_J": run["final"], "ratio": run["final"] / reference}
    for tolerance in TOLERANCES:
        done, seconds = first_within(
            run["costs"], run["on_full"], run["passes"], run["seconds"], reference * (1 + tolerance)
        )
        row[f"passes_{tolerance:g}"], row[f"seconds_{tolerance:g}"] = done, seconds
    row["passes"] = float(run["passes"][-1]) if len(run["passes"]) else 0.0
    row["wall"] = run["wall"]
    row["finished"] = run["finished"]
    if "W1" in run and run["W1"].shape[1] == 64:
        row["orientation"] = float(np.median(orientation_coherence(run["W1"], (8, 8))))
    for key in ("stages", "tried"):
        if key in run:
            row[key] = run[key]
    return row


def one_case(case: str, patches: int, folder: Path, arguments) -> list[dict]:
    """(ii) the notes' run, (i) the defaults, (iii) Adam, on one case."""
    path = make_data(case, patches, folder, reuse=arguments.keep_data)
    hyper = HYPER[case]
    budget = {"max_iter": arguments.max_iter}
    # Compile the kernels (Numba's first call) before anything is timed.
    lbfgs_run("warm-up", path, folder / "warm-up.h5", {**hyper, "max_iter": 1, "warm_start": "none"})
    notes = lbfgs_run(
        "notes' run", path, folder / "notes.h5", {**hyper, **budget, "warm_start": "none", "tolerance": 0.0}
    )
    reference = notes["final"]
    runs = [lbfgs_run("defaults", path, folder / "defaults.h5", {**hyper, **budget}), notes]
    if not arguments.no_adam:
        runs.append(adam_case(path, hyper, reference, arguments))
    rows = [
        {"case": case, "m": patches if case == "photos" else 10_000, **summary(r, reference)} for r in runs
    ]
    for row in rows:
        print(json.dumps(row, default=float), flush=True)
    return rows


def show(value, form: str) -> str:
    return "never" if value is None else format(value, form)


def print_table(rows: list[dict]) -> None:
    header = [
        "case",
        "run",
        "passes to 1%",
        "to 0.1%",
        "s to 1%",
        "s to 0.1%",
        "final J / J400",
        "passes",
        "wall s",
    ]
    cells = [
        [
            r["case"],
            r["run"],
            show(r["passes_0.01"], ".1f"),
            show(r["passes_0.001"], ".1f"),
            show(r["seconds_0.01"], ".1f"),
            show(r["seconds_0.001"], ".1f"),
            f"{r['ratio']:.5f}",
            f"{r['passes']:.1f}",
            f"{r['wall']:.1f}",
        ]
        for r in rows
    ]
    print(table(cells, header))


# --- out of core -------------------------------------------------------------------------


def drop_cached(path: Path) -> str:
    """Drop ``path``'s pages from the page cache; says how.

    ``posix_fadvise(DONTNEED)`` drops this file's clean pages only (no root needed, and
    other work on the host keeps its cache); the data file was written and closed.
    """
    with open(path, "rb") as handle:
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return "posix_fadvise(DONTNEED)"


CHILD = """
import json, resource, sys, time
import streamae.runtime
from streamae.training.session import train
streamae.runtime.configure()  # as the command line does, before the kernels are defined
started = time.perf_counter()
model = train(sys.argv[1], sys.argv[2], force=True, stop_signals=False)
print(json.dumps({"wall": time.perf_counter() - started, "finished": model.info["finished"],
    "evaluations": model.info["evaluations"], "cost": model.info["cost"],
    "time_split": model.info.get("time_split"), "stages": model.info["warm_start"]["stages"],
    "history": {k: list(map(float, v)) for k, v in model.history.items()},
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def cold_evaluation(path: Path) -> float:
    """Seconds of one single-pass evaluation with the file's pages dropped first."""
    from streamae.compute.parameters import Hyperparameters, initialize
    from streamae.compute.schemes import make_objective
    from streamae.io.readpolicy import open_patches

    with open_patches(path) as source:
        objective = make_objective(source, Hyperparameters(), n_visible=64, scheme="single-pass")
        theta = initialize(64, 25, 0)
        objective(theta)  # compiles the kernels (and warms the cache: dropped below)
        drop_cached(path)
        started = time.perf_counter()
        objective(theta)
        seconds = time.perf_counter() - started
        getattr(objective, "close", lambda: None)()
    return seconds


def more_iterations(path: Path, model_path: Path, iterations: int = 50) -> tuple[float, float]:
    """J of the model and J after ``iterations`` more plain full-data L-BFGS iterations."""
    from streamae.compute.lbfgs import StopRules, minimize
    from streamae.compute.parameters import Hyperparameters
    from streamae.compute.schemes import make_objective
    from streamae.io.modelfile import load_model
    from streamae.io.readpolicy import open_patches

    theta = load_model(model_path).theta
    with open_patches(path) as source:
        objective = make_objective(source, Hyperparameters(), n_visible=64, scheme="single-pass")
        evaluation = objective(theta)

        def fun(x):
            found = objective(x)
            return found.cost, found.gradient

        state = minimize(fun, theta, StopRules(max_iter=iterations, grad_tol=0.0, progress_tol=0.0))
        getattr(objective, "close", lambda: None)()
    return float(evaluation.cost), float(state.f)


def out_of_core(rows: int, folder: Path, skip_more: str, keep: bool) -> list[dict]:
    """The default run on ``rows`` photo patches stored as float32 and as float16.

    ``skip_more``: the storages ("float32,float16") whose 50 more iterations are skipped;
    ``keep``: reuse data files this script wrote into ``folder`` before, and keep them.
    """
    from streamae.training.warmstart import full_data_passes

    results = []
    for storage in ("float32", "float16"):
        path = make_data("photos", rows, folder, storage, reuse=keep)
        cold = cold_evaluation(path)
        how = drop_cached(path)
        model_path = folder / f"ooc-{storage}.h5"
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(path), str(model_path)],
            capture_output=True,
            text=True,
            check=True,
        )
        child = json.loads(done.stdout.strip().splitlines()[-1])
        m = rows
        history = {k: np.asarray(v) for k, v in child.pop("history").items()}
        row = {
            "storage": storage,
            "rows": rows,
            "file_gib": path.stat().st_size / 2**30,
            "cold_evaluation_s": cold,
            "cache_dropped_by": how,
            "passes": float(full_data_passes(history, m)[-1]),
            **child,
        }
        if storage not in skip_more.split(","):
            row["J"], row["J_after_50_more"] = more_iterations(path, model_path)
            row["relative_fall_50_more"] = (row["J"] - row["J_after_50_more"]) / row["J"]
        print(json.dumps(row, default=float), flush=True)
        results.append(row)
        if not keep:
            path.unlink()
    if len(results) == 2:
        ratio = results[1]["cold_evaluation_s"] / results[0]["cold_evaluation_s"]
        print(f"cold evaluation float16 / float32: {ratio:.2f}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="photos,mnist")
    parser.add_argument("--patches", type=float, default=1e6, help="photo patches")
    parser.add_argument("--max-iter", type=int, default=400, help="the notes' 400 (smaller: a smoke run)")
    parser.add_argument("--adam-lrs", default="1e-3,3e-3,1e-2,3e-2")
    parser.add_argument("--adam-batches", default="1024,4096")
    parser.add_argument("--adam-epochs", type=int, default=40)
    parser.add_argument("--no-adam", action="store_true", help="skip (iii) (PyTorch not installed)")
    parser.add_argument("--out-of-core", type=float, default=0, help="rows of the out-of-core runs (0: none)")
    parser.add_argument(
        "--skip-more",
        default="",
        help="out of core: skip the 50 more iterations for these storages (float32,float16)",
    )
    parser.add_argument("--keep-data", action="store_true", help="reuse and keep the data files in --scratch")
    parser.add_argument(
        "--scratch", default=None, help="folder for the data files (default: a temporary one)"
    )
    parser.add_argument("--json", default=None)
    arguments = parser.parse_args()
    host = print_host()
    report = {"host": host, "machine": machine(), "command": " ".join(sys.argv)}
    report.update(rows=[], out_of_core=[])
    if arguments.keep_data and not arguments.scratch:
        parser.error("--keep-data needs --scratch")
    with contextlib.ExitStack() as stack:
        if arguments.keep_data:
            folder = Path(arguments.scratch)
        else:
            temporary = tempfile.TemporaryDirectory(prefix="bench-ttm-", dir=arguments.scratch)
            folder = Path(stack.enter_context(temporary))
        for case in [c for c in arguments.cases.split(",") if c]:
            report["rows"] += one_case(case, int(arguments.patches), folder, arguments)
        if report["rows"]:
            print_table(report["rows"])
        if arguments.out_of_core:
            report["out_of_core"] = out_of_core(
                int(arguments.out_of_core), folder, arguments.skip_more, arguments.keep_data
            )
    report["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"results: {save_json(report, arguments.json, 'time_to_model')}")


if __name__ == "__main__":
    main()
