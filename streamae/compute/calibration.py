"""BLAS or the row-vectorised tiles for a layer, measured on this host on first use and kept.

The products of a small layer can run through BLAS or through the register tiles of
:mod:`streamae.compute.small`; which is faster depends on the CPU, the BLAS build, the
layer's shape and the scheme, and the margins are a few percent.  So ``products="auto"``
measures, the first time a run needs a shape, the very objective the run will call (its
scheme, layer size, compute block and dtype, over a few blocks of random data, one thread),
in four arms: all BLAS, the tiled block, the tiled input sums, both tiled.  Samples
alternate between the arms, in a rotating order, so the host's drift touches every arm
alike; the measurement stops after :data:`ROUNDS` rounds or :data:`BUDGET_SECONDS`
(whichever first; at least :data:`MIN_ROUNDS`).

The decision (:func:`decide`) needs a margin larger than the noise: the noise is the
largest relative spread (a robust standard deviation over the median,
:func:`relative_spread`) of any arm's samples, the margin
``max(noise, MIN_MARGIN)``, and an arm with tiles wins only if its median beats BLAS's by
more than that margin; otherwise BLAS.  BLAS is the default because its speed is what
every other program on the host sees too; the tiles must earn their place.

The result is cached on disk like FFTW's wisdom, one JSON file per host identity
(:func:`streamae.runtime.host.describe_host`: CPU model, Numba's CPU name and features,
BLAS and the library versions; any change reads another file, so it measures again), in
``STREAMAE_CACHE_DIR`` if set, else beside Numba's cache (``NUMBA_CACHE_DIR``), else
the user's cache folder (``$XDG_CACHE_HOME/streamae`` or ``~/.cache/streamae``).  A
cache that cannot be read or written is never an error: the run measures and goes on.
Under MPI one rank per node measures (rank 0 of the node, the others wait sleeping and
take its result), so a node's ranks agree and do not disturb each other's timing.

``streamae info --host`` prints the host, the cache file and every entry in it;
deleting that file recalibrates.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

FORMAT = 1
# The least advantage the tiles need over BLAS, as a fraction of BLAS's time, even when
# the samples agree more closely than that: below it, a host's drift between the
# calibration and the run can reverse the order.  3%: where the floor alone keeps BLAS, the
# run is at most 3% slower than with the tiles (the target auto is held to).
MIN_MARGIN = 0.03
ROUNDS = 9
MIN_ROUNDS = 5
# Measuring stops after this long (after MIN_ROUNDS rounds at least).
BUDGET_SECONDS = 0.5
# Work of one sample (floating-point operations, 10·rows·n·s for one evaluation): ~1 ms.
SAMPLE_FLOP = 5e7
MAX_SAMPLE_BLOCKS = 8
# Blocks of more work than this are not measured: BLAS.  One such block takes over 20 ms,
# so the calibration would not fit its budget, and at such sizes OpenBLAS's packed kernels
# reach their full rate (the tiles lost at 192 x 400 and 784 x 196 on both hosts measured).
MAX_MEASURED_FLOP = 2e9
# The arms: name -> (tiled block, tiled input sums).
ARMS = {
    "blas": (False, False),
    "tiled block": (True, False),
    "tiled sums": (False, True),
    "tiled": (True, True),
}


class Choice(NamedTuple):
    """The products a layer runs with: the tiled block, the tiled input sums, and why."""

    tiled: bool
    tiled_sums: bool
    reason: str


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where calibrations are kept (see the module's docstring for the order)."""
    environ = os.environ if environ is None else environ
    if environ.get("STREAMAE_CACHE_DIR"):
        return Path(environ["STREAMAE_CACHE_DIR"])
    if environ.get("NUMBA_CACHE_DIR"):
        return Path(environ["NUMBA_CACHE_DIR"]) / "streamae"
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamae"


def cache_path(host: dict, directory: Path | None = None) -> Path:
    """The file of this host identity's calibrations (a hash of ``host`` names it)."""
    digest = hashlib.sha256(json.dumps(host, sort_keys=True).encode()).hexdigest()[:16]
    return (directory or cache_dir()) / f"calibration-{digest}.json"


def load(path: Path, host: dict) -> dict:
    """The entries kept in ``path`` for ``host`` ({} if none, unreadable or another host's)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("host") != host:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def store(path: Path, host: dict, key: str, entry: dict) -> bool:
    """Add ``entry`` under ``key`` to the file (atomically); False if it could not be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = load(path, host)
        entries[key] = entry
        text = json.dumps({"format": FORMAT, "host": host, "entries": entries}, indent=1)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".calibration-", suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as out:
                out.write(text + "\n")
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError:
        return False
    return True


