"""Training end to end: the notes' exercise against SciPy, and memory flat in m."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import IMAGES_DIR, write_large_patch_file, write_patch_file
from naive import dense_objective, notes_normalize, sample_gray_patches
from PIL import Image
from scipy.optimize import minimize as scipy_minimize

import streamae
from streamae.compute.parameters import initialize


@pytest.fixture(scope="module")
def notes_exercise_file(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """10,000 8x8 gray patches from the shipped photographs, normalised as the notes do."""

    images = [
        np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0
        for path in sorted(IMAGES_DIR.glob("*.png"))
    ]
    patches = notes_normalize(sample_gray_patches(images, 10_000, 8, seed=0))
    path = tmp_path_factory.mktemp("notes") / "patches.h5"
    write_patch_file(path, patches.astype(np.float32), chunk_rows=2048, patch_shape=(8, 8, 1))
    return path, patches


@pytest.mark.slow
def test_notes_exercise_matches_scipy_lbfgsb(notes_exercise_file, tmp_path):
    path, patches = notes_exercise_file
    # The notes' run, 400 iterations: no warm start, no relative-progress stop.
    model = streamae.train(path, tmp_path / "model.h5", warm_start="none", tolerance=0.0)

    theta0 = initialize(64, 25, seed=0)
    reference = scipy_minimize(
        lambda theta: dense_objective(theta, patches, hidden=25)[:2],
        theta0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 400, "maxcor": 100},
    )
    final_cost = model.info["cost"]
    assert abs(final_cost - reference.fun) / reference.fun < 0.02
    assert abs(model.rho_hat.mean() - 0.01) < 0.005
    # The model's final J is the dense J at its parameters (float32 compute, float64 sums).
    assert dense_objective(model.theta, patches, hidden=25)[0] == pytest.approx(final_cost, rel=1e-4)
    assert model.iterations == 400


def test_python_api_objective_matches_dense(rng):
    X = rng.uniform(0, 1, size=(300, 16))
    theta = initialize(16, 4, seed=2)
    evaluation = streamae.objective(X, theta, hidden=4, block_rows=7)
    J, grad, _ = dense_objective(theta, X, hidden=4)
    assert evaluation.cost == pytest.approx(J, rel=1e-12)
    np.testing.assert_allclose(evaluation.gradient, grad, rtol=1e-10, atol=1e-14)


def test_python_api_train_and_load_model_agree(patch_file, unit_patches, tmp_path):
    path = patch_file(unit_patches)
    model = streamae.train(path, tmp_path / "m.h5", hidden=6, max_iter=4, dtype="float64")
    loaded = streamae.load_model(tmp_path / "m.h5")
    np.testing.assert_array_equal(model.theta, loaded.theta)
    assert loaded.hyper == model.hyper and loaded.iterations == 4
    np.testing.assert_array_equal(loaded.history["cost"], model.history["cost"])
    np.testing.assert_array_equal(loaded.rho_hat, model.rho_hat)


def _peak_rss_mib(arguments: list[str]) -> float:
    """Peak resident memory (MiB) of a command run in a child process."""
    probe = (
        "import resource, subprocess, sys\n"
        "code = subprocess.run(sys.argv[1:]).returncode\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"
        "sys.exit(code)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe, *arguments], capture_output=True, text=True, timeout=900
    )
    assert completed.returncode == 0, completed.stderr
    return float(completed.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_memory_does_not_grow_with_the_data(tmp_path):
    small, large = tmp_path / "small.h5", tmp_path / "large.h5"
    write_large_patch_file(small, 20_000, chunk_rows=16384)
    write_large_patch_file(large, 2_000_000, chunk_rows=16384)
    executable = str(Path(sys.executable).with_name("streamae"))
    peaks = {}
    for name, path in (("small", small), ("large", large)):
        peaks[name] = _peak_rss_mib(
            [
                executable,
                "train",
                str(path),
                "-o",
                str(tmp_path / f"{name}-model.h5"),
                "--max-iter",
                "2",
                "--quiet",
                # The streaming scheme: in-core (auto's pick when the data fits
                # --memory-budget) holds the data in memory by design.
                "--scheme",
                "single-pass",
            ]
        )
    print(f"peak RSS: 20,000 x 64 -> {peaks['small']:.0f} MiB; 2,000,000 x 64 -> {peaks['large']:.0f} MiB")
    assert peaks["large"] - peaks["small"] < 100


def test_python_api_trains_tanh_units(patch_file, unit_patches, tmp_path):
    path = patch_file(unit_patches)
    model = streamae.train(path, tmp_path / "m.h5", hidden=6, max_iter=5, dtype="float64", activation="tanh")
    loaded = streamae.load_model(tmp_path / "m.h5")
    assert loaded.activation == "tanh" and loaded.hyper == model.hyper
    settings = {"hidden": 6, "rho": model.hyper.rho, "beta": model.hyper.beta, "lam": model.hyper.lam}
    J, _, _ = dense_objective(loaded.theta, unit_patches, **settings, activation="tanh")
    assert loaded.history["cost"][-1] == pytest.approx(J, rel=1e-10)
    assert loaded.history["cost"][-1] < loaded.history["cost"][0]
    W1, b1 = loaded.W1, loaded.b1
    np.testing.assert_allclose(loaded.rho_hat, np.tanh(unit_patches @ W1.T + b1).mean(axis=0), rtol=1e-10)
    evaluation = streamae.objective(unit_patches, loaded.theta, **settings, activation="tanh", block_rows=9)
    assert evaluation.cost == pytest.approx(J, rel=1e-12)
