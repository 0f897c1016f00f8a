"""Which tanh settings learn the notes' edges?  Orientation coherence of the learned units.

Trains 25 tanh (and, for reference, sigmoid) units on the shipped photographs' 8x8 patches
(10,000, the notes' normalisation) for 400 iterations of the notes' run (no warm start, no
relative-progress stop) at several rho and lambda, and prints per run the median over units
of the orientation coherence (lambda1 - lambda2)/(lambda1 + lambda2) of each unit's gradient
structure tensor (1: a pure straight edge or bar, 0: a dot or noise; the demo's sigmoid
units score > 0.6, random initial weights < 0.3), the share of units above 0.6, and the
median roughness (the squared discrete Laplacian of a unit's 8x8 weights over their
variance: high for pixel noise).  Counts and J values only, no timing::

    python benchmarks/tanh_edges.py --workdir /tmp/tanh
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import orientation_coherence

import streamae


def roughness(W1: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Per unit, Σ (discrete Laplacian)² over the interior / Σ (w − mean)²: pixel noise scores high."""
    values = []
    for weights in W1:
        p = weights.reshape(shape)
        laplacian = 4 * p[1:-1, 1:-1] - p[:-2, 1:-1] - p[2:, 1:-1] - p[1:-1, :-2] - p[1:-1, 2:]
        values.append(np.sum(laplacian**2) / np.sum((p - p.mean()) ** 2))
    return np.array(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--max-iter", type=int, default=400)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.workdir / "photos.h5"
    if not data.exists():
        images = Path(streamae.__file__).parent / "data" / "images"
        streamae.extract([images], data, patch_size=8, num_patches=10_000)
    runs = [("sigmoid", 0.01, 1e-4)] + [
        ("tanh", rho, lam) for lam in (1e-4, 3e-4, 5e-4, 1e-3) for rho in (0.01, 0.03, 0.1, 0.3)
    ]
    print("activation   rho     lambda  J         median_coherence  units>0.6  roughness  mean_rho_hat")
    for activation, rho, lam in runs:
        # The notes' run, as the figures in docs/exercises.md were measured: all max_iter
        # iterations on the full data (no warm start, no relative-progress stop).
        model = streamae.train(
            data, None, hidden=25, rho=rho, lam=lam, activation=activation, max_iter=args.max_iter,
            warm_start="none", tolerance=0.0, stop_signals=False,
        )  # fmt: skip
        coherence = orientation_coherence(model.W1, (8, 8))
        rough = np.median(roughness(model.W1, (8, 8)))
        print(
            f"{activation:<10} {rho:5.2f}  {lam:8.0e}  {model.info['cost']:.5f}  {np.median(coherence):16.3f}"
            f"  {np.mean(coherence > 0.6):9.0%}  {rough:9.3f}  {model.rho_hat.mean():+.3f}"
        )


if __name__ == "__main__":
    main()
