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


def _one_process(out, scale):
    spec = importlib.util.spec_from_file_location("_distributed_check", CHECK)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # no launcher environment here: initialize_from_env is a no-op
    mod.main(str(out), scale)
    return json.loads(out.read_text())


def test_two_processes_each_holding_half_the_rows_equal_one_process(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    rc = distributed.launch([sys.executable, str(CHECK), str(tmp_path / "two.json"), "mean"], 2,
                            timeout_s=240, stdout=out, stderr=err, env=_env())
    assert rc == 0, err.getvalue()[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())
    one = _one_process(tmp_path / "one.json", "mean")
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["local_entries"] < two["nnz"]  # process 0 never held the whole data set
    np.testing.assert_allclose(two["value"], one["value"], rtol=1e-5)
    for g in ("grad_U", "grad_V"):
        np.testing.assert_allclose(two[g], one[g], rtol=1e-4, atol=1e-6)
    for rule in ("armijo", "exact_mf"):
        assert two[rule]["status"] == one[rule]["status"] == "max_steps"
        np.testing.assert_allclose(two[rule]["value"], one[rule]["value"], rtol=1e-4)
        np.testing.assert_allclose(two[rule]["U"], one[rule]["U"], rtol=1e-4, atol=1e-5)


def _env():
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("XLA_FLAGS", None)
    return env


def test_cli_launch_fit_equals_the_single_process_fit(capsys):
    from mfjax import cli

    args = ["fit", "--run", "gd+armijo", "--iters", "10", "--json", "--synthetic-size", "60x40",
            "--no-compile-cache"]
    out, err = io.StringIO(), io.StringIO()
    rc = distributed.launch([sys.executable, "-m", "mfjax", *args], 2, timeout_s=240, stdout=out, stderr=err,
                            env=_env())
    assert rc == 0, err.getvalue()[-3000:]
    two = json.loads(out.getvalue().strip().splitlines()[-1])  # process 0 alone reports
    assert cli.main(args) == 0
    one = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert two["processes"] == 2 and one["processes"] == 1
    for k in ("final_loss", "test_rmse", "initial_loss"):
        assert two[k] == pytest.approx(one[k], rel=1e-5), k
    assert two["status"] == one["status"] == "max_steps"


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
        cli.main(["launch", "-n", "2", "--", "compare"])


def test_a_failing_process_stops_the_others():
    code = "import os, sys, time\nif os.environ['MFJAX_PROCESS_ID'] == '1': sys.exit(3)\ntime.sleep(60)\n"
    err = io.StringIO()
    rc = distributed.launch([sys.executable, "-c", code], 2, timeout_s=30, stdout=io.StringIO(), stderr=err)
    assert rc == 3


@pytest.fixture(autouse=True)
def _restore_mfjax_logger():
    import logging

    yield
    log = logging.getLogger("mfjax")
    for h in [h for h in log.handlers if getattr(h, "_mfjax_cli", False)]:
        log.removeHandler(h)
    log.propagate = True
    log.setLevel(logging.NOTSET)
