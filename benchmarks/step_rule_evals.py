"""Evaluations per accepted step of the step rules: the slides' searches vs the defaults (issue 11).

Runs what ``mfjax compare`` runs for GD with each searching step rule
(:func:`mfjax.compare.run.run_one`: the problem of ``mfjax compare --data
ml-1m``: 90/10 split seed 0, rank 10, ``l2 = 2``, ``scale="sum"``; the same
initialisation) for a fixed step budget with the slides' literal algorithms
(``mfjax.linesearch.LITERAL[rule]``, setting ``literal``, the defaults before
issue 11), the extrapolating settings ``mfjax.linesearch.CHEAP[rule]`` (warm
start + extrapolation, setting ``cheap``; the default of ``inverse_lipschitz``),
and optionally the rule's defaults (``default``) and the earlier interpolating
settings ``mfjax.linesearch.WARM[rule]`` (``warm``), and prints per rule

* function, gradient and combined (f + g) evaluations per accepted step
  after the first ``--skip`` steps (from the fit trace's cumulative counts,
  which include the loop's own evaluations);
* the final training loss after the budget.

Data: ML-1M from ``benchmarks/_data.py``'s folder; the built-in synthetic
problem of plain ``mfjax compare`` with ``--synthetic`` or when ML-1M is absent.

Usage::

    python benchmarks/step_rule_evals.py [--synthetic] [--steps 200,500] [--skip 10] [--rules armijo,...]
        [--settings literal,cheap,default,warm]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from _data import ml1m_dir  # noqa: E402  (benchmarks/_data.py: one data-path rule)

from mfjax.linesearch import CHEAP, LITERAL, WARM  # noqa: E402


def _spec(options: dict) -> str:
    """``{'growth': 2.0, 'interpolate': True}`` -> ``growth=2.0,interpolate=true`` (run-name syntax)."""
    return ",".join(f"{k}={str(v).lower() if isinstance(v, bool) or v is None else v}" for k, v in options.items())


RULES = ("inverse_lipschitz", "armijo", "weak_wolfe_bisection", "strong_wolfe", "strong_wolfe_zoom")

def per_step(record: dict, skip: int) -> tuple[float, float, int]:
    """``(f evals / step, g evals / step, accepted steps)`` after the first ``skip`` accepted steps."""
    tr = record["trace"]
    fe, ge = np.asarray(tr["fun_evals"], float), np.asarray(tr["grad_evals"], float)
    done = int(np.sum(fe >= 0))  # entries after a stop are padding (-1)
    if done <= skip:
        return float("nan"), float("nan"), done
    n = done - skip
    return (fe[done - 1] - fe[skip - 1]) / n, (ge[done - 1] - ge[skip - 1]) / n, done


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--synthetic", action="store_true", help="the built-in synthetic problem of `mfjax compare`")
    ap.add_argument("--steps", default="200", help="comma-separated step budgets, e.g. 200,500")
    ap.add_argument("--skip", type=int, default=10)
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--settings", default="literal,cheap",
                    help="which settings to run: literal (the slides' algorithms, LITERAL), cheap (CHEAP, the "
                         "extrapolating settings), default (the rule's defaults), warm (WARM)")
    args = ap.parse_args()

    from mfjax.compare.run import run_one
    from mfjax.compare.spec import make_problem, parse_run

    data = "synthetic"
    if not args.synthetic:
        try:
            problem = make_problem("ml-1m", data_dir=ml1m_dir())
            data = "ml-1m"
        except Exception as e:  # noqa: BLE001 - fall back to the synthetic problem
            print(f"ML-1M not loaded ({e}); using the synthetic problem")
    if data == "synthetic":
        problem = make_problem("synthetic")
    print(f"problem: {data} {problem.train.shape}, train nnz {problem.train.nnz}, rank {problem.rank}, "
          f"l2 {problem.l2}, scale {problem.scale}; GD, {args.steps} steps, evals/step after {args.skip}; "
          f"load {os.getloadavg()[0]:.2f}")
    head = (f"{'rule':22s} {'setting':8s} {'steps':>5s} {'f/step':>7s} {'g/step':>7s} {'f+g':>6s} {'done':>5s} "
            f"{'final train loss':>17s} {'status':>10s} {'wall s':>7s}")
    print(head)
    print("-" * len(head))
    for steps in (int(x) for x in args.steps.split(",")):
        for rule in args.rules.split(","):
            runs = (("literal", f"gd+{rule}({_spec(LITERAL[rule])})"), ("default", f"gd+{rule}"),
                    ("cheap", f"gd+{rule}({_spec(CHEAP[rule])})"), ("warm", f"gd+{rule}({_spec(WARM[rule])})"))
            for setting, run in (r for r in runs if r[0] in args.settings.split(",")):
                t = time.perf_counter()
                rec = run_one(parse_run(run), problem, num_steps=steps)
                f, g, n = per_step(rec, args.skip)
                print(f"{rule:22s} {setting:8s} {steps:5d} {f:7.2f} {g:7.2f} {f + g:6.2f} {n:5d} "
                      f"{rec['final_loss']:17.6g} {rec['status']:>10s} {rec['wall_s']:7.2f}   "
                      f"({time.perf_counter() - t:.0f} s with compile)", flush=True)
    print(f"load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
