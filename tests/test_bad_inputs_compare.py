"""Reliability catalogue, comparison side (issue 12 items 3, 6, 7): bad runs files, divergence, rating scale,
and a kill -9 fault test of ``mfjax compare``.

Each case asserts the documented handling (docs/RELIABILITY.md): a stored run file that cannot be
trusted is named with its reason and recomputed, never crashes the grid and is never reused.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mfjax import cli, compare, store

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = dict(m=60, n=40, density=0.2, rank=3, seed=0)
RUNS = ["gd+armijo", "gd+inverse_sqrt", "adam+constant(step_size=0.01)", "gd+constant(step_size=0.2)"]
STEPS, EVERY = 6, 3


@pytest.fixture(scope="module")
def problem():
    return compare.make_problem("synthetic", rank=3, synthetic_kwargs=TINY)


@pytest.fixture(scope="module")
def finished(problem, tmp_path_factory):
    """A finished grid of four runs (one of which diverges): its directory and records."""
    out = tmp_path_factory.mktemp("grid")
    specs = [compare.parse_run(r) for r in RUNS]
    results = compare.run_grid(problem, specs, out, num_steps=STEPS, eval_every=EVERY, progress=False)
    return out, {r["name"]: r for r in results}


def _grid(problem, out, log):
    summary = {}
    specs = [compare.parse_run(r) for r in RUNS]
    results = compare.run_grid(problem, specs, out, num_steps=STEPS, eval_every=EVERY, progress=False,
                               log=log.append, summary=summary)
    return {r["name"]: r for r in results}, summary


def _restamp(rec: dict) -> dict:
    """A record edited *and* given a matching content checksum (only the field checks can catch it)."""
    rec = {k: v for k, v in rec.items() if k != store.CHECKSUM_FIELD}
    rec[store.CHECKSUM_FIELD] = store.record_checksum(rec)
    return rec


# ----------------------------------------------------------------- every bad file: reason, never reused
def _edit(field, value):
    def corrupt(path, rec):
        path.write_text(json.dumps(_restamp({**rec, field: value})))
    return corrupt


def _drop(field):
    def corrupt(path, rec):
        path.write_text(json.dumps(_restamp({k: v for k, v in rec.items() if k != field})))
    return corrupt


BAD_FILES = {
    "list": (lambda p, r: p.write_text("[1, 2, 3]"), "not a JSON object (a list)"),
    "string": (lambda p, r: p.write_text('"final_loss"'), "not a JSON object (a str)"),
    "not-utf8": (lambda p, r: p.write_bytes(b"\xff\xfe" + json.dumps(r).encode("utf-16-le")), "not UTF-8"),
    "truncated": (lambda p, r: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not complete JSON"),
    "empty": (lambda p, r: p.write_bytes(b""), "empty file"),
    "nan-literal": (lambda p, r: p.write_text(json.dumps({**r, "final_loss": float("nan")})), "not strict JSON"),
    "hand-edited": (lambda p, r: p.write_text(json.dumps({**r, "final_loss": 1.0})), "does not match its content"),
    "no-checksum": (lambda p, r: p.write_text(json.dumps({k: v for k, v in r.items() if k != store.CHECKSUM_FIELD})),
                    "no record_checksum"),
    "no-final-loss": (_drop("final_loss"), "lacks final_loss"),
    "no-trace": (_drop("trace"), "lacks trace"),
    "bad-trace": (_edit("trace", [1.0, 2.0]), "has no loss trace"),
    "text-loss": (_edit("final_loss", "0.5"), "non-numeric final_loss"),
    "unknown-status": (_edit("status", "finished"), "unknown status 'finished'"),
    "other-config": (_edit("config_hash", "0" * 16), "made with another configuration"),
    "other-data": (_edit("data_checksum", "sha256:" + "0" * 64), "data_checksum is"),
    "other-run": (_edit("name", "gd+wolfe"), "holds run 'gd+wolfe'"),
    "failed-run": (_edit("error", "MemoryError: out of memory"), "a failed run (MemoryError"),
    "diverged-with-clip": (_edit("status", "diverged"), "a diverged run with a clipped RMSE"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_run_file_is_refused_with_its_reason(case, problem, finished, tmp_path):
    src, records = finished
    name = "gd+armijo"
    path = tmp_path / "gd+armijo.json"
    shutil.copy(src / "runs" / "gd+armijo.json", path)
    corrupt, reason = BAD_FILES[case]
    corrupt(path, json.loads(path.read_text()))
    spec = compare.parse_run(name)
    h = store.config_hash(compare.run_config(problem, spec, STEPS, EVERY, 0))
    rec, why = store.inspect_record(path, h, require_checksum=True, retry_errors=True,
                                    expect={"data_checksum": problem.checksum},
                                    validate=lambda r: compare.validate_record(r, name))
    assert rec is None and reason in why, why
    # the untouched file is accepted by the same checks
    ok, none = store.inspect_record(src / "runs" / "gd+armijo.json", h, require_checksum=True, retry_errors=True,
                                    expect={"data_checksum": problem.checksum},
                                    validate=lambda r: compare.validate_record(r, name))
    assert none is None and ok == records[name]


def test_grid_recomputes_each_bad_file_names_it_and_keeps_the_rest(problem, finished, tmp_path):
    src, records = finished
    out = tmp_path / "cmp"
    shutil.copytree(src, out)
    runs = out / "runs"
    victims = {"gd+armijo": "list", "gd+inverse_sqrt": "not-utf8", "adam+constant(step_size=0.01)": "failed-run"}
    for name, case in victims.items():
        p = runs / f"{name}.json"
        BAD_FILES[case][0](p, json.loads(p.read_text()))
    keep = runs / "gd+constant(step_size=0.2).json"
    stamp = keep.stat().st_mtime_ns
    log = []
    results, summary = _grid(problem, out, log)  # no AttributeError / UnicodeDecodeError / KeyError
    assert sorted(summary["computed"]) == sorted(victims) and summary["resumed"] == ["gd+constant(step_size=0.2)"]
    for name, case in victims.items():
        line = next(m for m in log if m.startswith(str(runs / f"{name}.json")))
        assert BAD_FILES[case][1] in line and line.endswith("recomputing")
        assert results[name]["error"] is None
        assert results[name]["final_loss"] == pytest.approx(records[name]["final_loss"], rel=1e-5)
    assert keep.stat().st_mtime_ns == stamp and results["gd+constant(step_size=0.2)"] == records[
        "gd+constant(step_size=0.2)"]
    _, again = _grid(problem, out, [])
    assert sorted(again["resumed"]) == sorted(records) and "computed" not in again


def test_a_failed_run_is_retried_not_cached(problem, tmp_path):
    out = tmp_path / "cmp"
    specs = [compare.parse_run("gd+no_such_rule")]
    log = []
    first = compare.run_grid(problem, specs, out, num_steps=STEPS, progress=False, log=log.append)
    assert "no_such_rule" in first[0]["error"] and first[0]["status"] == "error"
    summary = {}
    compare.run_grid(problem, specs, out, num_steps=STEPS, progress=False, log=log.append, summary=summary)
    assert summary["computed"] == ["gd+no_such_rule"] and "resumed" not in summary
    assert any("a failed run (ValueError" in m for m in log)


# ----------------------------------------------------------------- divergence
def test_divergence_is_a_status_whatever_the_fit_reports():
    c = compare.classify_status
    assert c("max_steps", 6350.6, 3.0e7) == "diverged"  # issue 12 item 3: bfgs+constant, loss 3e7
    assert c("converged", 10.0, float("inf")) == "diverged" and c("max_steps", 10.0, None) == "diverged"
    assert c("linesearch_failed", 10.0, float("nan")) == "diverged"
    assert c("max_steps", 10.0, 99.0) == "max_steps" and c("max_steps", 10.0, 101.0) == "diverged"
    assert c("nonfinite", 10.0, float("nan")) == "nonfinite" and c("diverged", 10.0, 1.0) == "diverged"
    assert c("max_steps", 10.0, 50.0, factor=2.0) == "diverged"
    assert compare.DIVERGENCE_FACTOR == 10.0


def test_diverged_run_has_no_plausible_clipped_rmse(finished):
    _, records = finished
    bad = records["gd+constant(step_size=0.2)"]
    assert bad["status"] == "diverged" and bad["status_code"] == 4 and bad["test_rmse_clipped"] is None
    assert math.isfinite(bad["initial_loss"]) and bad["reported_status"] in ("diverged", "max_steps", "nonfinite")
    table = compare.summarize(list(records.values()))
    row = next(line for line in table.splitlines() if line.startswith("gd+constant"))
    assert "diverged" in row and "n/a" in row
    names = [line.split()[0] for line in table.splitlines()[2:2 + len(records)]]
    assert names[-1] == "gd+constant(step_size=0.2)"  # sorted after the runs that finished
    ok = records["gd+armijo"]
    assert ok["status"] == "max_steps" and ok["final_loss"] < ok["initial_loss"]


# ----------------------------------------------------------------- rating scale
def _csv(tmp_path, seed=0, lo=0, hi=10):
    rng = np.random.default_rng(seed)
    rows = [(u, i, int(rng.integers(lo, hi + 1))) for u in range(1, 31) for i in range(1, 21) if rng.random() < 0.4]
    rows += [(31, 1, lo), (31, 2, hi)]
    path = tmp_path / "r.csv"
    path.write_text("".join(f"{u},{i},{r}\n" for u, i, r in rows))
    return path


def test_clipped_rmse_uses_the_data_scale_not_1_to_5(tmp_path):
    path = _csv(tmp_path)
    problem = compare.make_problem(str(path), rank=2)
    train = np.asarray(problem.train.values)
    assert problem.rating_scale == (float(train.min()), float(train.max()))
    explicit = compare.make_problem(str(path), rank=2, rating_scale="0,10")
    assert explicit.rating_scale == (0.0, 10.0) and explicit.describe()["rating_scale"] == [0.0, 10.0]
    rec = compare.run_one(compare.parse_run("gd+armijo"), explicit, num_steps=5, eval_every=5)
    assert rec["rating_scale"] == [0.0, 10.0]
    # clipping into a range holding every true rating can only help; (1, 5) on 0..10 data would not
    assert rec["test_rmse_clipped"] <= rec["test_rmse"] + 1e-6
    assert compare.data_rating_scale("ml-10m", problem.train) == (0.5, 5.0)


def test_rating_scale_errors_are_clear(tmp_path):
    path = _csv(tmp_path)
    with pytest.raises(ValueError, match=r"outside the rating scale \[1.0, 5.0\]"):
        compare.make_problem(str(path), rank=2, rating_scale=(1, 5))
    for bad, msg in (("5,1", "LO < HI"), ("a,b", "must be numbers"), ("1", "expected LO,HI"), ("0,inf", "finite")):
        with pytest.raises(ValueError, match=msg):
            compare.parse_rating_scale(bad)


def test_cli_rating_scale_option_is_validated_and_recorded(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["fit", "--rating-scale", "5,1", "--iters", "2"])
    assert e.value.code == 2 and "LO < HI" in capsys.readouterr().err
    path = _csv(tmp_path)
    with pytest.raises(SystemExit, match="outside the rating scale"):
        cli.main(["fit", "--data", str(path), "--rating-scale", "1,5", "--iters", "2"])
    assert cli.main(["fit", "--data", str(path), "--rank", "2", "--rating-scale", "0,10", "--iters", "4",
                     "--run", "gd+armijo", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["rating_scale"] == [0.0, 10.0] and rec["problem"]["rating_scale"] == [0.0, 10.0]
    assert rec["status"] in ("max_steps", "converged", "diverged") and isinstance(rec["status"], str)


# ----------------------------------------------------------------- fault test: kill -9 during mfjax compare
FAULT_RUNS = "gd+armijo,gd+inverse_sqrt,adam+constant(step_size=0.01),cg+armijo"
FAULT_ARGS = ["compare", "--synthetic-size", "60x40", "--synthetic-density", "0.2", "--synthetic-rank", "3",
              "--runs", FAULT_RUNS, "--iters", "6", "--eval-every", "3", "--no-plots", "--no-progress"]


def _complete_files(runs: pathlib.Path) -> dict:
    """Every ``*.json`` in ``runs``: must parse completely at any moment (atomic writes); name -> (mtime, bytes)."""
    out = {}
    for p in runs.glob("*.json"):
        data = p.read_bytes()
        assert isinstance(json.loads(data), dict), f"torn or partial JSON visible: {p}"
        out[p.name] = (p.stat().st_mtime_ns, data)
    return out


def _start(out, env):
    return subprocess.Popen([sys.executable, "-m", "mfjax.cli", *FAULT_ARGS, "--out", str(out)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_after_new_file(proc, runs, before, delay, deadline):
    """SIGKILL ``proc`` ``delay`` s after a run file not in ``before`` appears; return whether it was killed."""
    while time.monotonic() < deadline and proc.poll() is None:
        if runs.exists() and set(_complete_files(runs)) - set(before):
            break
        time.sleep(0.02)
    end = time.monotonic() + delay
    while time.monotonic() < end and proc.poll() is None:
        _complete_files(runs)
        time.sleep(0.02)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    output = proc.communicate()[0]
    assert killed or proc.returncode == 0, output
    return killed


def test_kill_9_during_compare_loses_at_most_the_run_in_flight(tmp_path):
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    out, runs = tmp_path / "cmp", tmp_path / "cmp" / "runs"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax-cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    deadline = time.monotonic() + 75
    snapshot, kills = {}, 0
    for delay in (rng.uniform(0.0, 1.5), rng.uniform(0.5, 3.0)):
        killed = _kill_after_new_file(_start(out, env), runs, snapshot, delay, deadline)
        kills += killed
        now = _complete_files(runs)
        for name, (stamp, data) in snapshot.items():  # (b) a finished run is never recomputed
            assert now[name] == (stamp, data), f"{name} recomputed after a kill (seed {seed})"
        snapshot = now
    assert kills >= 1, f"compare finished before any kill (seed {seed})"
    print(f"seed {seed}: {kills} kills; {len(snapshot)} runs finished before the final resume")
    # a torn file (as a non-atomic writer would leave) is named and recomputed, never trusted
    torn = sorted(snapshot)[0]
    (runs / torn).write_bytes(snapshot[torn][1][:100])
    del snapshot[torn]
    final = subprocess.run([sys.executable, "-m", "mfjax.cli", *FAULT_ARGS, "--out", str(out)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=max(10.0, deadline - time.monotonic() + 15))
    assert final.returncode == 0, final.stdout + final.stderr
    assert f"{runs / torn}: not complete JSON" in final.stdout + final.stderr
    now = _complete_files(runs)
    for name, (stamp, data) in snapshot.items():
        assert now[name] == (stamp, data), f"{name} recomputed on the final resume (seed {seed})"
    total = len(compare.split_runs(FAULT_RUNS))
    m = re.search(r"runs: (\d+) resumed, (\d+) computed", final.stdout)
    assert m and int(m.group(1)) == len(snapshot) and int(m.group(2)) == total - len(snapshot), final.stdout
    results = json.loads((out / "results.json").read_text())  # (c) complete, every record valid
    assert len(results) == total and sorted(now) == sorted(f"{r['name']}.json" for r in results)
    for r in results:
        assert r["error"] is None and compare.validate_record(r, r["name"]) is None
        assert r[store.CHECKSUM_FIELD] == store.record_checksum(r)
