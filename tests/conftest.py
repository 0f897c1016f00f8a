"""Fixtures shared by the test modules: shipped data, patch-file and model-file factories.

Plain functions the fixtures build on live in ``helpers.py``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# The test process is configured as the command line configures its own (thread
# variables, OMP_WAIT_POLICY, full-width vectors), before any kernel module is imported.
# Calibrations (compute/calibration.py) go to a folder of this session, never the user's
# cache; subprocesses inherit it.
from streamae.runtime import configure

configure()
CALIBRATION_DIR = tempfile.mkdtemp(prefix="streamae-test-calibration-")
os.environ["STREAMAE_CACHE_DIR"] = CALIBRATION_DIR


import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import IMAGES_DIR, MNIST_IMAGES, write_patch_file  # noqa: E402

from streamae.compute import calibration  # noqa: E402


def tied_timings(scheme, n_visible, n_hidden, dtype, rows) -> dict:
    """A stopwatch that finds every arm equally fast (so "auto" takes BLAS)."""
    return {arm: [1e-3] * calibration.ROUNDS for arm in calibration.ARMS}


@pytest.fixture(autouse=True)
def steady_calibration(request, monkeypatch):
    """products="auto" in tests: the real decision and cache, with tied timings.

    Timing every layer size the tests build, on a host that other jobs load, would add
    minutes and make the path a test takes depend on the load; the paths themselves are
    each tested (tests/test_small.py), and tests marked ``calibration`` keep the real
    stopwatch (tests/test_calibration.py).
    """
    if request.node.get_closest_marker("calibration") is None:
        monkeypatch.setattr(calibration, "measure", tied_timings)


def pytest_sessionfinish(session, exitstatus) -> None:
    if os.environ.get("STREAMAE_TEST_KEEP_CALIBRATION"):
        print(f"\ncalibrations kept in {CALIBRATION_DIR}")
        return
    shutil.rmtree(CALIBRATION_DIR, ignore_errors=True)


@pytest.fixture
def images_dir() -> Path:
    """The folder of real photographs that ships inside the package."""
    return IMAGES_DIR


@pytest.fixture
def mnist_images() -> Path:
    """The MNIST test-set images (idx3, gzip) kept for the tests."""
    return MNIST_IMAGES


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator; each test gets its own, nothing is seeded globally."""
    return np.random.default_rng(12345)


@pytest.fixture
def patch_file(tmp_path: Path):
    """Factory: ``patch_file(data, chunk_rows=..., name=...)`` writes a patch file under tmp_path."""

    def make(data: np.ndarray, *, name: str = "patches.h5", **options) -> Path:
        return write_patch_file(tmp_path / name, data, **options)

    return make


@pytest.fixture
def unit_patches(rng: np.random.Generator) -> np.ndarray:
    """(1000, 64) float32 values in [0.1, 0.9], shaped like the notes' 8x8 patches."""
    return rng.uniform(0.1, 0.9, size=(1000, 64)).astype(np.float32)


def write_model_file(
    path: Path,
    W1: np.ndarray,
    *,
    W2: np.ndarray | None = None,
    b1: np.ndarray | None = None,
    b2: np.ndarray | None = None,
    patch_shape: tuple[int, ...] | None = None,
    rho: float = 0.01,
    beta: float = 3.0,
    decoder: str = "sigmoid",
    activation: str = "sigmoid",
    history: dict | None = None,
    rho_hat: np.ndarray | None = None,
) -> Path:
    """Write a model file with the given W1 (s, n); other weights default to zeros."""
    from streamae.compute.parameters import Hyperparameters
    from streamae.io.modelfile import Model, write_model

    s, n = W1.shape
    model = Model(
        W1=np.asarray(W1, dtype=np.float64),
        W2=np.zeros((n, s)) if W2 is None else W2,
        b1=np.zeros(s) if b1 is None else b1,
        b2=np.zeros(n) if b2 is None else b2,
        hyper=Hyperparameters(hidden=s, rho=rho, beta=beta, decoder=decoder, activation=activation),
        patch_shape=patch_shape,
        iterations=len(history["cost"]) if history else 0,
        history=history or {},
        rho_hat=rho_hat,
        data={"path": "planted", "shape": [0, n], "dtype": "float32"},
    )
    return write_model(path, model, force=True)


@pytest.fixture
def model_file(tmp_path: Path):
    """Factory: ``model_file(W1, name=..., **options)`` writes a planted model under tmp_path."""

    def make(W1: np.ndarray, *, name: str = "model.h5", **options) -> Path:
        return write_model_file(tmp_path / name, W1, **options)

    return make
