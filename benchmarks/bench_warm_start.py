"""Warm start against the notes' run: full-data evaluations to reach the notes' J.

For each case the notes' run (``warm_start="none"``, ``max_iter`` iterations) sets the
reference J*; then the same training with a warm start.  From each run's ``/history``
(one entry per iteration, with its stage, its sample's rows and the running count of
evaluations) it counts the **full-data evaluations**: every evaluation on a sample of
r rows counts r/m.  That count is the primary figure (independent of the hardware and
of the other work on a shared host); wall times are secondary.

Reported per run: full-data evaluations and seconds to reach a full-data J within 1% and
within 0.1% of J*, and the final J after the full ``max_iter`` full-data iterations.
The warm-started model's features are checked for orientation (photographs: the demo's
test, median structure-tensor coherence of the 8x8 filters).

Cases: ``photos`` (m patches of 8x8 from the shipped photographs, UFLDL normalisation,
the notes' defaults) and ``mnist`` (the MNIST test digits kept for the tests, whole
28x28 digits scaled to [0, 1], 784 -> 196, lambda 3e-3, beta 3, rho 0.1).

    python benchmarks/bench_warm_start.py --cases photos --patches 1e6
    python benchmarks/bench_warm_start.py --cases mnist --schedules auto,2000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from common import orientation_coherence, print_host

from streamae.demo import shipped_images
from streamae.extraction.pipeline import extract
from streamae.training.session import train

REPO = Path(__file__).resolve().parent.parent
MNIST = REPO / "streamae" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"
TOLERANCES = (0.01, 0.001)


def full_evaluations(history: dict, n_rows: int) -> np.ndarray:
    """Cumulative full-data evaluations at the end of each iteration (rows / m each)."""
    evaluations = np.asarray(history["evaluations"], dtype=np.float64)
    fractions = np.asarray(history["sample_rows"], dtype=np.float64) / n_rows
    return np.cumsum(np.diff(evaluations, prepend=0.0) * fractions)


def reached(history: dict, n_rows: int, target: float) -> tuple[float | None, float | None, int | None]:
    """(full evaluations, seconds, iteration) when a full-data J first is ≤ ``target``."""
    cost = np.asarray(history["cost"])
    on_full = np.asarray(history["sample_rows"]) == n_rows
    hits = np.flatnonzero(on_full & (cost <= target))
    if hits.size == 0:
        return None, None, None
    index = int(hits[0])
    return float(full_evaluations(history, n_rows)[index]), float(history["seconds"][index]), index + 1


def make_data(case: str, patches: int, folder: Path) -> tuple[Path, dict]:
    """The case's patch file and its training options."""
    path = folder / f"{case}.h5"
    if case == "photos":
        images = sorted(str(p) for p in shipped_images().glob("*.png"))
        extract(images, path, patch_size=8, num_patches=patches, normalize="ufldl", seed=0, force=True)
        return path, {}
    extract([MNIST], path, patch_size=28, stride=28, normalize="unit", force=True)
    return path, {"hidden": 196, "lam": 3e-3, "beta": 3.0, "rho": 0.1}


def run(path: Path, out: Path, schedule: str, options: dict, max_iter: int) -> dict:
    started = time.perf_counter()
    # Checkpoints only at the end: for 784 -> 196 each one writes the L-BFGS pairs
    # (100 x p x 16 bytes, 500 MB), which is not what is measured here.
    model = train(
        path, out, max_iter=max_iter, warm_start=schedule, force=True, checkpoint_every=0, **options
    )
    wall = time.perf_counter() - started
    n_rows = int(model.data["shape"][0])
    history = {name: np.asarray(values) for name, values in model.history.items()}
    stages = model.info["warm_start"]["stages"]
    return {
        "schedule": schedule,
        "stages": stages,
        "n_rows": n_rows,
        "final_cost": float(model.info["cost"]),
        "iterations": int(model.iterations),
        "full_evaluations": float(full_evaluations(history, n_rows)[-1]),
        "wall_seconds": wall,
        "history": history,
        "W1": model.W1,
        "patch_shape": model.patch_shape,
    }


def summarise(result: dict, reference: float) -> dict:
    row = {
        key: result[key] for key in ("schedule", "stages", "final_cost", "full_evaluations", "wall_seconds")
    }
    for tolerance in TOLERANCES:
        evaluations, seconds, iteration = reached(
            result["history"], result["n_rows"], reference * (1 + tolerance)
        )
        row[f"evals_{tolerance:g}"] = evaluations
        row[f"seconds_{tolerance:g}"] = seconds
        row[f"iteration_{tolerance:g}"] = iteration
    shape = result["patch_shape"]
    if shape is not None and shape[-1] == 1 and shape[0] == 8:
        row["orientation"] = float(np.median(orientation_coherence(result["W1"], shape[:2])))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="photos,mnist")
    parser.add_argument("--patches", default="1e6", help="photos: patches per file, comma-separated")
    parser.add_argument("--schedules", default="auto", help="warm-start schedules to compare with none")
    parser.add_argument("--max-iter", type=int, default=400)
    parser.add_argument("--json", type=Path, default=None)
    arguments = parser.parse_args()
    print_host()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as scratch:
        folder = Path(scratch)
        for case in arguments.cases.split(","):
            sizes = [int(float(v)) for v in arguments.patches.split(",")] if case == "photos" else [0]
            for size in sizes:
                path, options = make_data(case, size, folder)
                plain = run(path, folder / "none.h5", "none", options, arguments.max_iter)
                reference = plain["final_cost"]
                results = [plain] + [
                    run(path, folder / "warm.h5", schedule, options, arguments.max_iter)
                    for schedule in arguments.schedules.split(",")
                ]
                for result in results:
                    row = {"case": case, "m": result["n_rows"], **summarise(result, reference)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print()
    print(
        "| case | m | schedule | stages | full evals to 1% | to 0.1% | s to 1% | s to 0.1% "
        "| final J | all evals | wall s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:

        def show(value, form):
            return "never" if value is None else format(value, form)

        print(
            f"| {row['case']} | {row['m']:,} | {row['schedule']} | {row['stages']} | "
            f"{show(row['evals_0.01'], '.1f')} | {show(row['evals_0.001'], '.1f')} | "
            f"{show(row['seconds_0.01'], '.0f')} | {show(row['seconds_0.001'], '.0f')} | "
            f"{row['final_cost']:.6g} | {row['full_evaluations']:.1f} | {row['wall_seconds']:.0f} |"
        )
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
