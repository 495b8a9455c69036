"""experiments/dmf/gpu_authors.py: the budget planner and the record bundle that carries results back."""

import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ga():
    spec = importlib.util.spec_from_file_location("gpu_authors", ROOT / "experiments" / "dmf" / "gpu_authors.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_plan_skips_finished_and_respects_the_budget(ga):
    done = {(0, "table1"), (1, "dmfd")}
    todo = ga.pending_tasks([0, 1], ["table1", "dmfd", "als"], lambda s, t: (s, t) in done)
    assert todo == [(0, "dmfd"), (0, "als"), (1, "table1"), (1, "als")]
    # prior until a task of the kind was measured, then the longest measurement; the reserve is kept free
    assert ga.fits("dmfd", 0.0, 420.0, {}) == (True, ga.PRIOR_S["dmfd"])
    assert ga.fits("dmfd", 420.0 - ga.RESERVE_S - 50.0, 420.0, {"dmfd": [40.0, 50.0]}) == (True, 50.0)
    assert ga.fits("dmfd", 420.0 - ga.RESERVE_S - 49.0, 420.0, {"dmfd": [40.0, 50.0]}) == (False, 50.0)


def test_bundle_round_trip_restores_records_and_tables(ga, tmp_path):
    src = tmp_path / "work" / "runs"
    src.mkdir(parents=True)
    recs = {}
    for seed in (0, 1):
        rec = {"task": "table1", "seed": seed, "wall_time_s": 1.0,
               "metrics": {"areas": {a: {"rmse": 0.9 + 0.01 * seed, "mae": 0.7, "n": 5}
                                     for a in ("I", "II", "III", "IV")}}}
        name = f"authors_seed{seed}_table1.json"
        (src / name).write_text(json.dumps(rec))
        recs[name] = rec
    (src / "smoke_seed0_table1.json").write_text("{}")  # another profile: not bundled
    bundle = tmp_path / "out" / ga.BUNDLE
    bundle.parent.mkdir()
    assert ga.write_bundle(src, bundle, "authors") == 2
    dest = tmp_path / "records"
    assert sorted(ga.unpack_bundle(bundle, dest)) == sorted(recs)
    for name, rec in recs.items():
        assert json.loads((dest / "runs" / name).read_text()) == rec
    summ = json.loads((dest / "summary_authors.json").read_text())
    assert summ["table1"]["I"]["n"] == 2 and abs(summ["table1"]["I"]["mean"] - 0.905) < 1e-12
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"profile": "authors", "records": {"../x.json": {}}}))
    with pytest.raises(ValueError, match="bad record name"):
        ga.unpack_bundle(bad, dest)


def test_budget_alarm_stops_a_task_cleanly_and_records_nothing(ga, tmp_path, monkeypatch, capsys):
    """A task still running at the budget is aborted (SIGALRM), not recorded, and the bundle is still written."""
    import time

    class FakeContext:
        def __init__(self, profile_name, data_dir, workdir, ckpt_dir, command):
            self.profile_name = profile_name

        def finished(self, seed, task):
            return False

    def slow_task(ctx, seed, task):
        for _ in range(200):  # 20 s unless interrupted
            time.sleep(0.1)
        raise AssertionError("the budget alarm did not fire")

    monkeypatch.setattr(ga.rt, "Context", FakeContext)
    monkeypatch.setattr(ga.rt, "run_task", slow_task)
    monkeypatch.setitem(ga.PRIOR_S, "table1", 0.0)
    monkeypatch.setattr(ga, "T_START", time.time())
    t0 = time.time()
    rc = ga.main(["--budget-s", str(ga.RESERVE_S + 1.0), "--seeds", "0", "--tasks", "table1", "--allow-cpu",
                  "--out", str(tmp_path / "out"), "--records", str(tmp_path / "rec")])
    assert rc == 0 and time.time() - t0 < 10.0
    out = capsys.readouterr().out
    assert "budget reached during seed 0 task table1: that task was not recorded" in out
    bundle = json.loads((tmp_path / "out" / ga.BUNDLE).read_text())
    assert bundle["records"] == {}
    assert (tmp_path / "out" / "tables_authors.md").exists()
