"""cli/main.py: ``streamae --help`` and ``streamae CMD --help`` load nothing heavy.

Heavy imports happen inside the commands; the group, the options' declarations and the
lazy package import none of Numba, h5py, SciPy (nor NumPy or llvmlite).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from streamae.cli.main import cli

HEAVY = ("numba", "h5py", "scipy", "llvmlite", "numpy", "matplotlib", "PIL")

PROGRAM = """
import json, sys
from streamae.cli.main import cli
try:
    cli.main(args={args!r}, prog_name="streamae", standalone_mode=False)
except SystemExit:
    pass
print(json.dumps([m for m in {heavy!r} if m in sys.modules]))
"""


@pytest.mark.parametrize("command", [None, *sorted(cli.commands)])
def test_help_imports_nothing_heavy(command):
    args = ["--help"] if command is None else [command, "--help"]
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(args=args, heavy=HEAVY)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    *shown, loaded = done.stdout.strip().splitlines()
    assert "Usage: streamae" in "\n".join(shown)
    assert json.loads(loaded) == []
