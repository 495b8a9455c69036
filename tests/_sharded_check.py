"""Run in a subprocess with 4 virtual CPU devices (see tests/test_sharded.py)."""
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

import mfjax as mf
from mfjax import objective as O

assert len(jax.devices()) == 4, jax.devices()
out = {}
ratings = mf.data.synthetic(m=120, n=90, rank=3, density=0.15, seed=0)
p = mf.init_factors(jax.random.key(0), ratings.shape, 3)
full = O.mf_objective(ratings, 0.7, scale="mean", chunk_size=256)
rel = lambda a, b: float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))
RULES = [("armijo", mf.optim.gd(linesearch=mf.linesearch.armijo())),
         ("exact", mf.optim.gd(linesearch=mf.linesearch.exact_mf())),
         ("gn_exact", optax.chain(mf.optim.mf_preconditioner(kind="block"),
                                  mf.optim.gd_direction(), mf.linesearch.exact_mf()))]
REF = {name: mf.fit(O.loss, opt, p, 12, loss_args=(full,)) for name, opt in RULES}
for ndev in (1, 2, 4):
    mesh = Mesh(np.array(jax.devices()[:ndev]), ("entries",))
    sh = O.shard_objective(full, mesh)
    v, g = jax.jit(O.value_and_grad)(sh, p)
    v0, g0 = O.value_and_grad(full, p)
    gad = jax.grad(lambda q: O.value(sh, q))(p)
    d = jax.tree.map(lambda x: 0.1 * x, g0)
    q, q0 = O.quartic_coefficients(sh, p, d), O.quartic_coefficients(full, p, d)
    dg, dg0 = O.gauss_newton_diagonal(sh, p), O.gauss_newton_diagonal(full, p)
    A, b, n = O.normal_equations(sh, p.V)
    A0, b0, n0 = O.normal_equations(full, p.V)
    out[f"loss_{ndev}"] = abs(float(v) - float(v0)) / abs(float(v0))
    out[f"grad_{ndev}"] = max(rel(a, b_) for a, b_ in zip(g, g0))
    out[f"autodiff_{ndev}"] = max(rel(a, b_) for a, b_ in zip(gad, g0))
    out[f"quartic_{ndev}"] = rel(q, q0)
    out[f"gn_{ndev}"] = max(rel(a, b_) for a, b_ in zip(dg, dg0))
    out[f"normal_{ndev}"] = max(rel(A, A0), rel(b, b0), rel(n, n0))
    for name, opt in RULES:
        r1 = mf.fit(O.loss, opt, p, 12, loss_args=(sh,))
        r0 = REF[name]
        out[f"fit_{name}_{ndev}"] = max(rel(a, b_) for a, b_ in zip(r1.params, r0.params))
        out[f"fit_{name}_status_{ndev}"] = [int(r1.status), int(r0.status)]
# more devices than entries: shards of padding only
tiny = mf.data.Ratings(np.array([0, 1, 2]), np.array([0, 1, 0]), np.array([1.0, 2.0, 3.0]), (3, 2))
pt = mf.init_factors(jax.random.key(1), (3, 2), 1)
mesh = Mesh(np.array(jax.devices()), ("entries",))
ft = O.mf_objective(tiny, 0.1)
out["tiny"] = abs(float(O.value(O.shard_objective(ft, mesh), pt)) - float(O.value(ft, pt)))
# the metric on a sharded objective ignores the padding
out["rmse"] = abs(float(mf.metrics.rmse(p, O.shard_objective(full, mesh)))
                  - float(mf.metrics.rmse(p, ratings)))
# sharded ALS: each device solves its own rows; equal to one device
als_r = mf.data.synthetic(m=200, n=150, rank=3, density=0.12, seed=1)
for biases in (False, True):
    ref = mf.solvers.als(als_r, 3, l2=1.5, num_steps=4, biases=biases, weighted_l2=biases)
    for ndev in ((2, 4) if biases else (1, 4)):
        mesh = Mesh(np.array(jax.devices()[:ndev]), ("rows",))
        res = mf.solvers.als(als_r, 3, l2=1.5, num_steps=4, biases=biases, weighted_l2=biases, mesh=mesh)
        out[f"als_{int(biases)}_{ndev}"] = max(rel(a, b_) for a, b_ in zip(jax.tree.leaves(res.params),
                                                                              jax.tree.leaves(ref.params)))
mesh = Mesh(np.array(jax.devices()), ("rows",))
sp = mf.solvers.shard_als_problem(mf.solvers.als_objective(als_r, l2=1.0), mesh)
real = [float(np.asarray(s.data).sum()) for s in sp.rows.mask.addressable_shards]
out["als_slots_per_device"] = real
out["als_layout_spec"] = str(sp.rows.entry.sharding.spec)
# DSGD: one block per device, V blocks passed with ppermute; equals the one-device schedule
for biases in (False, True):
    kw = dict(l2=1.0, lr=0.02, num_steps=3, batch_size=4, biases=biases, key=jax.random.key(2))
    for ndev in ((4,) if biases else (2,)):
        ref = mf.solvers.dsgd(als_r, 3, blocks=ndev, **kw)
        res = mf.solvers.dsgd(als_r, 3, mesh=Mesh(np.array(jax.devices()[:ndev]), ("blocks",)), **kw)
        out[f"dsgd_{int(biases)}_{ndev}"] = max(rel(a, b_) for a, b_ in zip(jax.tree.leaves(res.params),
                                                                               jax.tree.leaves(ref.params)))
json.dump(out, sys.stdout)