def decide(samples: Mapping[str, list[float]], min_margin: float = MIN_MARGIN) -> dict:
    """The arm to run from seconds per sample of each arm (BLAS unless one wins by the margin).

    Returns ``{"chosen", "seconds" (median of each arm), "noise", "margin"}``: noise is
    the largest :func:`relative_spread` of any arm, margin ``max(noise, min_margin)``; an
    arm with tiles is chosen only if its median is below BLAS's by more than ``margin`` of
    BLAS's, and of those the fastest.
    """
    medians = {arm: float(np.median(values)) for arm, values in samples.items()}
    noise = max(relative_spread(values) for values in samples.values())
    margin = max(noise, min_margin)
    blas = medians["blas"]
    winners = [arm for arm in medians if arm != "blas" and medians[arm] < blas * (1.0 - margin)]
    chosen = min(winners, key=medians.__getitem__) if winners else "blas"
    return {"chosen": chosen, "seconds": medians, "noise": noise, "margin": margin}


def relative_spread(values: list[float]) -> float:
    """A robust relative standard deviation of one sample: 1.4826 · MAD / median.

    The median absolute deviation ignores the few samples a busy host stretches by a
    scheduler's time slice (up to half of them), which would make a standard deviation or
    an interquartile range of a handful of samples meaningless.
    """
    median = float(np.median(values))
    return 1.4826 * float(np.median(np.abs(np.asarray(values) - median))) / median


def entry_key(scheme: str, n_visible: int, n_hidden: int, dtype: np.dtype, rows: int) -> str:
    """The name of one calibration: what the measured objective was."""
    return f"{scheme} {n_visible}x{n_hidden} {np.dtype(dtype).name} {rows}-row blocks"


