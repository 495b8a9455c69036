"""Multi-process runs (mfjax.core.distributed): 2 processes on localhost equal 1 process.

Each multi-process check starts fresh interpreters (jax.distributed with gloo CPU collectives) under
a timeout, so a hung collective fails the test instead of the suite.
"""

import importlib.util
import io
import json
import pathlib
import sys

import numpy as np
import pytest

from mfjax.core import distributed

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHECK = ROOT / "tests" / "_distributed_check.py"


def _one_process(out, scale, workdir=None):
    spec = importlib.util.spec_from_file_location("_distributed_check", CHECK)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # no launcher environment here: initialize_from_env is a no-op
    mod.main(str(out), scale, None if workdir is None else str(workdir))
    return json.loads(out.read_text()), mod


def _env():
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("XLA_FLAGS", None)
    return env


def _dsgd_two_blocks_final_loss(mod):
    """The 1-process reference of a 2-device DSGD run: the same 2 x 2-block schedule on one device."""
    import jax

    from mfjax import cli, solvers
    from mfjax.compare.run import solver_steps
    from mfjax.losses import masked_sq_loss

    args = cli.build_parser().parse_args(mod.COMPARE)
    problem = cli._problem(args)
    res = solvers.dsgd(problem.train, problem.rank, l2=problem.l2, key=jax.random.key(args.seed), blocks=2,
                       num_steps=solver_steps("dsgd", args.iters), eval_set=problem.test)
    return float(masked_sq_loss(res.params, problem.train.device_put(), problem.l2))


def test_two_processes_equal_one_process_objective_fit_and_compare(tmp_path):
    """One launch of 2 processes (each holding half the rows) for every multi-process check: the sharded
    objective and mf.fit, then ``mfjax fit`` and ``mfjax compare`` (the main job) through the CLI."""
    out, err = io.StringIO(), io.StringIO()
    rc = distributed.launch([sys.executable, str(CHECK), str(tmp_path / "two.json"), "mean",
                             str(tmp_path / "cmp2")], 2, timeout_s=600, stdout=out, stderr=err, env=_env())
    assert rc == 0, err.getvalue()[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())
    one, mod = _one_process(tmp_path / "one.json", "mean", tmp_path / "cmp1")
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["local_entries"] < two["nnz"]  # process 0 never held the whole data set
    np.testing.assert_allclose(two["value"], one["value"], rtol=1e-5)
    for g in ("grad_U", "grad_V"):
        np.testing.assert_allclose(two[g], one[g], rtol=1e-4, atol=1e-6)
    for rule in ("armijo", "exact_mf"):
        assert two[rule]["status"] == one[rule]["status"] == "max_steps"
        np.testing.assert_allclose(two[rule]["value"], one[rule]["value"], rtol=1e-4)
        np.testing.assert_allclose(two[rule]["U"], one[rule]["U"], rtol=1e-4, atol=1e-5)
    # mfjax launch -n 2 -- fit: process 0 alone reports, the same numbers as one process
    assert two["fit_rc"] == one["fit_rc"] == 0
    assert two["fit"]["processes"] == 2 and one["fit"]["processes"] == 1
    for k in ("final_loss", "test_rmse", "initial_loss"):
        assert two["fit"][k] == pytest.approx(one["fit"][k], rel=1e-5), k
    assert two["fit"]["status"] == one["fit"]["status"] == "max_steps"
    # mfjax launch -n 2 -- compare: process 0 wrote the results; the same runs as one process, SGD refused
    assert one["compare_rc"] == 0 and two["compare_rc"] == 1  # 1: the refused SGD run
    recs = {w: {r["name"]: r for r in json.loads((tmp_path / w / "results.json").read_text())}
            for w in ("cmp1", "cmp2")}
    assert recs["cmp2"]["gd+armijo"]["problem"]["devices"] == 2 and "devices" not in recs["cmp1"]["gd+armijo"]["problem"]
    sgd = recs["cmp2"]["solver-sgd"]
    assert "solver-sgd" in sgd["error"] and "one device only" in sgd["error"]
    assert recs["cmp1"]["solver-sgd"]["error"] is None
    for name in ("gd+armijo", "solver-als", "solver-vector_descent"):
        a, b = recs["cmp2"][name], recs["cmp1"][name]
        assert a["error"] is None and a["status"] == b["status"], (name, a["error"])
        for k in ("final_loss", "initial_loss", "test_rmse"):
            assert a[k] == pytest.approx(b[k], rel=1e-4), (name, k)
    # DSGD on 2 devices is the 2 x 2-block schedule: equal to that schedule on one device
    assert recs["cmp2"]["solver-dsgd"]["final_loss"] == pytest.approx(_dsgd_two_blocks_final_loss(mod), rel=1e-4)
    # the grid (no --runs) over 2 processes: SGD and NMF skipped (one log line each, by process 0), the rest
    # runs, exit 0; one process runs them all.  An explicit list naming only SGD still exits 1.
    assert two["grid_rc"] == one["grid_rc"] == 0 and two["sgd_only_rc"] == 1 and one["sgd_only_rc"] == 0
    grid = {r["name"]: r for r in json.loads((tmp_path / "cmp2_grid" / "results.json").read_text())}
    assert [n for n, r in grid.items() if r.get("skipped")] == ["solver-sgd", "solver-nmf"]
    assert all(r["error"] is None for r in grid.values()) and grid["solver-nmf"]["status"] == "skipped"
    assert grid["solver-als"]["final_loss"] == pytest.approx(recs["cmp1"]["solver-als"]["final_loss"], rel=1e-4)
    log = err.getvalue()
    for name in ("sgd", "nmf"):
        assert log.count(f"mfjax: run solver-{name} skipped: solver '{name}' runs on one device only") == 1, log[-3000:]
    assert "runs: 0 resumed, 2 computed, 2 skipped" in two["grid_stdout"] and " skipped  solver 'nmf'" in two["grid_stdout"]
    assert "skipped" not in one["grid_stdout"]
    # every process reports its peak host memory after each CLI command (fit, compare x 3)
    for k in (0, 1):
        assert log.count(f"[p{k}] mfjax: process {k}/2 peak host memory ") == 4, log[-3000:]


