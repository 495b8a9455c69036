"""SGD with LIBMF's per-row adaptive steps (``adaptive=True``) and the solvers' stored programs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mfjax.core import programs
from mfjax.data import Ratings
from mfjax.losses import BiasedFactors, Factors
from mfjax.solvers.sgd import sgd


def _np_adaptive_full_batch(Z, G, idx_i, idx_j, x, mean, lr, reg_i, reg_j, biased, epochs):
    """Every epoch one simultaneous step over all entries (batch >= nnz), written out in numpy.

    Row z of the stacked Z = [[U, b], [V, c]] steps lr / sqrt(G_z) along the
    negative gradient of each of its entries; after the step G_z grows by the
    mean square (over Z's columns) of each of those gradients.
    """
    Z, G = Z.copy(), G.copy()
    r = Z.shape[1] - (1 if biased else 0)
    for _ in range(epochs):
        zi, zj = Z[idx_i], Z[idx_j]
        pred = zi[:, :r] @ np.ones(r) * 0 + np.sum(zi[:, :r] * zj[:, :r], 1)
        if biased:
            pred = pred + mean + zi[:, r] + zj[:, r]
        e = x - pred
        pi, pj = zj.copy(), zi.copy()
        if biased:
            pi[:, r] = 1.0
            pj[:, r] = 1.0
        gi = e[:, None] * pi - reg_i[:, None] * zi  # negative gradients
        gj = e[:, None] * pj - reg_j[:, None] * zj
        dZ = np.zeros_like(Z)
        np.add.at(dZ, idx_i, (lr / np.sqrt(G[idx_i]))[:, None] * gi)
        np.add.at(dZ, idx_j, (lr / np.sqrt(G[idx_j]))[:, None] * gj)
        np.add.at(G, idx_i, np.mean(gi * gi, 1))
        np.add.at(G, idx_j, np.mean(gj * gj, 1))
        Z = Z + dZ
    return Z, G


@pytest.mark.parametrize("biased", [False, True])
def test_full_batch_adaptive_epochs_match_numpy(biased):
    rng = np.random.default_rng(3)
    m, n, r, k = 7, 6, 3, 25
    flat = rng.choice(m * n, size=k, replace=False)
    rows, cols = flat // n, flat % n
    x = rng.uniform(1, 5, size=k)
    train = Ratings.create(rows, cols, x, (m, n), dtype=np.float64)
    U, V = rng.normal(size=(m, r)) * 0.3, rng.normal(size=(n, r)) * 0.3
    b, c = rng.normal(size=m) * 0.1, rng.normal(size=n) * 0.1
    mean = float(np.mean(x)) if biased else 0.0
    l2, lr = 0.1, 0.3
    with jax.enable_x64(True):
        init = (BiasedFactors(*(jnp.asarray(t) for t in (U, V, b, c)), jnp.asarray(mean)) if biased
                else Factors(jnp.asarray(U), jnp.asarray(V)))
        res = sgd(train, r, key=jax.random.key(0), lr=lr, l2=l2, num_steps=3, batch_size=1000,
                  biases=biased, weighted_l2=True, init=init, dtype=jnp.float64, adaptive=True)
    top = np.concatenate([U, b[:, None]], 1) if biased else U
    bot = np.concatenate([V, c[:, None]], 1) if biased else V
    Z0 = np.concatenate([top, bot])
    reg = np.full(k, l2)
    Z, G = _np_adaptive_full_batch(Z0, np.ones(m + n), rows, cols + m, x, mean, lr, reg, reg, biased, 3)
    np.testing.assert_allclose(np.asarray(res.params.U), Z[:m, :r], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(res.params.V), Z[m:, :r], rtol=1e-12, atol=1e-14)
    if biased:
        np.testing.assert_allclose(np.asarray(res.params.row_bias), Z[:m, r], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(np.asarray(res.params.col_bias), Z[m:, r], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(res.state.accum), G, rtol=1e-12)
    # untouched rows keep G = 1; touched rows grew
    touched = np.zeros(m + n, bool)
    touched[rows], touched[cols + m] = True, True
    assert np.all(G[~touched] == 1.0) and np.all(G[touched] > 1.0)


def test_sequential_adaptive_is_the_hand_formula():
    """batch_size=1: two ratings of row 0, one after the other; the second sees the first's G."""
    rng = np.random.default_rng(0)
    U, V = rng.normal(size=(3, 2)), rng.normal(size=(4, 2))
    train = Ratings.create([0, 0], [2, 3], [4.5, 2.0], (3, 4), dtype=np.float64)
    a, l2 = 0.2, 0.3
    with jax.enable_x64(True):
        init = Factors(jnp.asarray(U), jnp.asarray(V))
        res = sgd(train, 2, key=jax.random.key(3), lr=a, l2=l2, num_steps=1, weighted_l2=True,
                  init=init, dtype=jnp.float64, adaptive=True)
    outs = []
    for order in ([(2, 4.5), (3, 2.0)], [(3, 2.0), (2, 4.5)]):
        Uh, Vh, G = U.copy(), V.copy(), np.ones(7)
        for j, x in order:
            e = x - Uh[0] @ Vh[j]
            gu, gv = e * Vh[j] - l2 * Uh[0], e * Uh[0] - l2 * Vh[j]
            Uh[0], Vh[j] = Uh[0] + a / np.sqrt(G[0]) * gu, Vh[j] + a / np.sqrt(G[3 + j]) * gv
            G[0] += np.mean(gu * gu)
            G[3 + j] += np.mean(gv * gv)
        outs.append((Uh, Vh))
    got = (np.asarray(res.params.U), np.asarray(res.params.V))
    assert any(np.allclose(got[0], o[0], rtol=1e-12) and np.allclose(got[1], o[1], rtol=1e-12) for o in outs)


@pytest.fixture(scope="module")
def lowrank():
    rng = np.random.default_rng(1)
    m, n, r = 120, 80, 3
    X = 3.0 + rng.normal(size=(m, r)) @ rng.normal(size=(r, n)) / np.sqrt(r) + 0.05 * rng.normal(size=(m, n))
    rows, cols = np.nonzero(rng.random((m, n)) < 0.4)
    perm = rng.permutation(rows.size)
    k = int(0.8 * rows.size)
    tr, te = perm[:k], perm[k:]
    return (Ratings.create(rows[tr], cols[tr], X[rows[tr], cols[tr]], (m, n)),
            Ratings.create(rows[te], cols[te], X[rows[te], cols[te]], (m, n)))


def test_adaptive_steps_stay_stable_where_plain_sgd_diverges(lowrank):
    """lr = 0.3, minibatches of 64: plain SGD diverges in its second epoch; the per-row steps
    lr / sqrt(G) shrink as G grows and the fit reaches the noise level (0.05) within 2x."""
    train, test = lowrank
    kw = dict(key=jax.random.key(0), lr=0.3, l2=0.02, num_steps=30, biases=True, weighted_l2=True,
              batch_size=64, eval_set=test)
    with pytest.raises(FloatingPointError, match="diverged"):
        sgd(train, 3, **kw)
    res = sgd(train, 3, adaptive=True, **kw)
    ev = np.asarray(res.trace.eval_metric)
    assert ev[-1] < 0.1 and ev[-1] < ev[0]
    loss = np.asarray(res.trace.loss)
    assert loss[-1] < 0.1 * loss[0]
    G = np.asarray(res.state.accum)
    assert G.shape == (200,) and np.all(G >= 1.0) and np.all(np.isfinite(G)) and G.max() > 2.0
    plain = sgd(train, 3, **{**kw, "lr": 0.03})
    assert plain.state.accum is None


_PROCESS = r"""
import json, sys
import jax, numpy as np
import mfjax as mf
from mfjax.core import programs
cache = programs.ProgramCache(sys.argv[1])
programs.set_default_cache(cache)
train = mf.data.synthetic(m=60, n=40, rank=3, density=0.3, seed=0)
kw = dict(key=jax.random.key(0), lr=0.05, l2=0.05, num_steps=4, biases=True, weighted_l2=True,
          batch_size=64, adaptive=True, loss_trace="running")
res = mf.solvers.sgd(train, 3, **kw)
out = dict(hits=cache.hits, misses=cache.misses, U=np.asarray(res.params.U).tolist(),
           loss=np.asarray(res.trace.loss).tolist())
mf.solvers.sgd(train, 3, **{**kw, "adaptive": False})        # another setting: another program
mf.solvers.als(train, 3, l2=0.1, num_steps=2, biases=True)   # ALS stores its own
mf.solvers.sgd(train, 3, **{**kw, "schedule": lambda s: 0.01})  # a function: never keyed, never stored
out.update(hits_all=cache.hits, misses_all=cache.misses)
print("RESULT " + json.dumps(out))
"""


def _fresh_process(directory):
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}  # XLA's cache off
    proc = subprocess.run([sys.executable, "-c", _PROCESS, str(directory)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])


def test_solver_runs_are_stored_and_loaded_by_a_new_process(tmp_path):
    """A first process compiles and stores the solvers' runs; a second loads them (no tracing): same result."""
    first = _fresh_process(tmp_path)
    assert (first["hits"], first["misses"]) == (0, 1)
    assert (first["hits_all"], first["misses_all"]) == (0, 3)
    assert len(list(tmp_path.glob("*.bin"))) == 3
    second = _fresh_process(tmp_path)
    assert (second["hits_all"], second["misses_all"]) == (3, 0)
    assert second["U"] == first["U"] and second["loss"] == first["loss"]
    with pytest.raises(TypeError, match="ProgramCache"):
        programs.set_default_cache("/tmp")
