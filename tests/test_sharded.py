"""The sharded objective equals the single-device one (4 virtual CPU devices, in a subprocess).

``XLA_FLAGS=--xla_force_host_platform_device_count=4`` must be set before
JAX starts, so the checks run in a child process (tests/_sharded_check.py)
with a timeout; this process keeps its single device.
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


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(HERE / "_sharded_check.py")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("ndev", [1, 2, 4])
def test_sharded_formulas_equal_single_device(results, ndev):
    for key in ("loss", "grad", "autodiff", "quartic", "gn", "normal"):
        assert results[f"{key}_{ndev}"] < 1e-5, (key, results[f"{key}_{ndev}"])


@pytest.mark.parametrize("ndev", [1, 2, 4])
@pytest.mark.parametrize("rule", ["armijo", "exact", "gn_exact"])
def test_fit_on_a_mesh_equals_single_device(results, ndev, rule):
    assert results[f"fit_{rule}_{ndev}"] < 1e-4
    s1, s0 = results[f"fit_{rule}_status_{ndev}"]
    assert s1 == s0


def test_padding_only_shards_and_metrics(results):
    assert results["tiny"] < 1e-5
    assert results["rmse"] < 1e-5


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


@pytest.mark.parametrize("biases,ndev", [(0, 1), (0, 4), (1, 2), (1, 4)])
def test_sharded_als_equals_single_device(results, ndev, biases):
    assert results[f"als_{biases}_{ndev}"] < 1e-5


def test_sharded_als_splits_rows_over_every_device_balanced_by_ratings(results):
    slots = results["als_slots_per_device"]
    assert len(slots) == 4 and sum(slots) == pytest.approx(mf.data.synthetic(m=200, n=150, rank=3, density=0.12,
                                                                               seed=1).nnz)
    assert min(slots) > 0.5 * max(slots), slots  # every device has work, none has most of it
    assert "rows" in results["als_layout_spec"]


@pytest.mark.parametrize("biases,ndev", [(0, 2), (1, 4)])
def test_dsgd_on_a_mesh_equals_the_one_device_schedule(results, ndev, biases):
    assert results[f"dsgd_{biases}_{ndev}"] < 1e-5
