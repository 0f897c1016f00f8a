"""Data-parallel training: N ranks give one process's answer, idle ranks, no hangs, no MPI alone.

The MPI tests run ``mpiexec`` (the PyPI mpich wheel) in subprocesses on small problems
(16 inputs, 5 hidden units), in float64 so that the comparison with one process is
limited by rounding only.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    clean_environment,
    needs_mpi,
    relative_difference,
    run,
    write_patch_file,
)

from streamae.errors import DataError, InputFileError, UsageError
from streamae.io.modelfile import load_model
from streamae.runtime.mpi import (
    PeerError,
    SingleProcess,
    agreed_phase,
    digest,
    is_collective,
    launched_under_mpi,
    raise_agreed,
    ranks_agree,
)
from streamae.runtime.threads import resolve_threads
from streamae.training.session import train

SMALL = ["--hidden", "5", "--dtype", "float64", "-q", "--force"]


# -- one process: the communicator, detection, threads ------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"PMI_RANK": "0"}, True),
        ({"OMPI_COMM_WORLD_SIZE": "4"}, True),
        ({"PMIX_RANK": "3"}, True),
        ({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "1"}, False),  # srun of one task: no MPI needed
        ({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "8"}, True),
        ({"SLURM_JOB_ID": "12", "SLURM_NTASKS": "8"}, False),  # the batch script itself
    ],
)
def test_launcher_detection(environ, expected):
    assert launched_under_mpi(environ) is expected


def test_single_process_collectives_are_identities():
    comm = SingleProcess()
    buffer = np.array([1.5, -2.0])
    comm.allreduce_sum(buffer)
    comm.allreduce_min(buffer)
    assert buffer.tolist() == [1.5, -2.0]
    assert comm.broadcast({"a": 1}) == {"a": 1}
    assert comm.allgather(7) == [7]
    assert comm.any(True) and not comm.any(False)
    assert ranks_agree(comm, 3.0)
    raise_agreed(comm, None)
    with pytest.raises(DataError) as caught, agreed_phase(comm):
        raise DataError("bad")
    assert is_collective(caught.value)


def test_digest_tells_arrays_apart_by_their_bits():
    x = np.linspace(0.0, 1.0, 101)
    assert digest(x) == digest(x.copy())
    nudged = x.copy()
    nudged[50] = np.nextafter(nudged[50], 2.0)
    assert digest(nudged) != digest(x)
    assert digest(x) == float(int(digest(x)))  # an integer below 2**53: exact in float64


def test_threads_follow_slurm_then_the_affinity_shared_among_local_ranks():
    assert resolve_threads(3, {"SLURM_CPUS_PER_TASK": "8"}) == 3
    assert resolve_threads(None, {"SLURM_CPUS_PER_TASK": "8"}, local_ranks=4) == 8
    cpus = len(__import__("os").sched_getaffinity(0))
    assert resolve_threads(None, {}) == cpus
    assert resolve_threads(None, {}, local_ranks=cpus) == 1
    assert resolve_threads(None, {}, local_ranks=10 * cpus) == 1
    with pytest.raises(UsageError, match="threads must be an integer ≥ 1, got 0"):
        resolve_threads(0, {})


def test_train_without_a_launcher_never_imports_mpi4py(patch_file, unit_patches, tmp_path):
    """A plain install (no MPI library) trains: importing mpi4py would fail here."""
    data = patch_file(unit_patches[:300, :16], chunk_rows=100)
    script = textwrap.dedent(
        """
        import sys
        sys.modules["mpi4py"] = None  # any attempt to import it raises ImportError
        from streamae.cli.main import cli
        try:
            cli(sys.argv[1:], prog_name="streamae")
        except SystemExit as done:
            assert done.code in (0, None), done.code
        loaded = sorted(name for name in sys.modules if name.startswith("mpi4py"))
        assert sys.modules["mpi4py"] is None and loaded == ["mpi4py"], loaded
        print("no MPI imported")
        """
    )
    args = ["train", str(data), "-o", str(tmp_path / "m.h5"), "--max-iter", "2", *SMALL]
    done = run(args, script=script)
    assert done.returncode == 0, done.stderr
    assert "no MPI imported" in done.stdout
    assert load_model(tmp_path / "m.h5").iterations == 2


def test_a_launcher_without_mpi4py_is_a_usage_error(patch_file, unit_patches, tmp_path):
    data = patch_file(unit_patches[:100, :16])
    script = 'import sys; sys.modules["mpi4py"] = None\n' + "from streamae.cli.main import main; main()"
    done = run(["train", str(data), "-o", str(tmp_path / "m.h5"), *SMALL], script=script, PMI_RANK="0")
    assert done.returncode == 2, done.stderr
    assert "mpi4py is not installed" in done.stderr
    assert "Traceback" not in done.stderr


def test_reading_without_file_locks_when_asked(patch_file, unit_patches, tmp_path):
    """--no-file-locking reads a file another process holds open for writing (NFS/Lustre case)."""
    data = patch_file(unit_patches[:200, :16], chunk_rows=100)
    holder = subprocess.Popen(
        [
            __import__("sys").executable,
            "-c",
            "import h5py, sys, time\n"
            f"f = h5py.File({str(data)!r}, 'a')\n"
            "print('open', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=clean_environment(),
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(InputFileError, match="file_locking=False or set HDF5_USE_FILE_LOCKING=FALSE"):
            train(data, hidden=3, max_iter=1, dtype="float64", stop_signals=False)
        model = train(data, hidden=3, max_iter=1, dtype="float64", file_locking=False, stop_signals=False)
        assert model.iterations == 1
    finally:
        holder.communicate("", timeout=30)


# -- under mpiexec -------------------------------------------------------------------


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory) -> Path:
    """m = 10,001 rows of 16 values in 11 chunks of 1000 (the last one holds 1 row)."""
    generator = np.random.default_rng(2024)
    values = generator.uniform(0.05, 0.95, size=(10_001, 16)).astype(np.float32)
    return write_patch_file(tmp_path_factory.mktemp("odd") / "odd.h5", values, chunk_rows=1000)


def _train(data: Path, output: Path, ranks: int | None, *extra: str) -> subprocess.CompletedProcess:
    done = run(["train", str(data), "-o", str(output), *SMALL, *extra], ranks)
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def one_process(odd_data, tmp_path_factory):
    """One process's model at the start (no iterations) and after 30 iterations."""
    folder = tmp_path_factory.mktemp("one")
    _train(
        odd_data, folder / "start.h5", None, "--max-iter", "0", "--keep-state"
    )  # its optimizer state holds ∇J
    _train(odd_data, folder / "thirty.h5", None, "--max-iter", "30")
    return load_model(folder / "start.h5"), load_model(folder / "thirty.h5")


