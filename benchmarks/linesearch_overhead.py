"""Per-iteration cost of mfjax's step rules on an ML-1M-sized masked MF problem.

1. mfjax ``armijo`` vs ``optax.scale_by_backtracking_linesearch`` configured
   identically (c1=1e-4, decrease 0.8, increase 1.5, same cap, store_grad):
   they pick the same steps, so the evaluation counts are equal and the time
   per iteration compares the implementations.
2. ``exact_mf``: the coefficient pass + quartic minimisation vs one loss
   evaluation and one value-and-gradient evaluation.
3. Every rule of ``mfjax.linesearch`` with the GD direction: time per
   iteration, evaluations per iteration, loss after the run.

Data: ML-1M through ``mfjax.data.load_movielens`` (all 1,000,209 ratings),
or, when it is absent, a synthetic problem of the same size built with numpy.
Loss: slides' scaling (``scale="sum"``), ``l2=2``, rank 10.

Usage::

    python benchmarks/linesearch_overhead.py [--iters 20] [--repeats 3] [--synthetic]
        [--grad autodiff|closed_form] [--rule-iters 10] [--rule-repeats 1] [--skip-all-rules]
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mfjax.linesearch as ls
from mfjax.data import Ratings
from mfjax.losses import init_factors, masked_mse
from _data import ml1m_dir  # noqa: E402  (benchmarks/_data.py: one data-path rule)

ML1M = ml1m_dir()


def load(synthetic: bool) -> tuple[Ratings, str]:
    if not synthetic:
        try:
            from mfjax.data import load_movielens

            return load_movielens("ml-1m", ML1M), "ML-1M (all ratings)"
        except Exception as e:  # noqa: BLE001 - fall back to synthetic data
            print(f"ML-1M not loaded ({e}); using synthetic data")
    rng = np.random.default_rng(0)
    m, n, nnz, r = 6040, 3706, 1_000_209, 10
    idx = rng.choice(m * n, size=nnz, replace=False)
    rows, cols = idx // n, idx % n
    U, V = rng.standard_normal((m, r)), rng.standard_normal((n, r))
    vals = np.clip(np.round(3.6 + 0.35 * np.einsum("kr,kr->k", U[rows], V[cols])), 1, 5)
    return Ratings.create(rows, cols, vals, (m, n)), "synthetic 6040x3706, 1,000,209 entries"


def best_time(fn, *args, repeats=3):
    jax.block_until_ready(fn(*args))  # compile + warm up
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return best


def interleaved_times(cases: dict, repeats: int) -> dict:
    """``{name: (fn, args)}`` -> ``{name: (best, median, best_cpu)}`` seconds, runs interleaved.

    Interleaving (A, B, A, B, ...) exposes both contenders to the same load
    on a shared machine; best and median wall time are reported, and the
    best process CPU time (all threads), which waiting for a core does not inflate.
    """
    for fn, a in cases.values():
        jax.block_until_ready(fn(*a))  # compile + warm up
    times = {k: [] for k in cases}
    cpu = {k: [] for k in cases}
    for _ in range(repeats):
        for k, (fn, a) in cases.items():
            t, c = time.perf_counter(), time.process_time()
            jax.block_until_ready(fn(*a))
            times[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
    return {k: (min(v), float(np.median(v)), min(cpu[k])) for k, v in times.items()}


def make_run(opt, f, iters):
    vag = optax.value_and_grad_from_state(f)

    @jax.jit
    def run(x):
        def body(carry, _):
            x, s = carry
            v, g = vag(x, state=s)
            u, s = opt.update(g, s, x, value=v, grad=g, value_fn=f)
            info = ls.get_linesearch_info(s)
            return (optax.apply_updates(x, u), s), info

        (x, s), infos = jax.lax.scan(body, (x, opt.init(x)), None, length=iters)
        return x, f(x), infos

    return run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--grad", default="autodiff", choices=["autodiff", "closed_form"],
                    help="gradient of the loss (mfjax.losses.masked_mse(grad=...))")
    ap.add_argument("--rule-iters", type=int, default=10, help="iterations per run in section 3")
    ap.add_argument("--rule-repeats", type=int, default=1, help="timed runs per rule in section 3 (interleaved)")
    ap.add_argument("--skip-all-rules", action="store_true")
    args = ap.parse_args()

    ratings, what = load(args.synthetic)
    ratings = ratings.device_put()
    l2, rank = 2.0, 10
    f = masked_mse(ratings, l2, grad=args.grad)
    x0 = init_factors(jax.random.PRNGKey(0), ratings.shape, rank)
    print(f"# data: {what}; nnz={ratings.nnz}; rank={rank}; l2={l2}; scale=sum; grad={args.grad}; "
          f"jax {jax.__version__}, optax {optax.__version__}, {jax.devices()[0].platform}")
    print(f"# load average at start: {os.getloadavg()}")
    print(f"# f(x0) = {float(jax.jit(f)(x0)):.6g}; iterations per run: {args.iters} (section 3: "
          f"{args.rule_iters}, one timed run); best of {args.repeats}")

    # ---- primitive costs
    jf = jax.jit(f)
    jvg = jax.jit(jax.value_and_grad(f))
    g0 = jvg(x0)[1]
    p0 = jax.tree_util.tree_map(lambda u: -u, g0)
    coeff = jax.jit(lambda x, p: ls.minimize_quartic(ls.mf_quartic_coefficients(x, p, ratings, l2)))
    rule = ls.exact_mf(ratings, l2)

    @jax.jit
    def exact_update(x, p):  # the whole update: coefficients, step, value + gradient at the new point
        u, s = rule.update(p, rule.init(x), x, value=None, grad=None, value_fn=f)
        return u, s.value, s.grad

    @jax.jit
    def exact_previous(x, p):  # the previous scheme: coefficients, step, then value_and_grad at x + a p
        a, _, ok = ls.minimize_quartic(ls.mf_quartic_coefficients(x, p, ratings, l2))
        x1 = jax.tree_util.tree_map(lambda u, d: u + jnp.where(ok, a, 0) * d, x, p)
        return x1, jax.value_and_grad(f)(x1)

    prim = interleaved_times({
        "loss f(x)": (jf, (x0,)),
        "value_and_grad f(x)": (jvg, (x0,)),
        "exact_mf coefficient pass + quartic minimisation": (coeff, (x0, p0)),
        "exact_mf full update (coefficients + gradient from stored e0,e1,e2)": (exact_update, (x0, p0)),
        "previous exact_mf update (coefficients + value_and_grad at new point)": (exact_previous, (x0, p0)),
    }, args.repeats)
    _, v_new, g_new = exact_update(x0, p0)
    x1, (v_old, g_old) = exact_previous(x0, p0)
    rel = max(float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b)) for a, b in zip(g_new, g_old))
    print(f"# new vs previous exact_mf update: value {float(v_new):.7g} vs {float(v_old):.7g}, "
          f"gradient relative difference {rel:.2e}")
    t_f = prim["loss f(x)"][0]
    print("\n## primitive costs (interleaved runs)")
    c_f = prim["loss f(x)"][2]
    print("| operation | best ms | median ms | best / loss | best CPU ms | CPU / loss |")
    print("|---|---|---|---|---|---|")
    for name, (b, med, c) in prim.items():
        print(f"| {name} | {1e3 * b:.1f} | {1e3 * med:.1f} | {b / t_f:.2f} | {1e3 * c:.1f} | {c / c_f:.2f} |")

    # ---- armijo vs optax backtracking, identical configuration
    init_step = 1e-2
    ours = optax.chain(optax.scale(-1.0), ls.armijo(1e-4, 0.8, max_iters=60, initial_step=init_step, growth=1.5))
    theirs = optax.chain(optax.scale(-1.0), optax.scale_by_backtracking_linesearch(
        max_backtracking_steps=60, slope_rtol=1e-4, decrease_factor=0.8, increase_factor=1.5,
        max_learning_rate=init_step, store_grad=True))
    print("\n## GD + Armijo: mfjax vs optax (same c1, factors, cap; store_grad; interleaved runs)")
    print("| rule | best ms / it | median ms / it | best CPU ms / it | value evals / it | grad evals / it |"
          " final loss |")
    print("|---|---|---|---|---|---|---|")
    ours_trial = optax.chain(optax.scale(-1.0), ls.armijo(1e-4, 0.8, max_iters=60, initial_step=init_step,
                                                          growth=1.5, grad_at="trial"))
    runs = {"mfjax.linesearch.armijo (grad_at='end', default)": make_run(ours, f, args.iters),
            "mfjax.linesearch.armijo (grad_at='trial')": make_run(ours_trial, f, args.iters),
            "optax.scale_by_backtracking_linesearch": make_run(theirs, f, args.iters)}
    times = interleaved_times({k: (r, (x0,)) for k, r in runs.items()}, args.repeats)
    steps = {}
    for name, run in runs.items():
        _, fx, infos = run(x0)
        nf = float(np.sum(infos.num_fun_evals)) / args.iters
        ng = float(np.sum(infos.num_grad_evals)) / args.iters
        steps[name] = np.asarray(infos.step_size)
        b, med, c = times[name]
        print(f"| {name} | {1e3 * b / args.iters:.1f} | {1e3 * med / args.iters:.1f} | {1e3 * c / args.iters:.1f} "
              f"| {nf:.2f} | {ng:.2f} | {float(fx):.6g} |")
    tb, mb, cb = times["optax.scale_by_backtracking_linesearch"]
    sb = steps["optax.scale_by_backtracking_linesearch"]
    for name in list(runs)[:2]:
        ta, ma, ca = times[name]
        print(f"\n{name}: same steps as optax: {np.allclose(steps[name], sb, rtol=1e-5)}; time ratio "
              f"mfjax/optax: best wall {ta / tb:.3f}, median wall {ma / mb:.3f}, best CPU {ca / cb:.3f}")

    if args.skip_all_rules:
        return
    # ---- every rule with the GD direction
    print(f"\n## GD + each mfjax rule ({args.rule_iters} iterations; evaluations counted by the rule;"
          " rules that store no value/grad cost one more value_and_grad per iteration in the loop)")
    print(f"(interleaved, best of {args.rule_repeats})")
    print("| rule | ms / iteration | value evals / it | grad evals / it | final loss | all success |")
    print("|---|---|---|---|---|---|")
    rules = {
        "constant(3e-5)": ls.constant(3e-5),
        "inverse_sqrt(3e-5)": ls.inverse_sqrt(3e-5),
        "inverse_lipschitz()": ls.inverse_lipschitz(),
        "inverse_lipschitz(growth=2)": ls.inverse_lipschitz(growth=2.0),
        "armijo(beta=0.5, initial_step=1e-2, growth=1.5)": ls.armijo(beta=0.5, initial_step=1e-2, growth=1.5),
        "weak_wolfe_bisection(initial_step=1e-3)": ls.weak_wolfe_bisection(initial_step=1e-3),
        "strong_wolfe(initial_step=1e-2)": ls.strong_wolfe(initial_step=1e-2),
        "strong_wolfe_zoom(initial_step=1e-3)": ls.strong_wolfe_zoom(initial_step=1e-3),
        "adaptive_gd()": ls.adaptive_gd(),
        "exact_mf": ls.exact_mf(ratings, l2),
        "exact_mf(store_grad=False)": ls.exact_mf(ratings, l2, store_grad=False),
    }
    runs = {name: make_run(optax.chain(optax.scale(-1.0), rule), f, args.rule_iters)
            for name, rule in rules.items()}
    times = interleaved_times({k: (r, (x0,)) for k, r in runs.items()}, args.rule_repeats)
    for name, run in runs.items():
        t = times[name][0]
        _, fx, infos = run(x0)
        nf = float(np.sum(infos.num_fun_evals)) / args.rule_iters
        ng = float(np.sum(infos.num_grad_evals)) / args.rule_iters
        print(f"| {name} | {1e3 * t / args.rule_iters:.1f} | {nf:.2f} | {ng:.2f} | {float(fx):.6g} | "
              f"{bool(np.all(infos.success))} |")
    print(f"# load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
