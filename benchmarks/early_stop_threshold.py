"""Replay the early-stop rule on a recorded held-out curve, for several minimum improvements.

Train once without early stopping, validating every iteration, e.g.::

    streamae train photos.h5 -o m.h5 --max-iter 400 --tolerance 0 --validation-fraction 0.1
    python benchmarks/early_stop_threshold.py m.h5 --patience 5

For each min_improvement it prints where the rule (training/validation.py's) would stop,
the kept iteration, its held-out J and how far that is above the lowest held-out J of the
whole run.  Counts and J values only: no timing, so it can be run on a loaded machine.
"""

from __future__ import annotations

import argparse

import numpy as np

from streamae.io.modelfile import load_model
from streamae.training.validation import Validation


def replay(costs: np.ndarray, patience: int, min_improvement: float) -> tuple[int, int, float]:
    """(stopping validation's iteration or the last, kept iteration, kept held-out J)."""
    from types import SimpleNamespace

    values = iter(costs)

    def evaluate(theta):
        cost = float(next(values))
        return SimpleNamespace(
            cost=cost, reconstruction=cost, weight_decay=0.0, sparsity=0.0, rho_hat=np.zeros(1)
        )

    rule = Validation(evaluate, early_stop=patience, min_improvement=min_improvement)
    for iteration in range(len(costs)):
        if rule.after_iteration(iteration, np.zeros(1), {}) is not None:
            return iteration, rule.best_iteration, rule.best_cost
    return len(costs) - 1, rule.best_iteration, rule.best_cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--thresholds", default="0,1e-5,1e-4,3e-4,1e-3,3e-3,1e-2")
    args = parser.parse_args()
    model = load_model(args.model)
    iterations = model.validation["iteration"].astype(int)
    costs = model.validation["cost"]
    assert np.array_equal(iterations, np.arange(len(costs))), "validate every iteration"
    lowest = costs.min()
    where = int(np.argmin(costs))
    print(f"{args.model}: {len(costs) - 1} iterations, lowest held-out J {lowest:.6g} at {where}")
    print("min_improvement  stops_at  kept  held-out_J  above_lowest")
    for threshold in (float(t) for t in args.thresholds.split(",")):
        stop, kept, cost = replay(costs, args.patience, threshold)
        print(f"{threshold:>15g}  {stop:8d}  {kept:4d}  {cost:.6g}  {cost / lowest - 1:.3%}")


if __name__ == "__main__":
    main()