@pytest.mark.mpi
@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_give_one_process_answer(odd_data, one_process, tmp_path, ranks):
    """m = 10,001 does not divide by 2 or 3 ranks (6/5 and 4/4/3 chunks): J, ∇J and θ agree."""
    start, thirty = one_process
    _train(odd_data, tmp_path / "start.h5", ranks, "--max-iter", "0", "--keep-state")
    done = _train(odd_data, tmp_path / "thirty.h5", ranks, "--max-iter", "30")
    # The defaults warm-start 10,001 rows of this size (auto): max_iter counts full-data ones.
    assert done.stderr.count("finished after 30 full-data iterations") == 1  # rank 0 alone prints
    mpi_start = load_model(tmp_path / "start.h5")
    assert relative_difference(mpi_start.info["cost"], start.info["cost"]) < 1e-12
    assert relative_difference(mpi_start.optimizer["g"], start.optimizer["g"]) < 1e-12
    mpi = load_model(tmp_path / "thirty.h5")
    assert mpi.iterations == thirty.iterations
    assert mpi.info["warm_start"]["stages"] == thirty.info["warm_start"]["stages"]
    assert int(np.sum(mpi.history["sample_rows"] == 10_001)) == 30
    assert mpi.info["ranks"] == ranks
    assert relative_difference(mpi.info["cost"], thirty.info["cost"]) < 1e-9
    assert relative_difference(mpi.theta, thirty.theta) < 1e-9