@pytest.mark.parametrize("kwargs,match", [
    (dict(coordinator="localhost:1234", num_processes=2, process_id=2), "process_id"),
    (dict(coordinator="localhost:1234", num_processes=0, process_id=0), "num_processes"),
    (dict(coordinator="nohostport", num_processes=2, process_id=0), "host:port"),
])
def test_initialize_names_bad_coordinates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        distributed.initialize(**kwargs)


def test_partial_environment_and_bad_launches_are_refused():
    with pytest.raises(ValueError, match="MFJAX_COORDINATOR"):
        distributed.initialize_from_env({distributed.NUM_PROCESSES_ENV: "2", distributed.PROCESS_ID_ENV: "0"})
    assert distributed.initialize_from_env({}) is False
    with pytest.raises(ValueError, match="num_processes"):
        distributed.launch(["true"], 0)
    with pytest.raises(ValueError, match="command"):
        distributed.launch([], 2)
    from mfjax import cli

    with pytest.raises(SystemExit, match="does not run multi-process"):
        cli.main(["launch", "-n", "2", "--", "data", "info"])


def test_a_failing_process_stops_the_others():
    code = "import os, sys, time\nif os.environ['MFJAX_PROCESS_ID'] == '1': sys.exit(3)\ntime.sleep(60)\n"
    err = io.StringIO()
    rc = distributed.launch([sys.executable, "-c", code], 2, timeout_s=30, stdout=io.StringIO(), stderr=err)
    assert rc == 3


pytestmark = pytest.mark.usefixtures("restore_mfjax_logger")  # tests/conftest.py


def test_the_default_grid_skips_single_device_solvers_over_several_processes(tmp_path, monkeypatch):
    """Over several processes (the process count faked here: the skipped runs never reach a collective) the
    main job's grid skips SGD and NMF with one log line each and a ``skipped`` record shown as skipped; an
    explicit run list keeps the error."""
    from mfjax import compare
    from mfjax.compare import run as run_mod

    problem = compare.make_problem("synthetic", rank=2, synthetic_kwargs={"m": 20, "n": 15, "density": 0.3})
    specs = [compare.parse_run("solver:sgd"), compare.parse_run("solver:nmf")]
    monkeypatch.setattr(run_mod.jax, "process_count", lambda: 2)
    lines, tally = [], {}
    recs = compare.run_grid(problem, specs, tmp_path / "grid", progress=False, log=lines.append, summary=tally,
                            skip_unsupported=True)
    assert [r["status"] for r in recs] == ["skipped", "skipped"] and all(r["error"] is None for r in recs)
    assert all("one device only" in r["skipped"] and "2 processes" in r["skipped"] for r in recs)
    assert len(lines) == 2 and lines[0].startswith("run solver-sgd skipped: solver 'sgd' runs on one device")
    assert [n for n, _ in tally["skipped"]] == ["solver-sgd", "solver-nmf"] and not tally.get("computed")
    assert not list((tmp_path / "grid" / "runs").glob("*.json"))  # nothing stored: nothing to resume
    table = compare.summarize(recs)
    assert "solver-nmf" in table and table.count(" skipped  solver ") == 2
    compare.write_tables(recs, tmp_path / "grid")
    csv_lines = (tmp_path / "grid" / "results.csv").read_text().splitlines()
    assert csv_lines[0].endswith(",error,skipped") and ",skipped," in csv_lines[1]
    from mfjax import cli

    assert cli._tally_line(tally) == "runs: 0 resumed, 0 computed, 2 skipped"
    monkeypatch.setattr(run_mod, "_agree_on_resume", lambda rec, reason, name: (rec, reason))  # one process
    errs = compare.run_grid(problem, specs[:1], tmp_path / "explicit", progress=False, log=lambda _m: None)
    assert "one device only" in errs[0]["error"] and not errs[0].get("skipped")
