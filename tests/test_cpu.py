"""streamae.runtime.cpu: full-width vectors on AVX-512 hosts, the user's settings kept."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from streamae.runtime.cpu import NO_NARROW_PREFERENCE, full_width_features, prefer_full_width

AVX512_HOST = "+sse2,+avx,+avx2,+fma,+avx512f,+avx512bw,-amx-tile"
AVX2_HOST = "+sse2,+avx,+avx2,+fma,-avx512f,-avx512bw"


def _host_has_avx512() -> bool:
    import llvmlite.binding as llvm

    return "+avx512f" in llvm.get_host_cpu_features().flatten().split(",")


def test_an_avx512_host_keeps_its_features_and_drops_the_256_bit_preference():
    features = full_width_features(AVX512_HOST + ",+prefer-256-bit")
    assert features is not None
    listed = features.split(",")
    assert listed[-1] == NO_NARROW_PREFERENCE
    assert "+prefer-256-bit" not in listed
    assert listed[:-1] == AVX512_HOST.split(",")


def test_a_host_without_avx512_is_left_alone():
    environ: dict[str, str] = {}
    assert full_width_features(AVX2_HOST) is None
    assert prefer_full_width(environ, host_features=AVX2_HOST) is False
    assert environ == {}


def test_it_sets_numba_cpu_features_on_an_avx512_host():
    environ: dict[str, str] = {"PATH": "/bin"}
    assert prefer_full_width(environ, host_features=AVX512_HOST) is True
    assert environ["NUMBA_CPU_FEATURES"] == AVX512_HOST + "," + NO_NARROW_PREFERENCE
    assert environ["PATH"] == "/bin"


@pytest.mark.parametrize("variable", ["NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES"])
def test_the_users_own_cpu_setting_wins(variable):
    environ = {variable: "generic"}
    assert prefer_full_width(environ, host_features=AVX512_HOST) is False
    assert environ == {variable: "generic"}


def _fresh(code: str, **extra_env: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")}
    env.update(extra_env)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.mark.parametrize("numba_first", [False, True], ids=["streamae first", "numba first"])
def test_importing_streamae_configures_numba(numba_first):
    code = (
        "import numba\n" if numba_first else ""
    ) + "import streamae, numba.core.config as c\nprint(c.CPU_FEATURES or '')"
    features = _fresh(code)
    if _host_has_avx512():
        assert features.split(",")[-1] == NO_NARROW_PREFERENCE
    else:
        assert features == ""


def test_a_users_numba_cpu_features_reach_numba_unchanged():
    code = "import streamae, numba.core.config as c\nprint(c.CPU_FEATURES)"
    assert _fresh(code, NUMBA_CPU_FEATURES="+sse2") == "+sse2"


def test_compiled_loops_use_512_bit_registers_on_an_avx512_host():
    if not _host_has_avx512():
        pytest.skip("this CPU has no AVX-512: there is no wider vector to prefer")
    code = """
import numpy as np, streamae
from numba import njit

@njit(cache=False, fastmath=True)
def scale(x, out):
    for i in range(x.shape[0]):
        out[i] = np.float32(2.0) * x[i] + np.float32(1.0)

x = np.ones(1024, dtype=np.float32)
scale(x, np.empty_like(x))
asm = scale.inspect_asm(scale.signatures[0])
# Arithmetic on 512-bit registers (moves and zeroing appear either way).
lines = [line for line in asm.splitlines() if 'zmm' in line]
wide = ('vfmadd' in line or 'vmulps' in line or 'vaddps' in line for line in lines)
print(sum(wide))
"""
    assert int(_fresh(code)) > 0
    # And the check itself can fail: with the user's (host) features, LLVM keeps 256 bits.
    import llvmlite.binding as llvm

    host = llvm.get_host_cpu_features().flatten()
    assert int(_fresh(code, NUMBA_CPU_FEATURES=host)) == 0