@pytest.mark.mpi
@needs_mpi
def test_more_ranks_than_chunks_finish(patch_file, unit_patches, tmp_path):
    """5 chunks among 8 ranks: three ranks read nothing, add zeros, and still finish."""
    data = patch_file(unit_patches[:500, :16].astype(np.float64), chunk_rows=100)
    _train(data, tmp_path / "one.h5", None, "--max-iter", "5")
    _train(data, tmp_path / "eight.h5", 8, "--max-iter", "5")
    one, eight = load_model(tmp_path / "one.h5"), load_model(tmp_path / "eight.h5")
    assert eight.iterations == 5 and eight.info["ranks"] == 8
    assert relative_difference(eight.theta, one.theta) < 1e-9


@pytest.mark.mpi
@needs_mpi
def test_an_error_on_rank_zero_ends_every_rank(patch_file, unit_patches, tmp_path):
    """Rank 0 alone checks the output path; the others must not wait for it forever."""
    data = patch_file(unit_patches[:300, :16], chunk_rows=100)
    done = run(["train", str(data), "-o", str(tmp_path / "missing" / "m.h5"), *SMALL], 3)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("does not exist") == 1, done.stderr  # printed by rank 0 only


@pytest.mark.mpi
@needs_mpi
def test_bad_values_on_one_rank_share_are_refused_by_all(tmp_path):
    values = np.full((400, 16), 0.5, dtype=np.float32)
    values[350, 3] = np.nan  # in the last rank's share only
    data = write_patch_file(tmp_path / "nan.h5", values, chunk_rows=100)
    done = run(["train", str(data), "-o", str(tmp_path / "m.h5"), *SMALL], 2)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("row 350 holds NaN") == 1, done.stderr


COLLECTIVES_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from streamae.runtime.mpi import PeerError, raise_agreed, ranks_agree, world
    from streamae.errors import DataError
    comm = world()
    result = {"rank": comm.rank, "size": comm.size}
    result["agree_same"] = ranks_agree(comm, 12345.0)
    result["agree_rank"] = ranks_agree(comm, float(comm.rank))
    result["any"] = comm.any(comm.rank == comm.size - 1)
    result["broadcast"] = comm.broadcast({"from": comm.rank})["from"]
    try:
        raise_agreed(comm, DataError("rank one broke") if comm.rank == 1 else None)
    except (DataError, PeerError) as error:
        result["agreed"] = [type(error).__name__, str(error), getattr(error, "collective", False)]
    # One file per rank: the launcher may interleave the ranks' stdout mid-line.
    with open(f"{sys.argv[1]}/rank-{comm.rank}.json", "w") as handle:
        json.dump(result, handle)
    """
)


@pytest.mark.mpi
@needs_mpi
def test_collectives_under_mpi(tmp_path):
    done = run([str(tmp_path)], 3, script=COLLECTIVES_SCRIPT)
    assert done.returncode == 0, done.stderr
    results = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in range(3)]
    assert [r["rank"] for r in results] == [0, 1, 2]
    for result in results:
        assert result["size"] == 3
        assert result["agree_same"] is True and result["agree_rank"] is False
        assert result["any"] is True and result["broadcast"] == 0
    assert results[0]["agreed"] == ["PeerError", "rank 1: rank one broke", True]
    assert results[1]["agreed"] == ["DataError", "rank one broke", True]
    assert results[2]["agreed"] == ["PeerError", "rank one broke", True]
    assert issubclass(PeerError, Exception)


LOCAL_FAILURE_SCRIPT = textwrap.dedent(
    """
    import sys
    from streamae.runtime.mpi import world
    from streamae.errors import StorageError
    from streamae.training.session import TrainingMonitor, train

    class BreaksOnRankOne(TrainingMonitor):
        def __init__(self, rank):
            self.rank, self.blocks = rank, 0
        def on_block(self, rows):
            self.blocks += 1
            if self.rank == 1 and self.blocks == 7:  # in the middle of a pass
                raise StorageError("reading rows failed (simulated)")

    comm = world()
    train(
        sys.argv[1], hidden=3, max_iter=50, dtype="float64", scheme="two-pass",
        monitor=BreaksOnRankOne(comm.rank), comm=comm,
    )
    print("unreachable", flush=True)
    """
)


@pytest.mark.mpi
@needs_mpi
def test_an_error_on_one_rank_mid_pass_aborts_the_job(patch_file, unit_patches):
    """Rank 0 waits in an Allreduce rank 1 will never reach: the job must end, loudly."""
    data = patch_file(unit_patches[:400, :16], chunk_rows=100)
    done = run([str(data)], 2, script=LOCAL_FAILURE_SCRIPT)
    assert done.returncode != 0
    assert "Error on MPI rank 1 of 2: reading rows failed (simulated); aborting all ranks." in done.stderr
    assert "unreachable" not in done.stdout


# -- the rules, with stand-in communicators --------------------------------------------


class TwoRanks(SingleProcess):
    """Rank 0 of a pretend pair whose partner's parameter checksum is off by ``partner_offset``."""

    size = 2

    def __init__(self, partner_offset: float = 0.0) -> None:
        self.partner_offset = partner_offset
        self.aborted: list[int] = []

    def allreduce_min(self, buffer: np.ndarray) -> None:
        # The partner's buffer: the same, except a checksum (entries 1, 2; 0 when none was
        # taken this iteration) differs.
        partner = buffer.copy()
        if partner[1] != 0.0:
            partner[1] += self.partner_offset
            partner[2] -= self.partner_offset
        np.minimum(buffer, partner, out=buffer)

    def abort(self, code: int) -> None:
        self.aborted.append(code)
        raise SystemExit(code)


