"""Model.encode / reconstruct / save / repr and streamae.encode on arrays: against NumPy and the CLI."""

from __future__ import annotations

import tracemalloc

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from naive import sigmoid

import streamae
from streamae.cli.main import cli
from streamae.errors import UsageError
from streamae.io.modelfile import load_model


@pytest.fixture
def planted(rng, model_file):
    s, n = 25, 64
    W1, W2 = rng.normal(0.0, 0.3, size=(s, n)), rng.normal(0.0, 0.3, size=(n, s))
    b1, b2 = rng.normal(0.0, 0.5, size=s), rng.normal(0.0, 0.5, size=n)
    return load_model(model_file(W1, W2=W2, b1=b1, b2=b2, patch_shape=(8, 8, 1), decoder="sigmoid"))


@pytest.mark.parametrize("block_rows", [None, 1, 7, 1000, 5000])
def test_encode_and_reconstruct_equal_dense_numpy_for_any_block(planted, rng, block_rows):
    X = rng.uniform(0.0, 1.0, size=(1000, 64))
    a2 = sigmoid(X @ planted.W1.T + planted.b1)
    a3 = sigmoid(a2 @ planted.W2.T + planted.b2)
    np.testing.assert_allclose(planted.encode(X, block_rows=block_rows), a2, rtol=0, atol=1e-12)
    np.testing.assert_allclose(planted.reconstruct(X, block_rows=block_rows), a3, rtol=0, atol=1e-12)
    assert planted.encode(X[:1]).shape == (1, 25) and planted.encode(X[0]).shape == (1, 25)
    assert planted.encode(X.astype(np.float32)).dtype == np.float32


def test_model_encode_equals_the_encode_command_on_the_same_rows(planted, rng, tmp_path, patch_file):
    X = rng.uniform(0.0, 1.0, size=(777, 64)).astype(np.float32)
    data = patch_file(X, chunk_rows=100, patch_shape=(8, 8, 1))
    model_path = planted.save(tmp_path / "saved.h5")
    result = CliRunner().invoke(cli, ["encode", str(model_path), str(data), "-o", str(tmp_path / "f.h5")])
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "f.h5") as handle:
        features = handle["features"][()]
    np.testing.assert_allclose(planted.encode(X), features, rtol=0, atol=1e-6)


def test_streamae_encode_takes_a_model_or_a_path_and_an_array_or_a_path(planted, rng, tmp_path, patch_file):
    X = rng.uniform(0.0, 1.0, size=(50, 64))
    path = planted.save(tmp_path / "m.h5")
    expected = planted.encode(X)
    assert np.array_equal(streamae.encode(planted, X), expected)
    assert np.array_equal(streamae.encode(path, X), expected)
    assert np.array_equal(streamae.encode(str(path), X, reconstruct=True), planted.reconstruct(X))
    data = patch_file(X.astype(np.float32), chunk_rows=10)
    result = streamae.encode(planted, data, tmp_path / "f.h5", dtype="float64")
    with h5py.File(result.path) as handle:
        np.testing.assert_allclose(handle["features"][()], expected, rtol=0, atol=1e-6)
        assert handle.attrs["model"] and '"path": null' in handle.attrs["model"]


def test_memory_stays_bounded_for_a_million_rows(planted):
    """10⁶ rows: beyond the (m, s) result, only a few blocks are allocated."""
    rows = 1_000_000
    # A read-only broadcast view: 10⁶ rows that cost no memory themselves.
    X = np.broadcast_to(np.linspace(0.0, 1.0, 64, dtype=np.float32), (rows, 64))
    planted.encode(X[:10])  # compile first: Numba's own allocations are not the model's
    tracemalloc.start()
    try:
        a2 = planted.encode(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert a2.shape == (rows, 25)
    assert peak < a2.nbytes + (16 << 20), peak - a2.nbytes


def test_a_wrong_width_is_refused_naming_the_shape(planted):
    with pytest.raises(
        UsageError, match=r"the model takes rows of 64 values, got an array of shape \(3, 5\)"
    ):
        planted.encode(np.zeros((3, 5)))
    with pytest.raises(UsageError, match="row 1 of X holds NaN or Inf"):
        planted.encode(np.array([np.zeros(64), np.full(64, np.nan)]))


def test_save_round_trips_and_repr_is_short(planted, tmp_path):
    path = planted.save(tmp_path / "m.h5")
    again = load_model(path)
    assert np.array_equal(again.theta, planted.theta) and again.hyper == planted.hyper
    with pytest.raises(streamae.StreamaeError, match="exists; pass force=True"):
        planted.save(path)
    text = repr(again)
    assert text == "Model(64 inputs -> 25 hidden (sigmoid), sigmoid decoder, 0 iterations)"
    assert len(repr(planted)) < 200
    planted.normalization = {"mode": "none"}  # rows taken as they are (a model fit on an array)
    planted.info["cost"] = 0.25
    assert repr(planted) == "Model(64 inputs -> 25 hidden (sigmoid), sigmoid decoder, 0 iterations, J=0.25)"
    planted.normalization = {"mode": "ufldl"}
    assert repr(planted).endswith(", J=0.25, data normalised by ufldl)")


def test_the_encoders_products_run_at_one_blas_thread_and_restore_it(planted, rng, monkeypatch):
    from threadpoolctl import threadpool_info, threadpool_limits

    import streamae.compute.blocked as blocked

    seen = []
    real_matmul = np.matmul

    def recording_matmul(*args, **kwargs):
        seen.append([e["num_threads"] for e in threadpool_info() if e["user_api"] == "blas"])
        return real_matmul(*args, **kwargs)

    X = rng.uniform(0.0, 1.0, size=(300, 64))
    expected = planted.reconstruct(X, block_rows=100)
    with threadpool_limits(limits=2, user_api="blas"):
        monkeypatch.setattr(blocked.np, "matmul", recording_matmul)
        result = planted.reconstruct(X, block_rows=100)
        monkeypatch.undo()
        after = [e["num_threads"] for e in threadpool_info() if e["user_api"] == "blas"]
    np.testing.assert_array_equal(result, expected)
    # Two threads would leave OpenBLAS's spare one spinning beside the activation kernels.
    assert len(seen) == 6 and all(threads and set(threads) == {1} for threads in seen)
    assert after and set(after) == {2}
