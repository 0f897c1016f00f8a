"""The one-time compile is announced when Numba's cache is cold, and only then."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streamae.compute import compilecache


def test_a_warm_cache_says_nothing(tmp_path):
    import numpy as np
    from helpers import write_patch_file

    import streamae

    data = write_patch_file(tmp_path / "p.h5", np.full((40, 4), 0.5, dtype=np.float32), patch_shape=(2, 2, 1))
    streamae.train(data, None, hidden=2, max_iter=1, stop_signals=False)  # compiles (or loads) into the cache
    assert compilecache.kernels_cached() and compilecache.compile_notice() is None


@pytest.mark.slow
def test_a_cold_cache_is_announced_before_training(tmp_path):
    """In a fresh NUMBA_CACHE_DIR the notice comes before the first iteration, with its estimate."""
    import numpy as np
    from helpers import write_patch_file

    data = write_patch_file(tmp_path / "p.h5", np.full((40, 4), 0.5, dtype=np.float32), patch_shape=(2, 2, 1))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cold-cache")}
    executable = shutil.which("streamae") or str(Path(sys.executable).with_name("streamae"))
    command = [executable, "train", str(data), "-o", str(tmp_path / "m.h5")]
    first = subprocess.run(
        command + ["--hidden", "2", "--max-iter", "1"], env=env, capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr
    notice = f"compiling kernels, once per machine: ~{compilecache.COLD_COMPILE_SECONDS} s"
    lines = first.stderr.splitlines()
    assert notice in lines and lines.index(notice) < min(
        i for i, t in enumerate(lines) if t.startswith("iter ")
    )
    second = subprocess.run(
        command + ["--hidden", "2", "--max-iter", "1", "--force"], env=env, capture_output=True, text=True
    )
    assert second.returncode == 0 and notice not in second.stderr
