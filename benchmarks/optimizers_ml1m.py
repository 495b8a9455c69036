"""Optimizers x step rules on the slides' best model: ML-1M, 90/10 split, r = 10, lambda = 2 (scale="sum").

Phases (run separately; each writes JSON into --work, ``report`` turns them
into benchmarks/results/optimizers.md and PNG plots)::

    python benchmarks/optimizers_ml1m.py best  --steps 1500   # GD + 1/L estimate: test RMSE target 0.86
    python benchmarks/optimizers_ml1m.py grid  --steps 20     # every direction x step rule, fixed budget
    python benchmarks/optimizers_ml1m.py race  --steps 150    # time to a fixed training loss vs optax.lbfgs
    python benchmarks/optimizers_ml1m.py race  --grad closed_form --tag race_cf   # optax.lbfgs on the closed-form gradient
    python benchmarks/optimizers_ml1m.py race --steps 100 --target-step 60 --repeats 3 --grad closed_form \
        --tag race_cf --als --only "cg(pr+),GN"   # + Gauss-Newton preconditioned rules, ALS solver as context
    python benchmarks/optimizers_ml1m.py report

The grid compiles ONE program for all pairs (:func:`mfjax.optim.switch`),
so each cell costs only its run time.  BFGS is left out of the ML-1M grid:
its dense inverse Hessian over n = (6040 + 3706) * 10 = 97,460 parameters
would take 38 GB; ``optax.lbfgs`` is the limited-memory alternative.  The
race runs BFGS keeping every pair of the run instead (``bfgs(memory=steps)``,
the compact representation: the same algorithm at O(steps n)).
Machine: 2-core CPU shared with other jobs, JAX CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mfjax.linesearch as ls
import mfjax.optim as mo
from mfjax.core import status_name
from mfjax.data import load_movielens, split
from mfjax.loop import fit
from mfjax.losses import init_factors, masked_mse
from mfjax.metrics import rmse
from _data import ml1m_dir  # noqa: E402  (benchmarks/_data.py: one data-path rule)

ROOT = pathlib.Path(__file__).resolve().parent
RESULTS = ROOT / "results"
RANK, L2, SCALE, SEED = 10, 2.0, "sum", 0
DIRECTIONS = ["gd", "heavy_ball", "nesterov", "adagrad", "rmsprop", "adam"]
FIRST_ORDER = {"gd", "heavy_ball", "nesterov"}
# Problem-scale steps for the rules that need one (the "sum"-scaled ML-1M loss
# has 1/L ~ 2e-4 along -g: found by the 1/L estimate itself); the adaptive
# directions are ~unit per coordinate.
GAMMA = {"first": 2e-4, "adaptive": 1e-2}


def step_rules(train, family):
    g = GAMMA[family]
    return {
        "constant": ls.constant(g),
        "inverse_sqrt": ls.inverse_sqrt(2 * g),
        "inverse_lipschitz": ls.inverse_lipschitz(growth=2.0),
        "armijo": ls.armijo(growth=2.0),
        "weak_wolfe_bisection": ls.weak_wolfe_bisection(initial_step=g),
        "strong_wolfe": ls.strong_wolfe(initial_step=10 * g),
        "strong_wolfe_zoom": ls.strong_wolfe_zoom(initial_step=g),
        "adaptive_gd": ls.adaptive_gd(),
        "exact_mf": ls.exact_mf(train, L2, scale=SCALE),
    }


STEP_NAMES = [
    "constant", "inverse_sqrt", "inverse_lipschitz", "armijo", "weak_wolfe_bisection",
    "strong_wolfe", "strong_wolfe_zoom", "adaptive_gd", "exact_mf",
]


def problem(grad="autodiff"):
    ratings = load_movielens("ml-1m", data_dir=ml1m_dir())
    train, test = split(ratings, (0.9, 0.1), seed=SEED)
    train, test = train.device_put(), test.device_put()
    loss = masked_mse(train, L2, scale=SCALE, grad=grad)
    p0 = init_factors(jax.random.PRNGKey(SEED), ratings.shape, RANK)
    return train, test, loss, p0


def _timed(compiled, *args, repeats=1):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - t)
    return out, best


def _summary(res, test_rmse, wall):
    return {
        "final_loss": float(res.value),
        "test_rmse": float(test_rmse),
        "fun_evals": int(res.num_fun_evals),
        "grad_evals": int(res.num_grad_evals),
        "steps": int(res.num_steps),
        "status": status_name(res.status),
        "wall_s": wall,
        "loss_trace": [float(x) for x in np.asarray(res.trace.loss)],
        "fe_trace": [int(x) for x in np.asarray(res.trace.num_fun_evals)],
        "ge_trace": [int(x) for x in np.asarray(res.trace.num_grad_evals)],
    }


# ------------------------------------------------------------------ phases
def phase_best(args):
    train, test, loss, p0 = problem()
    opt = mo.gd(linesearch=ls.inverse_lipschitz(growth=2.0))
    ev = lambda p: rmse(p, test)  # noqa: E731
    run = jax.jit(lambda p: fit(loss, opt, p, args.steps, eval_fn=ev, eval_every=args.eval_every))
    t = time.perf_counter()
    compiled = run.lower(p0).compile()
    compile_s = time.perf_counter() - t
    res, wall = _timed(compiled, p0)
    out = _summary(res, rmse(res.params, test), wall)
    out.update(
        compile_s=compile_s,
        eval_trace=[float(x) for x in np.asarray(res.trace.eval_metric)],
        test_rmse_clipped=float(rmse(res.params, test, clip=(1, 5))),
        train_rmse=float(rmse(res.params, train)),
        initial_loss=float(loss(p0)),
        step_trace=[float(x) for x in np.asarray(res.trace.step_size)],
    )
    _save(args, "best", out)
    print(json.dumps({k: v for k, v in out.items() if "trace" not in k}, indent=1))


def phase_grid(args):
    train, test, loss, p0 = problem()
    rules = {fam: step_rules(train, fam) for fam in GAMMA}
    step_list = [rules["first"][s] for s in STEP_NAMES] + [rules["adaptive"][s] for s in STEP_NAMES]
    dirs = [mo.direction(d) for d in DIRECTIONS]

    def run(i, j, p):
        opt = optax.chain(mo.switch(dirs, i), mo.switch(step_list, j))
        res = fit(loss, opt, p, args.steps)
        return res, rmse(res.params, test)

    i32 = jnp.asarray(0, jnp.int32)
    t = time.perf_counter()
    compiled = jax.jit(run).lower(i32, i32, p0).compile()
    compile_s = time.perf_counter() - t
    print(f"grid program compiled in {compile_s:.1f} s", flush=True)
    cells = {}
    for i, d in enumerate(DIRECTIONS):
        fam = 0 if d in FIRST_ORDER else 1
        for j, s in enumerate(STEP_NAMES):
            jj = jnp.asarray(j + fam * len(STEP_NAMES), jnp.int32)
            (res, te), wall = _timed(compiled, jnp.asarray(i, jnp.int32), jj, p0)
            cells[f"{d}|{s}"] = _summary(res, te, wall)
            c = cells[f"{d}|{s}"]
            print(f"{d:10s} {s:22s} loss {c['final_loss']:.4e} rmse {c['test_rmse']:.4f} "
                  f"fe {c['fun_evals']} ge {c['grad_evals']} {c['status']} {wall:.1f}s", flush=True)
            _save(args, "grid", {"steps": args.steps, "compile_s": compile_s,
                                 "initial_loss": float(loss(p0)), "cells": cells})


def race_candidates(train, steps: int = 150):
    # Sign convention: optax.scale_by_lbfgs() returns H g (optax.lbfgs multiplies it by
    # -learning_rate); mfjax step rules expect a descent direction, hence scale(-1).
    # Gauss-Newton (block-)Jacobi preconditioners of the masked loss (mfjax.optim.mf_preconditioner):
    # "GN diag" divides by the diagonal of the per-row GN blocks, "GN block" solves each row's
    # r x r block (-z is then the simultaneous-ALS direction U_ALS(V) - U, V_ALS(U) - V).
    exact = ls.exact_mf(train, L2, scale=SCALE)

    def pre(kind, refresh=1):
        return mo.mf_preconditioner(train, L2, kind=kind, scale=SCALE, refresh_every=refresh)

    return {
        "optax.lbfgs (zoom)": optax.lbfgs(),
        "mfjax pcg(pr+, GN diag) + exact_mf": mo.cg("pr+", preconditioner=pre("diagonal"), linesearch=exact),
        "mfjax pcg(pr+, GN diag, refresh 5) + exact_mf": mo.cg(
            "pr+", preconditioner=pre("diagonal", 5), linesearch=exact),
        "mfjax pcg(pr+, GN block) + exact_mf": mo.cg("pr+", preconditioner=pre("block"), linesearch=exact),
        "mfjax GN block (simultaneous ALS) + exact_mf": optax.chain(
            pre("block"), mo.gd_direction(), exact),
        "mfjax GN block, refresh 3 + exact_mf": optax.chain(pre("block", 3), mo.gd_direction(), exact),
        "mfjax GN block, refresh 5 + exact_mf": optax.chain(pre("block", 5), mo.gd_direction(), exact),
        "mfjax cg(pr+) + exact_mf": mo.cg("pr+", linesearch=exact),
        "mfjax cg(hs+) + exact_mf": mo.cg("hs+", linesearch=exact),
        "optax L-BFGS direction + mfjax exact_mf": optax.chain(
            optax.scale_by_lbfgs(), optax.scale(-1.0), exact),
        "mfjax nesterov(0.5) + exact_mf": mo.nesterov(0.5, linesearch=exact),
        "mfjax gd + exact_mf": mo.gd(linesearch=exact),
        "optax L-BFGS direction + mfjax armijo": optax.chain(
            optax.scale_by_lbfgs(), optax.scale(-1.0), ls.armijo()),
        "mfjax gd + 1/L estimate": mo.gd(linesearch=ls.inverse_lipschitz(growth=2.0)),
        # BFGS keeping every pair of the run (compact representation: the dense algorithm at O(steps n))
        "mfjax bfgs (all pairs) + armijo": mo.bfgs(memory=steps, linesearch=ls.armijo()),
        "mfjax bfgs (all pairs) + strong_wolfe_zoom": mo.bfgs(memory=steps, linesearch=ls.strong_wolfe_zoom()),
        "mfjax bfgs (all pairs) + exact_mf": mo.bfgs(memory=steps, linesearch=exact),
    }


def phase_race(args):
    """Steps to the target from one untimed run each, then every method AOT-compiled
    (:func:`mfjax.loop.compile_fit`) for exactly its steps-to-target and timed
    round-robin (A, B, C, A, B, C, ...) so all see the same machine load; best of repeats."""
    from mfjax.loop import compile_fit

    train, test, loss, p0 = problem(args.grad)
    cands = race_candidates(train, args.steps)
    if args.only:
        keep = ["optax.lbfgs (zoom)"] + [k for k in cands if any(s in k for s in args.only.split(","))]
        cands = {k: cands[k] for k in cands if k in keep}
    traces = {}
    for name, opt in cands.items():
        res = fit(loss, opt, p0, args.steps)
        traces[name] = np.asarray(res.trace.loss)
        print(f"{name}: final {float(res.value):.5e} status {status_name(res.status)}", flush=True)
    ref = traces["optax.lbfgs (zoom)"]
    target = float(ref[args.target_step - 1]) if args.target is None else args.target
    out = {"target_loss": target, "steps": args.steps, "methods": {}, "target_step": args.target_step,
           "grad": args.grad, "load_before": os.getloadavg(),
           "command": "python benchmarks/optimizers_ml1m.py " + shlex.join(sys.argv[1:])}
    runs = {}
    for name, opt in cands.items():
        tr = traces[name]
        hit = np.nonzero(tr <= target)[0]
        out["methods"][name] = {"loss_trace": [float(x) for x in tr]}
        if hit.size:
            k = int(hit[0]) + 1
            runs[name] = (k, compile_fit(loss, opt, p0, num_steps=k))
    times = {name: [] for name in runs}
    results = {}
    for _ in range(args.repeats):
        for name, (k, run) in runs.items():
            t = time.perf_counter()
            results[name] = jax.block_until_ready(run(p0))
            times[name].append(time.perf_counter() - t)
    out["load_after"] = os.getloadavg()
    if args.als:
        out["als"] = _race_als(train, p0, target, args.repeats)
    for name, (k, run) in runs.items():
        res = results[name]
        out["methods"][name].update(
            steps_to_target=k, time_to_target_s=min(times[name]), median_s=float(np.median(times[name])),
            fun_evals=int(res.num_fun_evals), grad_evals=int(res.num_grad_evals),
            reached=float(res.value), test_rmse=float(rmse(res.params, test)))
    for name, e in out["methods"].items():
        print(name, {k: v for k, v in e.items() if k != "loss_trace"}, flush=True)
    _save(args, args.tag, out)


def _race_als(train, p0, target, repeats, max_sweeps=20):
    """Context for the race: ALS (:func:`mfjax.solvers.als`, same loss, no biases, same init)
    -- a solver, not a direction + step-rule combination.  Sweeps to the target from its
    traced training loss, then the run with exactly that many sweeps timed (compiled by
    a first call; best and median of ``repeats``).  Each sweep also evaluates the
    training loss for the trace (one loss pass, included in the time)."""
    from mfjax.solvers import als

    res = als(train, RANK, l2=L2, num_steps=max_sweeps, init=p0)
    tr = np.asarray(res.trace.loss)
    hit = np.nonzero(tr <= target)[0]
    out = {"loss_trace": [float(x) for x in tr]}
    if not hit.size:
        return out
    k = int(hit[0]) + 1
    jax.block_until_ready(als(train, RANK, l2=L2, num_steps=k, init=p0).params)  # compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        r = als(train, RANK, l2=L2, num_steps=k, init=p0)
        jax.block_until_ready(r.params)
        times.append(time.perf_counter() - t)
    out.update(sweeps_to_target=k, time_to_target_s=min(times), median_s=float(np.median(times)),
               reached=float(np.asarray(r.trace.loss)[-1]))
    return out


# ------------------------------------------------------------------ report
def _save(args, name, obj):
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{name}.json").write_text(json.dumps(obj))


def _load(args, name):
    p = pathlib.Path(args.work) / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _report_race(race, tag, lines, plt):
    ref = race["methods"].get("optax.lbfgs (zoom)", {})
    cmd = race.get("command", f"python benchmarks/optimizers_ml1m.py race --steps {race['steps']}")
    lines += [f"## Time to a fixed training loss vs optax.lbfgs (zoom line search), same run ({tag})", "",
              f"Command: `{cmd}`. Loss gradient in the loop: `masked_mse(..., grad=\"{race.get('grad', 'autodiff')}\")` "
              "(used by optax.lbfgs's zoom search and the loop's first evaluation; `exact_mf` computes "
              "its own value and gradient). "
              f"Target training loss {race['target_loss']:.6e} (what `optax.lbfgs()` reaches "
              f"at step {race.get('target_step', '?')}). Each method is AOT-compiled (`mfjax.loop.compile_fit`) "
              "for exactly its steps-to-target and timed round-robin with the others (best of the repeats; "
              "median in brackets). Load average (1/5/15 min) before / after timing: "
              f"{race.get('load_before', '?')} / {race.get('load_after', '?')}.", "",
              "| method | steps to target | fun / grad evals | time to target (s) | ratio to optax.lbfgs | test RMSE there |",
              "|---|---|---|---|---|---|"]
    for name, e in race["methods"].items():
        if "time_to_target_s" in e:
            ratio = e["time_to_target_s"] / ref["time_to_target_s"] if "time_to_target_s" in ref else float("nan")
            med = f" ({e['median_s']:.2f})" if "median_s" in e else ""
            mref = ref.get("median_s")
            mratio = f" ({e['median_s'] / mref:.2f})" if mref and "median_s" in e else ""
            lines.append(f"| {name} | {e['steps_to_target']} | {e['fun_evals']} / {e['grad_evals']} | "
                         f"{e['time_to_target_s']:.2f}{med} | {ratio:.2f}{mratio} | {e['test_rmse']:.4f} |")
        else:
            lines.append(f"| {name} | not reached in {race['steps']} | | | | |")
    lines.append("")
    a = race.get("als")
    if a and "time_to_target_s" in a and "time_to_target_s" in ref:
        lines += [f"Context, not a step-rule combination: the ALS *solver* (`mfjax.solvers.als`, "
                  f"lambda = {L2}, no biases, same init, timed after the race) reaches the target in "
                  f"{a['sweeps_to_target']} sweeps, {a['time_to_target_s']:.2f} s ({a['median_s']:.2f} s "
                  f"median) = {a['time_to_target_s'] / ref['time_to_target_s']:.2f}x "
                  f"({a['median_s'] / ref['median_s']:.2f}x) optax.lbfgs's time.", ""]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, e in race["methods"].items():
        tr = np.asarray(e["loss_trace"], float)
        ax.semilogy(np.arange(1, tr.size + 1), tr, label=name)
    ax.axhline(race["target_loss"], color="k", ls="--", lw=0.8)
    ax.set_xlabel("step"), ax.set_ylabel("training loss"), ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / f"optimizers_{tag}.png", dpi=90)
    plt.close(fig)
    lines += [f"![{tag}](optimizers_{tag}.png)", ""]


def phase_report(args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.race_only:
        lines = []
        for rfile in sorted(pathlib.Path(args.work).glob("race*.json")):
            _report_race(json.loads(rfile.read_text()), rfile.stem, lines, plt)
        pathlib.Path(args.race_only).write_text("\n".join(lines) + "\n")
        print("wrote", args.race_only)
        return
    lines = ["# Optimizers x step rules on ML-1M (slides' best model)", "",
             "Problem: ML-1M, 90/10 random split of the ratings (`mfjax.data.split`, seed 0), "
             "r = 10, lambda = 2 in the slides' scaling (`masked_mse(train, 2.0, scale=\"sum\")`), "
             "init `init_factors(PRNGKey(0), shape, 10)`. Machine: 2-core CPU, JAX CPU, "
             "shared with ~6 other jobs (load average 10-20 during the runs), so wall times are "
             "noisy; compile time is excluded (AOT-compiled, then timed).", ""]
    best = _load(args, "best")
    if best:
        ev = np.asarray(best["eval_trace"])
        steps = np.arange(1, ev.size + 1)
        ok = np.isfinite(ev)
        hit = np.nonzero(ok & (ev <= 0.86))[0]
        lines += ["## Slides' best model: GD + 1/L estimate", "",
                  f"Command: `python benchmarks/optimizers_ml1m.py best --steps {len(ev)}`", "",
                  "| steps | final train loss | test RMSE | test RMSE (clipped 1..5) | train RMSE | "
                  "first step with test RMSE <= 0.86 | fun / grad evals | wall (s) |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| {best['steps']} | {best['final_loss']:.5e} | {best['test_rmse']:.4f} | "
                  f"{best['test_rmse_clipped']:.4f} | {best['train_rmse']:.4f} | "
                  f"{int(steps[hit[0]]) if hit.size else 'not reached'} | "
                  f"{best['fun_evals']} / {best['grad_evals']} | {best['wall_s']:.1f} |", ""]
        fig, ax = plt.subplots(1, 2, figsize=(10, 4))
        ax[0].semilogy(best["loss_trace"])
        ax[0].set_xlabel("step"), ax[0].set_ylabel("training loss (sum scale)")
        ax[1].plot(steps[ok], ev[ok], "o-")
        ax[1].axhline(0.86, color="k", ls="--", lw=0.8)
        ax[1].set_xlabel("step"), ax[1].set_ylabel("test RMSE")
        fig.suptitle("ML-1M, r=10, lambda=2: GD + 1/L estimate")
        fig.tight_layout()
        fig.savefig(RESULTS / "optimizers_best_model.png", dpi=90)
        plt.close(fig)
        lines += ["![best model](optimizers_best_model.png)", ""]
    grid = _load(args, "grid")
    if grid:
        cells = grid["cells"]
        lines += [f"## Every direction x step rule, fixed budget of {grid['steps']} steps", "",
                  f"Command: `python benchmarks/optimizers_ml1m.py grid --steps {grid['steps']}`. "
                  f"One program for all cells (`mfjax.optim.switch`), compiled once in "
                  f"{grid['compile_s']:.0f} s. Initial loss {grid['initial_loss']:.4e}. "
                  f"Step-size scales: first-order directions gamma = {GAMMA['first']}, adaptive "
                  f"(AdaGrad/RMSProp/Adam) gamma = {GAMMA['adaptive']}; constant = gamma, 1/sqrt(k) "
                  "from 2 gamma, weak Wolfe and zoom start at gamma, shrink-only strong Wolfe at "
                  "10 gamma, 1/L and Armijo warm-started (growth 2), adaptive GD from 1e-6. "
                  "BFGS omitted (dense H: 38 GB). Status `linesearch_failed` = the loop stopped "
                  "at the last good point.", "",
                  "| direction | step rule | final loss | test RMSE | fun evals | grad evals | wall (s) | status |",
                  "|---|---|---|---|---|---|---|---|"]
        for key, c in cells.items():
            d, s = key.split("|")
            lines.append(f"| {d} | {s} | {c['final_loss']:.4e} | {c['test_rmse']:.4f} | "
                         f"{c['fun_evals']} | {c['grad_evals']} | {c['wall_s']:.1f} | {c['status']} |")
        lines.append("")
        fig, axes = plt.subplots(2, 3, figsize=(14, 8), sharey=True)
        lows = [min(x for x in c["loss_trace"] if np.isfinite(x)) for c in cells.values()
                if any(np.isfinite(c["loss_trace"]))]
        for ax, d in zip(axes.ravel(), DIRECTIONS):
            for s in STEP_NAMES:
                c = cells.get(f"{d}|{s}")
                if c is None:
                    continue
                tr = np.asarray(c["loss_trace"], float)
                fe = np.asarray(c["fe_trace"], float)
                ok = np.isfinite(tr)
                ax.semilogy(np.r_[1, fe[ok]], np.r_[grid["initial_loss"], tr[ok]], label=s)
            ax.set_title(d), ax.set_xlabel("function evaluations")
        axes[0, 0].set_ylim(0.8 * min(lows), 2.0 * grid["initial_loss"])  # diverged runs leave the frame
        axes[0, 0].set_ylabel("training loss"), axes[1, 0].set_ylabel("training loss")
        axes[0, 0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(RESULTS / "optimizers_grid.png", dpi=80)
        plt.close(fig)
        lines += ["![grid](optimizers_grid.png)", ""]
    for rfile in sorted(pathlib.Path(args.work).glob("race*.json")):
        race = json.loads(rfile.read_text())
        _report_race(race, rfile.stem, lines, plt)
    if args.notes and pathlib.Path(args.notes).exists():
        lines += [pathlib.Path(args.notes).read_text()]
    (RESULTS / "optimizers.md").write_text("\n".join(lines) + "\n")
    print("wrote", RESULTS / "optimizers.md")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", choices=["best", "grid", "race", "report"])
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--target-step", type=int, default=100, help="race: lbfgs step defining the target")
    ap.add_argument("--target", type=float, default=None, help="race: explicit target loss")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tag", default="race", help="race: name of the result file (report reads race*)")
    ap.add_argument("--only", default=None, help="race: comma-separated substrings of method names "
                    "(optax.lbfgs always runs)")
    ap.add_argument("--als", action="store_true", help="race: also time the ALS solver to the target "
                    "(context only)")
    ap.add_argument("--work", default="/tmp/mfjax_bench_optimizers")
    ap.add_argument("--notes", default=None, help="report: markdown file appended at the end")
    ap.add_argument("--grad", default="autodiff", choices=["autodiff", "closed_form"],
                    help="race: gradient of the loss used by the loop / optax.lbfgs")
    ap.add_argument("--race-only", default=None, metavar="PATH",
                    help="report: write only the race sections (and their PNGs) to PATH, "
                         "leaving optimizers.md untouched")
    args = ap.parse_args()
    default_steps = {"best": 1500, "grid": 20, "race": 150, "report": 0}
    if args.steps is None:
        args.steps = default_steps[args.phase]
    {"best": phase_best, "grid": phase_grid, "race": phase_race, "report": phase_report}[args.phase](args)


if __name__ == "__main__":
    main()
