"""streamae.runtime.cpu and configure(): full-width vectors where available and asked for.

What holds on every host is checked on every host: the CPUs are named to Numba
(``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES``, or llvmlite's reading of the host replaced in a
subprocess), so the Intel cores LLVM tunes for 256 bits and AMD's Zen 4, which it does
not, are both checked wherever the suite runs.  Code is compiled and read, never run.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from streamae.runtime.cpu import NO_NARROW_PREFERENCE, full_width_features, prefer_full_width

AVX512_HOST = "+sse2,+avx,+avx2,+fma,+avx512f,+avx512bw,-amx-tile"
AVX2_HOST = "+sse2,+avx,+avx2,+fma,-avx512f,-avx512bw"


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


# The CPUs the tests compile for, as (NUMBA_CPU_NAME, whether LLVM tunes it to prefer
# 256-bit vectors).  The features name AVX-512 explicitly so the CPU name's own feature
# set applies on any host; nothing compiled for them is run, only read, so the tests hold
# on a host without AVX-512 too.
TARGETS = {
    "Intel Sapphire Rapids": ("sapphirerapids", True),
    "Intel Emerald Rapids": ("emeraldrapids", True),
    "AMD Zen 4": ("znver4", False),
}
AVX512_FEATURES = "+avx,+avx2,+fma,+f16c,+avx512f,+avx512vl,+avx512bw,+avx512dq,+avx512cd"

# Pretend, inside a subprocess, that the host is another CPU: llvmlite's reading of the
# host is what configure() and Numba's code generator consult.
FAKE_HOST = """
import llvmlite.binding as llvm

class _Features:
    def flatten(self):
        return {features!r}

llvm.get_host_cpu_name = lambda: {name!r}
llvm.get_host_cpu_features = lambda: _Features()
"""


def _fresh(code: str, **extra_env: str) -> str:
    """Run ``code`` in a new interpreter without the user's CPU settings; its stdout."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")}
    env.update(extra_env)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


WIDTH = "from streamae.runtime.host import vector_bits\nprint(vector_bits())"


@pytest.mark.parametrize("target", TARGETS)
def test_full_width_vectors_are_used_where_asked_for(target):
    name, _ = TARGETS[target]
    features = AVX512_FEATURES + "," + NO_NARROW_PREFERENCE
    assert _fresh(WIDTH, NUMBA_CPU_NAME=name, NUMBA_CPU_FEATURES=features) == "512"


@pytest.mark.parametrize("target", TARGETS)
def test_without_asking_each_cpu_gets_llvms_own_width(target):
    name, prefers_256 = TARGETS[target]
    width = _fresh(WIDTH, NUMBA_CPU_NAME=name, NUMBA_CPU_FEATURES=AVX512_FEATURES)
    assert width == ("256" if prefers_256 else "512")


@pytest.mark.parametrize("target", TARGETS)
def test_configure_asks_for_full_width_on_an_avx512_host(target):
    name, prefers_256 = TARGETS[target]
    if not prefers_256:
        pytest.skip(f"{target} has no 256-bit preference to override: LLVM uses 512 bits anyway")
    code = FAKE_HOST.format(name=name, features=AVX512_FEATURES) + (
        "import os, streamae.runtime as r\n"
        "done = r.configure()\n"
        "from streamae.runtime.host import vector_bits\n"
        "print(done.set.get('NUMBA_CPU_FEATURES', '').split(',')[-1], vector_bits())"
    )
    assert _fresh(code).split() == [NO_NARROW_PREFERENCE, "512"]


def test_streamaes_kernels_use_full_width_vectors_when_configured(tmp_path):
    name, _ = TARGETS["Intel Sapphire Rapids"]
    code = FAKE_HOST.format(name=name, features=AVX512_FEATURES) + (
        "import streamae.runtime as r\n"
        "r.configure()\n"
        "from numba import types\n"
        "from streamae.compute.small import rows_product\n"
        "matrix, vector = types.float32[:, ::1], types.float32[::1]\n"
        "signature = (matrix, matrix, vector, matrix)\n"
        "rows_product.compile(signature)\n"
        "from streamae.runtime.host import widest_arithmetic\n"
        "print(widest_arithmetic(rows_product.inspect_asm(signature)))"
    )
    assert _fresh(code, NUMBA_CACHE_DIR=str(tmp_path)) == "512"


def test_on_this_host_configure_gives_the_widest_vectors_it_has():
    import llvmlite.binding as llvm

    if "+avx512f" not in llvm.get_host_cpu_features().flatten().split(","):
        pytest.skip("this CPU has no AVX-512: there is no wider vector to ask for")
    code = "import streamae.runtime as r\nr.configure()\n" + WIDTH
    assert _fresh(code) == "512"


@pytest.mark.parametrize("numba_first", [False, True], ids=["streamae first", "numba first"])
def test_configure_reaches_numba_imported_before_it(numba_first):
    code = FAKE_HOST.format(name="sapphirerapids", features=AVX512_FEATURES) + (
        ("import numba\n" if numba_first else "")
        + "import streamae, streamae.runtime as r\nr.configure()\n"
        + "import numba.core.config as c\nprint(c.CPU_FEATURES)"
    )
    assert _fresh(code) == AVX512_FEATURES + "," + NO_NARROW_PREFERENCE


def test_configure_after_a_numba_function_was_defined_leaves_the_features_and_says_so():
    code = FAKE_HOST.format(name="sapphirerapids", features=AVX512_FEATURES) + (
        "import os\nfrom numba import njit\n"
        "one = njit(lambda: 1)\n"
        "import streamae.runtime as r\ndone = r.configure()\n"
        "print(os.environ.get('NUMBA_CPU_FEATURES'), 'NUMBA_CPU_FEATURES' in done.set)\n"
        "print(done.notes[-1])"
    )
    first, note = _fresh(code).splitlines()
    assert first == "None False"
    assert "code generator was set up before configure()" in note


def test_a_users_numba_cpu_settings_reach_numba_unchanged():
    code = "import streamae.runtime as r\nd = r.configure()\nimport numba.core.config as c\n"
    code += "print(repr(c.CPU_NAME), repr(c.CPU_FEATURES))\nprint(d.notes[-1])"
    assert _fresh(code, NUMBA_CPU_FEATURES="+sse2").splitlines() == [
        "None '+sse2'",
        "kept the user's NUMBA_CPU_FEATURES=+sse2",
    ]
    # Numba's own default for generic: no features.
    assert _fresh(code, NUMBA_CPU_NAME="generic").splitlines()[0] == "'generic' ''"
    assert _fresh(WIDTH, NUMBA_CPU_NAME="generic") == "128"  # plain x86-64: SSE2
