"""streamae.runtime.process.configure and the package's import: nothing changes until asked.

Each check runs in a fresh interpreter (the test process itself was configured by
conftest.py), with the environment it starts with compared to the one it ends with.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = ("numba", "h5py", "scipy", "llvmlite", "numpy")
SETTINGS = ("NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME", "OMP_WAIT_POLICY", "NUMBA_NUM_THREADS")


def _run(code: str, **env_changes: str | None) -> dict:
    """Run ``code`` (which fills the dict ``out``) in a new interpreter; ``out`` as JSON."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    for name, value in env_changes.items():
        if value is not None:
            env[name] = value
    program = "import json, os, sys\nout = {}\n" + code + "\nprint(json.dumps(out))"
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_streamae_changes_nothing_and_loads_nothing_heavy():
    out = _run(
        "before = dict(os.environ)\n"
        "import streamae\n"
        "out['changed'] = sorted(set(os.environ.items()) ^ set(before.items()))\n"
        "out['heavy'] = [m for m in " + repr(HEAVY) + " if m in sys.modules]\n"
        "out['features'] = os.environ.get('NUMBA_CPU_FEATURES')\n"
        "out['names'] = sorted(n for n in streamae.__all__ if n not in dir(streamae))",
        NUMBA_NUM_THREADS="lots",  # a bad value is left where it is until configure()
    )
    assert out == {"changed": [], "heavy": [], "features": None, "names": []}


def test_a_public_function_configures_before_its_kernels_are_defined():
    out = _run(
        "from streamae import train\n"
        "import streamae.runtime as r\n"
        "out['configured'] = r.process.configured() is not None\n"
        "out['wait'] = os.environ.get('OMP_WAIT_POLICY')"
    )
    assert out["configured"] and out["wait"] == "PASSIVE"
    kept = _run(
        "import streamae\nstreamae.objective\nout['wait'] = os.environ['OMP_WAIT_POLICY']",
        OMP_WAIT_POLICY="ACTIVE",
    )
    assert kept == {"wait": "ACTIVE"}


def test_configure_is_idempotent_and_says_what_it_set():
    out = _run(
        "import streamae.runtime as r\n"
        "first = r.configure(); second = r.configure(full_width=False)\n"
        "out['same'] = first is second\n"
        "out['set'] = first.set\n"
        "out['removed'] = list(first.removed)\n"
        "out['lines'] = first.lines()\n"
        "out['threads'] = os.environ.get('NUMBA_NUM_THREADS')",
        NUMBA_NUM_THREADS="0",
    )
    assert out["same"] and out["set"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert out["removed"] == ["NUMBA_NUM_THREADS"] and out["threads"] is None
    assert "set OMP_WAIT_POLICY=PASSIVE" in out["lines"]
    assert any(
        line.startswith("ignored: the environment variable NUMBA_NUM_THREADS is 0") for line in out["lines"]
    )


def test_full_width_can_be_declined():
    out = _run(
        "import streamae.runtime as r\nd = r.configure(full_width=False)\n"
        "out['features'] = os.environ.get('NUMBA_CPU_FEATURES')\nout['notes'] = list(d.notes)"
    )
    assert out["features"] is None and "not asked for" in out["notes"][-1]