def measure(scheme: str, n_visible: int, n_hidden: int, dtype: np.dtype, rows: int) -> dict:
    """Seconds per evaluation of each arm (:data:`ARMS`), samples alternating, one thread.

    Returns ``{arm: [seconds, ...]}``.  The first call of each arm (it may compile) is not
    counted.
    """
    from streamae.compute.parameters import Hyperparameters, initialize
    from streamae.compute.schemes import make_objective
    from streamae.io.patchfile import ArrayPatches

    blocks = int(min(MAX_SAMPLE_BLOCKS, max(1, SAMPLE_FLOP // (10.0 * rows * n_visible * n_hidden))))
    X = np.random.default_rng(0).uniform(0.1, 0.9, size=(blocks * rows, n_visible)).astype(dtype)
    theta = initialize(n_visible, n_hidden, 0)
    objectives = {}
    try:
        for arm, (tiled, tiled_sums) in ARMS.items():
            objective = make_objective(
                ArrayPatches(X),
                Hyperparameters(hidden=n_hidden),
                n_visible=n_visible,
                dtype=dtype,
                scheme=scheme,
                compute_rows=rows,
                threads=1,
                products="blas",
            )
            objective.tiled, objective.tiled_sums = tiled, tiled_sums
            objectives[arm] = objective
            objective(theta)  # compile (or load) and warm up
        return _rotate({arm: (lambda o=o: o(theta)) for arm, o in objectives.items()})
    finally:
        for objective in objectives.values():
            objective.close()


def _rotate(calls: dict[str, Callable[[], object]]) -> dict[str, list[float]]:
    """Seconds of each call, in rounds of every arm, the order rotating each round."""
    names = list(calls)
    samples: dict[str, list[float]] = {name: [] for name in names}
    deadline = time.perf_counter() + BUDGET_SECONDS
    for round_ in range(ROUNDS):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            calls[name]()
            samples[name].append(time.perf_counter() - started)
        if round_ + 1 >= MIN_ROUNDS and time.perf_counter() > deadline:
            break
    return samples


_lock = threading.Lock()
# (cache file, entry key) -> entry, for this process.
_known: dict[tuple[str, str], dict] = {}
_host: list[dict] = []


def current_host() -> dict:
    """This process's host identity (:func:`streamae.runtime.host.describe_host`), read once."""
    if not _host:
        from streamae.runtime.host import describe_host

        _host.append(describe_host())
    return _host[0]


def forget() -> None:
    """Drop what this process remembers (host, entries); the cache files stay."""
    with _lock:
        _known.clear()
        _host.clear()


def calibrate(scheme: str, n_visible: int, n_hidden: int, dtype: np.dtype, rows: int) -> dict:
    """The entry for this objective: from this process, the cache file, or measured now.

    An entry: ``{"chosen", "seconds", "noise", "margin", "rounds", "measured_at",
    "source"}`` with source "measured", "cache" or "this process".
    """
    host = current_host()
    path = cache_path(host)
    key = entry_key(scheme, n_visible, n_hidden, dtype, rows)
    with _lock:
        known = _known.get((str(path), key))
        if known is not None:
            return dict(known, source="this process")
        entry = load(path, host).get(key)
        if isinstance(entry, dict) and entry.get("chosen") in ARMS:
            entry = dict(entry, source="cache")
        else:
            samples = measure(scheme, n_visible, n_hidden, dtype, rows)
            entry = decide(samples)
            entry["rounds"] = len(samples["blas"])
            entry["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            entry["stored"] = store(path, host, key, entry)
            entry["source"] = "measured"
        _known[(str(path), key)] = entry
        return entry


def choose(
    scheme: str,
    n_visible: int,
    n_hidden: int,
    dtype: np.dtype,
    rows: int,
    products: str = "auto",
    comm=None,
) -> Choice:
    """The products this objective runs with: as asked, or (``"auto"``) as calibrated.

    ``products``: "auto", "blas" or "tiled" (both switches).  Under MPI (``comm`` of more
    than one rank) every rank must call it alike: rank 0 of each node calibrates and the
    node's other ranks take its result.
    """
    from streamae.compute.small import PRODUCTS

    if products not in PRODUCTS:
        raise ValueError(f"products must be one of {', '.join(PRODUCTS)}, got {products!r}")
    if products != "auto":
        tiled = products == "tiled"
        return Choice(tiled, tiled, "asked for")
    from numba.core import config

    if config.DISABLE_JIT:
        return Choice(False, False, "BLAS: NUMBA_DISABLE_JIT is set, nothing to measure")
    if 10.0 * rows * n_visible * n_hidden > MAX_MEASURED_FLOP:
        return Choice(False, False, "BLAS: a block too large to measure within the budget")
    args = (scheme, n_visible, n_hidden, np.dtype(dtype), int(rows))
    if comm is None or comm.size == 1:
        entry = calibrate(*args)
    else:
        entry = _per_node(comm, lambda: calibrate(*args))
    tiled, tiled_sums = ARMS[entry["chosen"]]
    return Choice(tiled, tiled_sums, _reason(entry))


def _per_node(comm, calibrate_here: Callable[[], dict]) -> dict:
    """Rank 0 of each node calibrates; every rank gets its node's entry (collective)."""
    node = socket.gethostname()
    mine = calibrate_here() if comm.local_rank() == 0 else None
    reports = comm.allgather((node, mine))  # waiting ranks sleep (MPICommunicator.barrier)
    for reporter, entry in reports:
        if reporter == node and entry is not None:
            return entry
    return calibrate_here()  # no rank 0 on this host name (unusual launch): measure here


def _reason(entry: dict) -> str:
    """One line: what won, by how much, and where the decision came from."""
    seconds = entry["seconds"]
    blas = seconds["blas"]
    chosen = entry["chosen"]
    best_tiles = min((arm for arm in seconds if arm != "blas"), key=seconds.__getitem__)
    gain = 1.0 - seconds[best_tiles] / blas
    verdict = (
        f"{chosen}: {gain:.1%} faster than BLAS"
        if chosen != "blas"
        else f"BLAS: the best tiles ({best_tiles}) {gain:+.1%} against BLAS"
    )
    return f"{verdict}, margin {entry['margin']:.1%} (noise {entry['noise']:.1%}); {entry['source']}"


def host_report() -> dict:
    """This host and its calibrations (for ``streamae info --host``; JSON-ready).

    Keys: host (:func:`streamae.runtime.host.describe_host`), vector_bits, configured
    (what :func:`streamae.runtime.configure` set), cache_file, entries (key -> entry),
    min_margin.
    """
    from streamae.runtime.host import vector_bits
    from streamae.runtime.process import configure

    configuration = configure()
    host = current_host()
    path = cache_path(host)
    return {
        "host": host,
        "vector_bits": vector_bits(),
        "configured": configuration.lines(),
        "cache_file": str(path),
        "entries": load(path, host),
        "min_margin": MIN_MARGIN,
    }


def format_host_report(report: dict) -> str:
    """The report of :func:`host_report` as readable lines."""
    host = report["host"]
    lines = [
        f"CPU: {host['vendor']} {host['model']}; Numba compiles for {host['numba_cpu']} "
        f"with {report['vector_bits']}-bit vectors",
        "BLAS: "
        + (
            "; ".join(f"{b['api']} {b['version']} ({b['architecture']}, {b['file']})" for b in host["blas"])
            or "none found"
        ),
        "versions: " + ", ".join(f"{name} {version}" for name, version in host["versions"].items()),
        "configured: " + "; ".join(report["configured"]),
        f"calibrations (products='auto'): {report['cache_file']}",
    ]
    if not report["entries"]:
        lines.append(
            "  none yet: train, encode and objective measure each layer size on first use "
            "(well under a second)"
        )
    for key, entry in report["entries"].items():
        seconds = ", ".join(f"{arm} {value * 1e3:.3g} ms" for arm, value in entry["seconds"].items())
        lines.append(
            f"  {key}: {entry['chosen']} (medians: {seconds}; noise {entry['noise']:.1%}, "
            f"margin {entry['margin']:.1%}; measured {entry.get('measured_at', '?')})"
        )
    lines.append(
        f"The tiles are chosen only when they beat BLAS by more than the noise and at least "
        f"{report['min_margin']:.0%}; delete the file above to measure again."
    )
    return "\n".join(lines)


def _blas_text(blas: dict) -> str:
    return f"{blas['api']} {blas['version']} ({blas['architecture']}, {blas['file']})"
