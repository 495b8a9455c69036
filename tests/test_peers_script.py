"""benchmarks/peers_ml1m.py: its mfjax part runs on tiny synthetic data (issue 11); peers when installed."""

import importlib.util
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("peers_ml1m", ROOT / "benchmarks" / "peers_ml1m.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    mod = _module()
    _, train, test = mod.load_split(synthetic=True)
    path = tmp_path_factory.mktemp("peers") / "data.npz"
    mod.save_arrays(path, train, test)
    return mod, dict(np.load(path)), path, test


def test_mfjax_fits_report_their_curves_and_predictions(bench):
    mod, data, _, test = bench
    for name in ("mfjax-sgd", "mfjax-als-cg"):
        hp = dict(mod.CONTENDERS[name][1], rank=3)
        ks, curve = mod.curve(name, hp, data, 3)
        predict, ex = mod.fit_mfjax(hp, data, 3, eval_each=True)  # the same compiled run
        assert ks == [1, 2, 3] and len(ex["curve"]) == 3
        # the traced curve's last point is the RMSE of the returned model (numpy reference)
        ref = np.sqrt(np.mean((predict(data["test_rows"], data["test_cols"]) - data["test_values"]) ** 2))
        np.testing.assert_allclose(ex["curve"][-1], ref, rtol=1e-4)
        np.testing.assert_allclose(curve, ex["curve"], rtol=1e-5)
        assert ex["curve"][-1] < 1.2 * np.std(data["test_values"])  # learns something


def test_timed_child_process_and_report(bench, tmp_path):
    mod, _, path, _ = bench
    hp = dict(mod.CONTENDERS["mfjax-sgd"][1], rank=3)
    spec = dict(kind="timed", name="mfjax-sgd", hp=hp, epochs=2, compile_cache=True)
    r = mod.run_child(path, spec, env={"MFJAX_COMPILE_CACHE_DIR": str(tmp_path / "xla")}, timeout=600)
    assert set(r["phases"]) == {"import", "convert", "fit"} and r["wall"] >= r["phases"]["fit"] > 0
    assert np.isfinite(r["test_rmse"]) and r["cpu"] > 0
    assert any((tmp_path / "xla").iterdir())  # the second run of a benchmark round would read these
    rec = dict(uptime_start="u", uptime_rounds=["u"], uptime_end="u", target=9.0,
               hparams={"mfjax-sgd": hp, "cornac": {}}, epochs_to_target={"mfjax-sgd": 2, "cornac": 1},
               timed={"mfjax-sgd": [r], "cornac": [dict(r, wall=2 * r["wall"])]},
               epoch_tables={"mfjax-sgd r=10": dict(ks=[1, 2], rmse=[1.0, 0.9], epoch_times=[0.1, 0.2])})
    text = mod.report(rec)
    assert "| mfjax-sgd | 0.50x |" in text and "1:1.0000 2:0.9000" in text


@pytest.mark.parametrize("name", ["libmf", "cornac"])
def test_peer_fit_when_installed(bench, name):
    mod, data, _, _ = bench
    if not mod.installed(mod.CONTENDERS[name][0]):
        pytest.skip(f"{name} not installed (bench extra)")
    hp = dict(mod.CONTENDERS[name][1], rank=3)
    predict, _ = mod.FITS[mod.CONTENDERS[name][0]](hp, data, 5)
    rmse = np.sqrt(np.mean((predict(data["test_rows"], data["test_cols"]) - data["test_values"]) ** 2))
    assert rmse < 1.2 * np.std(data["test_values"]) + 0.5
