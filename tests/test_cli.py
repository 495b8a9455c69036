"""The ``mfjax`` command line and the comparison workflow behind it, on tiny synthetic data."""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np
import pytest

from mfjax import cli, compare
from mfjax import data as mfdata

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL = ["--synthetic-size", "300x200", "--synthetic-density", "0.1", "--l2", "2.0"]


def _mean_predictor_rmse(seed=0, test_fraction=0.1):
    ratings = mfdata.synthetic(m=300, n=200, density=0.1, rank=5, seed=seed)
    train, test = mfdata.split(ratings, fractions=(1 - test_fraction, test_fraction), seed=seed)
    mu = float(np.mean(np.asarray(train.values)))
    return float(np.sqrt(np.mean((np.asarray(test.values) - mu) ** 2)))


def _spy_pools(monkeypatch):
    """The plot pools ``mfjax compare`` starts, recorded as they start."""
    pools = []
    real = compare.plots.plot_pool
    monkeypatch.setattr(compare.plots, "plot_pool", lambda *a, **k: pools.append(real(*a, **k)) or pools[-1])
    return pools


def test_compare_writes_results_plots_and_resumes(tmp_path, capsys, monkeypatch):
    out = tmp_path / "cmp"
    runs = "gd+armijo,adam+constant(step_size=0.01),gn_block+exact_mf,optax:lbfgs,solver:als"
    argv = ["compare", *SMALL, "--runs", runs, "--iters", "30", "--eval-every", "5",
            "--out", str(out), "--no-progress", "--plot-workers", "2"]
    pools = _spy_pools(monkeypatch)
    assert cli.main(argv) == 0
    assert len(pools) == 1 and pools[0] is not None  # the plots were rendered by two worker processes
    with pytest.raises(RuntimeError):  # ... and the pool is shut down
        pools[0].submit(print)
    printed = capsys.readouterr().out
    for name in ("gd+armijo", "optax-lbfgs", "solver-als"):
        assert name in printed  # summary table
    results = json.loads((out / "results.json").read_text())
    assert len(results) == 5
    assert {r["name"] for r in results} == {"gd+armijo", "adam+constant(step_size=0.01)", "gn_block+exact_mf",
                                             "optax-lbfgs", "solver-als"}
    baseline = _mean_predictor_rmse()
    for r in results:
        assert r["error"] is None
        assert np.isfinite(r["test_rmse"]) and r["wall_s"] >= 0 and r["compile_s"] >= 0
        loss = np.asarray(r["trace"]["loss"], dtype=float)
        assert loss[-1] < loss[0]  # every run makes progress
    best = min(r["test_rmse"] for r in results)
    assert best < baseline  # something beats predicting the training mean
    csv_lines = (out / "results.csv").read_text().strip().splitlines()
    assert csv_lines[0].startswith("name,status,final_loss") and len(csv_lines) == 6
    # the Gauss-Newton direction with exact steps reaches ALS's objective (same problem, same loss)
    by_name = {r["name"]: r for r in results}
    assert by_name["gn_block+exact_mf"]["final_loss"] <= 1.01 * by_name["solver-als"]["final_loss"]
    for png in ("loss_vs_iter.png", "loss_vs_time.png", "loss_vs_evals.png", "test_rmse.png", "step_size.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / png).with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    for r in results:  # measured step times, the time axis of loss_vs_time
        t = np.asarray([np.nan if v is None else v for v in r["trace"]["time_s"]], dtype=float)
        assert np.isfinite(t).any() and np.all(np.diff(t[np.isfinite(t)]) >= 0)

    # resume: nothing is recomputed; files untouched
    run_files = sorted((out / "runs").glob("*.json"))
    assert len(run_files) == 5
    stamps = {p: p.stat().st_mtime_ns for p in run_files}
    assert cli.main(argv + ["--no-plots"]) == 0
    assert {p: p.stat().st_mtime_ns for p in run_files} == stamps
    assert len(pools) == 1  # no plots, no pool

    # an interrupted grid: a missing run file is the only one recomputed
    victim = out / "runs" / "solver-als.json"
    victim.unlink()
    assert cli.main(argv + ["--no-plots"]) == 0
    assert victim.exists()
    assert {p: p.stat().st_mtime_ns for p in run_files if p != victim} == {
        p: t for p, t in stamps.items() if p != victim}

    # a changed configuration is recomputed, not silently reused (one run of the grid: CI time)
    before = {p: p.stat().st_mtime_ns for p in run_files}
    changed = ["compare", *SMALL, "--runs", "gd+armijo", "--iters", "31", "--eval-every", "5",
               "--out", str(out), "--no-progress", "--no-plots"]
    assert cli.main(changed) == 0
    redone = out / "runs" / "gd+armijo.json"
    assert redone.stat().st_mtime_ns != before[redone]
    assert json.loads(redone.read_text())["num_steps"] == 31
    assert all(p.stat().st_mtime_ns == t for p, t in before.items() if p != redone)


class _FakePool:
    def __init__(self):
        self.shut = False

    def shutdown(self, wait=True, cancel_futures=False):
        self.shut = True


def test_compare_shuts_the_plot_pool_down_when_interrupted(tmp_path, monkeypatch):
    fake = _FakePool()
    monkeypatch.setattr(compare.plots, "plot_pool", lambda workers=None: fake)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(compare, "run_grid", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["compare", *SMALL, "--runs", "gd+armijo", "--iters", "2", "--out", str(tmp_path / "cmp"),
                  "--no-progress"])
    assert fake.shut


def test_compare_reports_bad_run_without_stopping_grid(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = cli.main(["compare", *SMALL, "--runs", "gd+armijo,gd+no_such_rule", "--iters", "5",
                     "--out", str(out), "--no-progress", "--no-plots"])
    assert code == 1
    results = {r["name"]: r for r in json.loads((out / "results.json").read_text())}
    assert results["gd+armijo"]["error"] is None
    assert "no_such_rule" in results["gd+no_such_rule"]["error"]


def test_fit_json_prints_final_metrics(capsys):
    assert cli.main(["fit", *SMALL, "--iters", "300", "--json"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    rec = json.loads(line)
    assert rec["name"] == "gd+inverse_lipschitz(growth=2.0)"
    assert rec["problem"]["shape"] == [300, 200] and rec["problem"]["rank"] == 5
    assert 0 < rec["train_rmse"] < rec["test_rmse"] + 1.0
    assert rec["test_rmse"] < _mean_predictor_rmse()


def test_default_command_is_compare(monkeypatch):
    """``mfjax`` alone, or with options only, runs ``mfjax compare``."""
    seen = []
    monkeypatch.setattr(cli, "cmd_compare", lambda args: seen.append(args) or 0)
    assert cli.main([]) == 0
    assert cli.main(["--iters", "3"]) == 0
    assert [a.command for a in seen] == ["compare", "compare"]
    assert seen[0].iters == 200 and seen[1].iters == 3 and seen[0].data == "synthetic"


def test_data_info_synthetic(capsys):
    assert cli.main(["data", "info", "synthetic"]) == 0
    info = json.loads(capsys.readouterr().out)
    r = mfdata.synthetic()
    assert info["shape"] == list(r.shape) and info["ratings"] == r.nnz
    assert info["checksum"] == mfdata.data_checksum(r)


@pytest.mark.movielens
def test_data_info_ml1m(ml1m_dir, capsys):
    assert cli.main(["data", "info", "ml-1m", "--data-dir", str(ml1m_dir)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [6040, 3706] and info["ratings"] == 1_000_209
    assert abs(info["mean"] - 3.5816) < 1e-4


def test_reproduce_targets_exist():
    for table, (script, fixed) in cli.REPRODUCIBLE.items():
        assert (ROOT / script).is_file(), table
        assert all(isinstance(a, str) for a in fixed)


def test_parse_run_round_trips_names():
    for text in ("gd+armijo", "bfgs+strong_wolfe_zoom", "gd+inverse_lipschitz(growth=2.0)", "optax:lbfgs",
                 "solver:als"):
        spec = compare.parse_run(text)
        assert compare.parse_run(spec.name.replace("optax-", "optax:").replace("solver-", "solver:")) == spec
    with pytest.raises(ValueError, match="run"):
        compare.parse_run("gd")


def test_readme_example_runs():
    """The README's "library in one screen" example is real code."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    code = blocks[0].replace("m=600, n=400", "m=120, n=80").replace("num_steps=200", "num_steps=20") \
        .replace("num_sweeps=20", "num_sweeps=3")
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})


def test_version(capsys):
    import mfjax

    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"mfjax {mfjax.__version__}"


def test_fit_help_documents_iters_and_eval_every(capsys):
    with pytest.raises(SystemExit):
        cli.main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--iters ITERS iteration budget" in text and "--eval-every EVAL_EVERY held-out RMSE every k" in text
    assert "--rating-scale LO,HI" in text


def test_reproduce_help_lists_targets_with_descriptions(capsys):
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "--help"])
    text = capsys.readouterr().out
    for table, (script, _) in cli.REPRODUCIBLE.items():
        line = next(l for l in text.splitlines() if l.strip().startswith(table + " "))
        assert cli.REPRODUCIBLE_HELP[table] in line and script in line


def test_fit_prints_status_names(capsys):
    assert cli.main(["fit", "--synthetic-size", "60x40", "--synthetic-density", "0.2", "--synthetic-rank", "3",
                     "--run", "gd+armijo", "--iters", "4"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.search(r"status (max_steps|converged)$", line) and "clipped to [1, 5]" in line


def _fit_in_fresh_process(tmp_path, *extra, env_extra=None):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != cli.NO_COMPILE_CACHE_ENV}
    env[cli.COMPILE_CACHE_ENV] = str(tmp_path / "xla")
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, "-m", "mfjax", "fit", *SMALL, "--iters", "20", "--json", *extra],
                         capture_output=True, text=True, env=env, timeout=300, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_persistent_compilation_cache_is_on_by_default_and_can_be_turned_off(tmp_path, monkeypatch):
    cache = tmp_path / "xla"
    first = _fit_in_fresh_process(tmp_path)
    assert first["compile_s"] > 0
    written = sorted(p.name for p in cache.iterdir())
    assert written, "the first run wrote no compiled programs"
    second = _fit_in_fresh_process(tmp_path)
    assert second["final_loss"] == first["final_loss"]  # a cached program computes the same thing
    assert second["compile_s"] < first["compile_s"]     # programs came from disk, not the compiler
    # the opt-out flag: no cache directory is made (the environment variable: the next test)
    off = tmp_path / "off"
    monkeypatch.delenv(cli.NO_COMPILE_CACHE_ENV, raising=False)
    monkeypatch.setenv(cli.COMPILE_CACHE_ENV, str(off))
    assert cli.main(["fit", *SMALL, "--iters", "20", "--json", "--no-compile-cache"]) == 0
    assert not off.exists()


def test_compile_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(cli.COMPILE_CACHE_ENV, str(tmp_path / "c"))
    assert cli.compile_cache_dir() == tmp_path / "c"
    monkeypatch.delenv(cli.COMPILE_CACHE_ENV)
    monkeypatch.setenv("MFJAX_CACHE_DIR", str(tmp_path / "user"))
    assert cli.compile_cache_dir() == tmp_path / "user" / "jax"
    monkeypatch.setenv(cli.NO_COMPILE_CACHE_ENV, "1")
    assert cli.enable_compile_cache() is None


# `mfjax compare --devices 2` against `--devices 1`: tests/test_sharded.py::test_sharded_vector_descent_and_compare_devices_equal_single_device
# (in its 4-device child process); `mfjax launch -n 2 -- compare`: tests/test_distributed.py.