def _trainer(comm):
    from streamae.compute.lbfgs import StopRules
    from streamae.runtime.signals import StopFlag
    from streamae.training.checkpoint import CheckpointPolicy
    from streamae.training.loop import RunContext, Trainer, TrainingMonitor

    return Trainer(None, StopRules(), RunContext(comm, TrainingMonitor(), StopFlag(), CheckpointPolicy()))


def test_ranks_holding_different_parameters_stop_loudly():
    from streamae.compute.lbfgs import LbfgsState
    from streamae.training.loop import CONSISTENCY_EVERY, RanksDisagree

    state = LbfgsState.start(np.linspace(0, 1, 9), 1.0, np.ones(9), memory=3)
    state.iteration = CONSISTENCY_EVERY
    # Agreeing ranks: only rank 0's clock is heard.
    assert _trainer(TwoRanks())._boundary(state, wanted=True) is True
    expected = f"different parameters at iteration {CONSISTENCY_EVERY}"
    with pytest.raises(RanksDisagree, match=expected) as caught:
        _trainer(TwoRanks(partner_offset=1.0))._boundary(state, wanted=False)
    assert is_collective(caught.value)
    state.iteration += 1  # between checks only the clock is combined
    assert _trainer(TwoRanks(partner_offset=1.0))._boundary(state, wanted=False) is False


def test_an_error_on_one_rank_aborts_and_a_collective_one_passes(capsys):
    from streamae.runtime.mpi import abort_on_local_error, mark_collective

    comm = TwoRanks()
    with pytest.raises(SystemExit), abort_on_local_error(comm):
        raise DataError("row 7 is bad")
    assert comm.aborted == [1]
    assert "Error on MPI rank 0 of 2: row 7 is bad; aborting all ranks." in capsys.readouterr().err
    with pytest.raises(UsageError), abort_on_local_error(comm):
        raise mark_collective(UsageError("everyone sees this"))
    assert comm.aborted == [1]
    with pytest.raises(SystemExit), abort_on_local_error(comm):
        raise RuntimeError("a bug")
    assert comm.aborted == [1, 1]
