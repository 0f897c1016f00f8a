"""Fixtures and the ``--long`` option of the fault campaign (issue 7).

The plain helpers (running the CLI, checking a clean failure, guarding outputs) live in
``faultkit.py`` beside this file: a module with its own name, because every folder's
``conftest`` module is called ``conftest`` and importing from it by name is ambiguous.
This file turns them into fixtures and prints the campaign's figures at the end of the run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import write_patch_file
from PIL import Image

from .faultkit import FIGURES, OutputGuard, write_model


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--long``: more kill moments than CI runs (``python -m pytest tests/faults --long``)."""
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="fault campaign: run many more seeded SIGKILL moments per command",
    )


@pytest.fixture
def long_run(request: pytest.FixtureRequest) -> bool:
    """True when ``--long`` was given (the option exists only when this folder is a test path)."""
    return bool(request.config.getoption("long", default=False))


@pytest.fixture
def good_patches(tmp_path: Path) -> Path:
    """A valid 8x8 patch file: 300 rows in [0.1, 0.9], chunks of 64 rows."""
    data = np.random.default_rng(7).uniform(0.1, 0.9, size=(300, 64)).astype(np.float32)
    return write_patch_file(tmp_path / "patches.h5", data, chunk_rows=64, patch_shape=(8, 8, 1))


@pytest.fixture
def good_model(tmp_path: Path) -> Path:
    """A valid model file for 8x8 gray patches with 9 hidden units."""
    return write_model(tmp_path / "model.h5", n=64, s=9, patch_shape=(8, 8, 1))


@pytest.fixture
def inputs(tmp_path: Path, good_patches: Path, good_model: Path) -> dict[str, Path]:
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (32, 32), dtype=np.uint8)).save(image)
    return {"patches": good_patches, "model": good_model, "image": image}


@pytest.fixture
def guard(tmp_path: Path) -> OutputGuard:
    """An existing output ``old-output.h5`` whose bytes and mtime every failure must keep."""
    return OutputGuard.create(tmp_path / "old-output.h5")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Print the figures issue 7 asks for: cases per command, kills, resumes."""
    lines = FIGURES.summary_lines()
    if lines:
        terminalreporter.section("fault campaign figures")
        for line in lines:
            terminalreporter.write_line(line)
