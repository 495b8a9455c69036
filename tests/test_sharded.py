"""The sharded objective, solvers and main job equal the single-device ones (4 virtual CPU devices).

``XLA_FLAGS=--xla_force_host_platform_device_count=4`` must be set before
JAX starts, so the checks run in child processes (tests/_sharded_check.py)
with a timeout; this process keeps its single device.  Each test below is
one child process running one part of the checks (every compilation once):
one test per process so that pytest-xdist never runs a part twice (a
module-scoped fixture is set up once per worker) and spreads the parts over
its workers.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

import mfjax as mf
from mfjax import objective as O

HERE = pathlib.Path(__file__).resolve().parent


def _run_part(part: str, tmp_path) -> dict:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(HERE / "_sharded_check.py"), part, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _below(results: dict, keys, tol: float) -> list:
    """The keys whose relative difference is not below ``tol`` (all are reported at once)."""
    return [(k, results[k]) for k in keys if not results[k] < tol]


def test_sharded_formulas_equal_single_device(tmp_path):
    """Loss, gradient (closed form and autodiff), quartic, Gauss-Newton diagonal, normal equations on
    1, 2, 4 devices to 1e-5; shards of padding only; the metric ignores the padding."""
    r = _run_part("formulas", tmp_path)
    keys = [f"{k}_{d}" for d in (1, 2, 4) for k in ("loss", "grad", "autodiff", "quartic", "gn", "normal")]
    assert not _below(r, keys + ["tiny", "rmse"], 1e-5)


def test_fit_on_a_mesh_equals_single_device(tmp_path):
    """mf.fit with Armijo, exact_mf and Gauss-Newton + exact_mf on 2 and 4 devices: parameters to 1e-4,
    the same status."""
    r = _run_part("fits", tmp_path)
    rules, devs = ("armijo", "exact", "gn_exact"), (2, 4)
    assert not _below(r, [f"fit_{rule}_{d}" for rule in rules for d in devs], 1e-4)
    for rule in rules:
        for d in devs:
            s1, s0 = r[f"fit_{rule}_status_{d}"]
            assert s1 == s0, (rule, d)


def test_sharded_als_and_dsgd_equal_single_device(tmp_path):
    """ALS (rows split, balanced by ratings) and DSGD (blocks with ppermute) equal one device."""
    r = _run_part("solvers", tmp_path)
    assert not _below(r, ["als_0_4", "als_1_2", "dsgd_0_2", "dsgd_1_4"], 1e-5)
    assert not _below(r, ["als_big_4"], 1e-4)  # 100k ratings on 4 devices: finishes (no LAPACK deadlock)
    slots = r["als_slots_per_device"]
    assert len(slots) == 4 and sum(slots) == pytest.approx(r["als_nnz"])
    assert min(slots) > 0.5 * max(slots), slots  # every device has work, none has most of it
    assert "rows" in r["als_layout_spec"]
    # the tiered layout (the one-device default) on 2 and 4 devices, a row far longer than the rest
    # (exact sweeps on 2 devices, CG with biases on 4)
    assert not _below(r, ["tiers_als_0_2", "tiers_als_1_4"], 1e-4)
    for tag, d in (("0_2", 2), ("1_4", 4)):
        assert r[f"tiers_count_{tag}"] == [2, 2]  # both sides have a tier of long rows
        per_device, one_device, untiered = r[f"tiers_slots_{tag}"]
        assert per_device <= one_device < untiered, (tag, per_device, one_device, untiered)  # bounded as on one device


def test_sharded_vector_descent_and_compare_devices_equal_single_device(tmp_path):
    """Vector descent (each device its own rows of U and V; uneven blocks, blocks with no ratings, empty
    rows / columns, more devices than rows) equals one device; ``mfjax compare --devices 2`` equals
    ``--devices 1``."""
    r = _run_part("vd_compare", tmp_path)
    # vector descent: factors after 3 sweeps and the traced loss
    assert not _below(r, ["vd_4", "vd_loss_4", "vd_edge"], 1e-4)
    per = r["vd_ratings_per_device"]
    assert sum(per) == r["als_nnz"] and min(per) > 0.5 * max(per), per  # balanced by ratings
    assert len(set(r["vd_rows_per_device"])) > 1  # ... so the row blocks are uneven
    assert 0 in r["vd_edge_ratings_per_device"] and sum(r["vd_edge_ratings_per_device"]) == 6
    assert r["vd_edge_empty_row_col"] == 0.0 and r["vd_edge_finite"]
    assert "parallel" in (r["vd_interleaved_error"] or "")
    # the main job on 2 devices: the same final losses as on one (DSGD: its 2-block schedule on one device)
    assert r["compare_rc_1"] == r["compare_rc_2"] == 0
    recs = {d: {x["name"]: x for x in json.loads((tmp_path / f"d{d}" / "results.json").read_text())}
            for d in (1, 2)}
    assert recs[2]["gd+armijo"]["problem"]["devices"] == 2
    for name, rec in recs[1].items():
        assert rec["error"] is None and recs[2][name]["error"] is None, name
        want = r["compare_dsgd_2_blocks"] if name == "solver-dsgd" else rec["final_loss"]
        assert abs(recs[2][name]["final_loss"] - want) <= 1e-4 * abs(want), (name, want, recs[2][name]["final_loss"])


def test_bad_sharding_requests():
    r = mf.data.synthetic(m=20, n=10, rank=2, density=0.3, seed=0)
    mesh = Mesh(np.array(jax.devices()[:1]), ("entries",))
    sh = O.shard_objective(O.mf_objective(r), mesh)
    with pytest.raises(ValueError, match="already sharded"):
        O.shard_objective(sh, mesh)
    with pytest.raises(ValueError, match="not an axis"):
        O.shard_objective(O.mf_objective(r), mesh, axis="rows")
    back = O.unshard_objective(sh)
    p = mf.init_factors(jax.random.key(0), r.shape, 2)
    np.testing.assert_allclose(float(O.value(back, p)), float(O.value(O.mf_objective(r), p)),
                               rtol=1e-5)
    from mfjax.solvers.rowwise.sharded import row_blocks, shard_row_layout

    with pytest.raises(ValueError, match="not an axis"):
        shard_row_layout(r, mesh, axis="rows")
    # balanced by ratings: one heavy row takes a block of its own, the next block is empty
    np.testing.assert_array_equal(row_blocks(np.array([4, 0, 2]), 4), [0, 1, 1, 3, 3])
    np.testing.assert_array_equal(row_blocks(np.array([1, 1, 1, 1]), 2), [0, 2, 4])
