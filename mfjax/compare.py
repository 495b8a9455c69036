"""Optimizer / solver comparisons on one masked MF problem: the CLI's main job.

A comparison is a grid of *runs* on one :class:`Problem` (train/test split of
one ratings matrix, rank, regularisation).  A run is either

- ``"opt"``: a direction rule from :data:`mfjax.optim.REGISTRY` combined with
  a step rule from :data:`mfjax.linesearch.REGISTRY` (any with any), or an
  optax optimizer (``optax:lbfgs``, ``optax:adam``), trained by
  :func:`mfjax.loop.fit` on the masked loss; or
- ``"solver"``: a classical solver (ALS, SGD, NMF, vector descent).

Every run is written to ``out_dir/runs/<name>.json`` atomically as soon as it
finishes; a re-run skips runs whose file exists and whose configuration
matches (resume without recomputation).  :func:`summarize` prints the table,
:func:`write_tables` writes ``results.json`` / ``results.csv`` and
:func:`plot_results` the PNG figures.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import json
import pathlib
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from mfjax import data as mfdata
from mfjax import metrics
from mfjax._io import atomic_write_json, atomic_write_text
from mfjax.losses import init_factors, masked_sq_loss

__all__ = [
    "Problem",
    "RunSpec",
    "make_problem",
    "parse_run",
    "split_runs",
    "default_grid",
    "run_one",
    "run_grid",
    "trace_record",
    "DATA_DIRECTIONS",
    "summarize",
    "write_tables",
    "plot_results",
]


@dataclasses.dataclass(frozen=True)
class Problem:
    """One masked MF problem: data, split, rank and regularisation (slides' scaling by default)."""

    name: str
    train: Any
    test: Any
    rank: int
    l2: float
    scale: str
    seed: int
    split: tuple
    checksum: str

    def describe(self) -> dict:
        return {
            "data": self.name,
            "shape": list(self.train.shape),
            "train_nnz": self.train.nnz,
            "test_nnz": self.test.nnz,
            "rank": self.rank,
            "l2": self.l2,
            "scale": self.scale,
            "seed": self.seed,
            "split": list(self.split),
            "data_checksum": self.checksum,
        }


def make_problem(data: str = "synthetic", *, rank: int = 10, l2: float = 2.0,
                 scale: str = "sum", seed: int = 0, test_fraction: float = 0.1,
                 data_dir=None, synthetic_kwargs: dict | None = None) -> Problem:
    """Build the problem: ``data`` is ``"synthetic"``, a MovieLens name (``"ml-1m"``) or a triplet file path."""
    if data == "synthetic":
        ratings = mfdata.synthetic(**(synthetic_kwargs or {}))
    elif data.startswith("ml-"):
        ratings = mfdata.load_movielens(data, data_dir=data_dir)
    else:
        ratings = mfdata.load_triplets(data)
    fractions = (1.0 - test_fraction, test_fraction)
    train, test = mfdata.split(ratings, fractions=fractions, seed=seed)
    return Problem(data, train, test, rank, float(l2), scale, seed, fractions,
                   mfdata.data_checksum(ratings))


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of the grid.

    ``kind="opt"``: ``direction`` (name in :data:`mfjax.optim.REGISTRY`, or
    ``"optax:<name>"``) and ``step`` (name in :data:`mfjax.linesearch.REGISTRY`).
    ``kind="solver"``: ``solver`` names a classical solver.
    """

    kind: str
    direction: str | None = None
    step: str | None = None
    solver: str | None = None
    step_options: tuple = ()  # ((key, value), ...) passed to the step rule's factory

    @property
    def name(self) -> str:
        if self.kind == "solver":
            return f"solver-{self.solver}"
        if self.direction.startswith("optax:"):
            return self.direction.replace(":", "-")
        opts = ",".join(f"{k}={v}" for k, v in self.step_options)
        return f"{self.direction}+{self.step}" + (f"({opts})" if opts else "")


def _literal(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def parse_run(text: str) -> RunSpec:
    """``"gd+armijo"``, ``"gd+inverse_lipschitz(growth=2)"``, ``"optax:lbfgs"`` or ``"solver:als"`` -> :class:`RunSpec`.

    Keyword options in parentheses go to the step rule's constructor
    (e.g. ``constant(step_size=1e-5)``, ``armijo(initial_step=1e-3)``).
    """
    text = text.strip()
    if text.startswith("solver:"):
        return RunSpec("solver", solver=text.split(":", 1)[1])
    if text.startswith("optax:"):
        return RunSpec("opt", direction=text)
    if "+" not in text:
        raise ValueError(f"run {text!r}: expected 'direction+step', 'optax:NAME' or 'solver:NAME'")
    d, s = text.split("+", 1)
    options = ()
    if "(" in s:
        if not s.endswith(")"):
            raise ValueError(f"run {text!r}: unbalanced parentheses in the step options")
        s, inner = s[:-1].split("(", 1)
        pairs = []
        for item in filter(None, (t.strip() for t in inner.split(","))):
            if "=" not in item:
                raise ValueError(f"run {text!r}: step option {item!r} is not key=value")
            k, v = item.split("=", 1)
            pairs.append((k.strip(), _literal(v.strip())))
        options = tuple(pairs)
    return RunSpec("opt", direction=d, step=s, step_options=options)


def split_runs(text: str) -> list[str]:
    """Split a comma-separated run list, keeping commas inside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [t.strip() for t in out if t.strip()]


def default_grid(directions: Sequence[str] | None = None, steps: Sequence[str] | None = None,
                 solvers: Sequence[str] = ("als",), optax_baselines: Sequence[str] = ("lbfgs",),
                 *, full: bool = False, default_step: str = "armijo") -> list[RunSpec]:
    """The comparison grid, plus optax baselines and classical solvers.

    ``full=True``: every direction rule x every step rule.  Default (the
    main job's size): every direction rule with ``default_step``, GD with
    every step rule (every rule once at a fraction of the cost), nonlinear
    CG with the exact step, and the Gauss-Newton block direction with the
    exact step (the fastest combination in ``BENCHMARKS.md``'s race against
    ``optax.lbfgs``).
    """
    from mfjax import linesearch, optim

    directions = list(directions) if directions is not None else list(optim.REGISTRY)
    steps = list(steps) if steps is not None else list(linesearch.REGISTRY)
    if full:
        pairs = [(d, s) for d in directions for s in steps]
    else:
        pairs = [(d, default_step if default_step in steps else steps[0]) for d in directions]
        pairs += [("gd" if "gd" in directions else directions[0], s) for s in steps]
        if "cg" in directions and "exact_mf" in steps:
            pairs.append(("cg", "exact_mf"))
        if "exact_mf" in steps:
            pairs.append(("gn_block", "exact_mf"))
    seen, specs = set(), []
    for d, s in pairs:
        if (d, s) not in seen:
            seen.add((d, s))
            specs.append(RunSpec("opt", direction=d, step=s))
    specs += [RunSpec("opt", direction=f"optax:{o}") for o in optax_baselines]
    specs += [RunSpec("solver", solver=s) for s in solvers]
    return specs


# --------------------------------------------------------------------- runs
def _gauss_newton(kind: str, refresh_every: int):
    def make(train, l2, scale):
        import optax

        from mfjax import optim

        pre = optim.mf_preconditioner(train, l2, kind=kind, scale=scale, refresh_every=refresh_every)
        return optax.chain(pre, optim.gd_direction())

    return make


DATA_DIRECTIONS: dict[str, Callable] = {
    "gn_block": _gauss_newton("block", 3),
    "gn_diagonal": _gauss_newton("diagonal", 1),
}
"""Direction rules that need the problem's ratings: ``factory(train, l2, scale)``.
``gn_block``: the per-row Gauss-Newton blocks of the masked loss, refreshed
every 3 steps (a simultaneous ALS step when fresh); ``gn_diagonal``: their
diagonal (Jacobi).  See :func:`mfjax.optim.mf_preconditioner`."""


def _optimizer(spec: RunSpec, problem: Problem):
    import optax

    from mfjax import linesearch, optim

    if spec.direction.startswith("optax:"):
        name = spec.direction.split(":", 1)[1]
        if name == "lbfgs":
            return optax.lbfgs()
        if name == "adam":
            return optax.adam(1e-2)
        raise ValueError(f"unknown optax baseline {name!r} (known: lbfgs, adam)")
    known = sorted(optim.REGISTRY) + sorted(DATA_DIRECTIONS)
    if spec.direction not in optim.REGISTRY and spec.direction not in DATA_DIRECTIONS:
        raise ValueError(f"unknown direction rule {spec.direction!r}; known: {known}")
    if spec.step not in linesearch.REGISTRY:
        raise ValueError(f"unknown step rule {spec.step!r}; known: {sorted(linesearch.REGISTRY)}")
    if spec.direction in DATA_DIRECTIONS:
        direction = DATA_DIRECTIONS[spec.direction](problem.train.device_put(), problem.l2, problem.scale)
    else:
        direction = optim.REGISTRY[spec.direction]()
    if spec.step_options:  # explicit settings: call the rule's constructor
        options = dict(spec.step_options)
        if spec.step == "exact_mf":
            step = linesearch.exact_mf(problem.train.device_put(), problem.l2, scale=problem.scale, **options)
        else:
            step = getattr(linesearch, spec.step)(**options)
    else:  # registry defaults; factories take the problem (only ``exact_mf`` uses it)
        step = linesearch.REGISTRY[spec.step](problem.train.device_put(), problem.l2, problem.scale)
    return optax.chain(direction, step)


def trace_record(trace) -> dict:
    """A :class:`mfjax.loop.FitTrace` as the numpy arrays of a result record
    (keys ``loss, step_size, fun_evals, grad_evals, grad_norm, eval_rmse``)."""
    return {
        "loss": np.asarray(trace.loss),
        "step_size": np.asarray(trace.step_size),
        "fun_evals": np.asarray(trace.num_fun_evals),
        "grad_evals": np.asarray(trace.num_grad_evals),
        "grad_norm": np.asarray(trace.grad_norm),
        "eval_rmse": np.asarray(trace.eval_metric),
    }


def _run_opt(spec: RunSpec, problem: Problem, num_steps: int, eval_every: int, key):
    from mfjax import loop

    # data enter the compiled loop as traced arguments, not as embedded constants
    loss = functools.partial(masked_sq_loss, scale=problem.scale)
    train = problem.train.device_put()
    test = problem.test.device_put()
    params0 = init_factors(key, problem.train.shape, problem.rank)
    opt = _optimizer(spec, problem)

    # compile ahead of time so that ``wall_s`` is the run alone (``compile_s`` reported apart)
    args = (params0, (train, problem.l2), (test,))
    t0 = time.perf_counter()
    compiled = loop.compile_fit(loss, opt, *args, num_steps=num_steps, eval_fn=metrics.rmse,
                                eval_every=eval_every)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = compiled(*args)
    jax.block_until_ready(res.params)
    wall = time.perf_counter() - t0
    return res.params, trace_record(res.trace), wall, compile_s, int(res.status)


def _run_solver(spec: RunSpec, problem: Problem, num_steps: int, key):
    name = spec.solver
    common = dict(eval=problem.test)

    def call():
        t0 = time.perf_counter()
        res = _solve(name, problem, num_steps, key, common)
        jax.block_until_ready(res.params)
        return res, time.perf_counter() - t0

    # the first call compiles; the second (cached) call is the one timed
    _, first = call()
    res, wall = call()
    T = len(np.asarray(res.trace.loss))
    out = {
        "loss": np.asarray(res.trace.loss),
        "eval_rmse": np.asarray(res.trace.eval_rmse),
        "step_size": np.full(T, np.nan),
        "fun_evals": np.arange(1, T + 1),
        "grad_evals": np.arange(1, T + 1),
        "grad_norm": np.full(T, np.nan),
    }
    return res.params, out, wall, max(first - wall, 0.0), 0


def _solve(name, problem, num_steps, key, common):
    """Classical solvers on the problem's objective (``l2`` converted to their "sum" scaling)."""
    from mfjax import solvers

    l2 = problem.l2 if problem.scale == "sum" else problem.l2 * problem.train.nnz
    sweeps = max(1, num_steps // 10)
    if name == "als":
        return solvers.als(problem.train, problem.rank, l2=l2, num_sweeps=sweeps, key=key, **common)
    if name == "sgd":  # l2 / n_i per rating: the same objective as the masked loss
        return solvers.sgd(problem.train, problem.rank, l2=l2, num_epochs=sweeps, key=key, **common)
    if name == "vector_descent":
        return solvers.vector_descent(problem.train, problem.rank, l2=l2, num_sweeps=sweeps, key=key, **common)
    if name == "nmf":  # unregularised masked NMF (its own constraint set; loss reported on the same objective)
        return solvers.nmf(problem.train, problem.rank, num_iters=num_steps, key=key, **common)
    raise ValueError(f"unknown solver {name!r} (known: als, sgd, vector_descent, nmf)")


def run_one(spec: RunSpec, problem: Problem, *, num_steps: int = 100, eval_every: int = 10,
            seed: int = 0) -> dict:
    """Run one spec on the problem; return a JSON-ready record with the trace."""
    key = jax.random.key(seed)
    if spec.kind == "solver":
        params, trace, wall, compile_s, status = _run_solver(spec, problem, num_steps, key)
    else:
        params, trace, wall, compile_s, status = _run_opt(spec, problem, num_steps, eval_every, key)
    test_rmse = float(metrics.rmse(params, problem.test.device_put()))
    train_rmse = float(metrics.rmse(params, problem.train.device_put()))
    test_rmse_clip = float(metrics.rmse(params, problem.test.device_put(), clip=(1.0, 5.0)))
    # every run's final loss is the problem's objective at its final parameters
    final_loss = float(masked_sq_loss(params, problem.train.device_put(), problem.l2, scale=problem.scale))
    return {
        "name": spec.name,
        "spec": dataclasses.asdict(spec),
        "status": status,
        "final_loss": final_loss,
        "train_rmse": train_rmse,
        "test_rmse": test_rmse,
        "test_rmse_clipped": test_rmse_clip,
        "fun_evals": int(np.nanmax(trace["fun_evals"])) if len(trace["fun_evals"]) else 0,
        "grad_evals": int(np.nanmax(trace["grad_evals"])) if len(trace["grad_evals"]) else 0,
        "wall_s": wall,
        "compile_s": compile_s,
        "trace": trace,
    }


def _config_hash(problem: Problem, spec: RunSpec, num_steps: int, eval_every: int, seed: int) -> str:
    cfg = {"problem": problem.describe(), "spec": dataclasses.asdict(spec),
           "num_steps": num_steps, "eval_every": eval_every, "seed": seed}
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def run_grid(problem: Problem, specs: Sequence[RunSpec], out_dir, *, num_steps: int = 100,
             eval_every: int = 10, seed: int = 0, resume: bool = True, progress: bool = True,
             log: Callable[[str], None] = print) -> list[dict]:
    """Run every spec, writing ``out_dir/runs/<name>.json`` atomically as each finishes.

    With ``resume=True`` a run whose file exists with the same configuration
    hash is loaded instead of recomputed.
    """
    out_dir = pathlib.Path(out_dir)
    runs_dir = out_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    results = []
    bar = _progress(specs, progress)
    for spec in bar:
        h = _config_hash(problem, spec, num_steps, eval_every, seed)
        path = runs_dir / f"{spec.name.replace('/', '_')}.json"
        if resume and path.exists():
            try:
                rec = json.loads(path.read_text())
                if rec.get("config_hash") == h:
                    results.append(rec)
                    continue
            except (OSError, json.JSONDecodeError):
                pass  # unreadable: recompute
        _set_desc(bar, spec.name)
        try:
            rec = run_one(spec, problem, num_steps=num_steps, eval_every=eval_every, seed=seed)
            rec["error"] = None
        except Exception as e:  # a bad combination is reported, not fatal for the grid
            rec = {"name": spec.name, "spec": dataclasses.asdict(spec), "status": -1,
                   "error": f"{type(e).__name__}: {e}", "trace": {}}
            log(f"run {spec.name} failed: {rec['error']}")
        rec["config_hash"] = h
        rec["problem"] = problem.describe()
        rec["num_steps"] = num_steps
        rec["seed"] = seed
        atomic_write_json(path, rec)
        results.append(json.loads(path.read_text()))
    return results


def _progress(items, enabled):
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(items, desc="runs", unit="run")
        except ImportError:
            pass
    return items


def _set_desc(bar, text):
    if hasattr(bar, "set_description"):
        bar.set_description(text)


# ------------------------------------------------------------------ outputs
_COLUMNS = ["name", "status", "final_loss", "train_rmse", "test_rmse", "test_rmse_clipped", "fun_evals", "grad_evals", "wall_s"]


def summarize(results: Sequence[dict]) -> str:
    """A plain-text table, sorted by test RMSE."""
    rows = sorted(results, key=lambda r: (r.get("test_rmse") is None, r.get("test_rmse") or 0.0))
    head = f"{'run':34s} {'status':>6s} {'final loss':>12s} {'test RMSE':>9s} {'clipped':>8s} {'f evals':>8s} {'g evals':>8s} {'wall s':>7s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.get("error"):
            lines.append(f"{r['name']:34s} {'error':>6s}  {r['error'][:60]}")
            continue

        def f(v, fmt):
            return format(v, fmt) if isinstance(v, (int, float)) else "nan"

        lines.append(
            f"{r['name']:34s} {r['status']:>6d} {f(r['final_loss'], '12.5g')} {f(r['test_rmse'], '9.4f')} "
            f"{f(r['test_rmse_clipped'], '8.4f')} {r['fun_evals']:>8d} {r['grad_evals']:>8d} {f(r['wall_s'], '7.2f')}"
        )
    return "\n".join(lines)


def write_tables(results: Sequence[dict], out_dir) -> None:
    """``results.json`` (everything, traces included) and ``results.csv`` (summary)."""
    out_dir = pathlib.Path(out_dir)
    atomic_write_json(out_dir / "results.json", list(results))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(_COLUMNS + ["error"])
    for r in results:
        w.writerow([r.get(c) for c in _COLUMNS] + [r.get("error")])
    atomic_write_text(out_dir / "results.csv", buf.getvalue())


def plot_results(results: Sequence[dict], out_dir) -> list[pathlib.Path]:
    """PNG plots: loss vs iteration / wall time / function evaluations, held-out RMSE, step sizes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = pathlib.Path(out_dir)
    ok = [r for r in results if not r.get("error") and r.get("trace")]
    panels = [
        ("loss_vs_iter.png", "iteration", None, "loss", True),
        ("loss_vs_time.png", "wall time (s; run time spread evenly over the steps)", "time", "loss", True),
        ("loss_vs_evals.png", "function evaluations", "fun_evals", "loss", True),
        ("test_rmse.png", "iteration", None, "eval_rmse", False),
        ("step_size.png", "iteration", None, "step_size", True),
    ]
    paths = []
    for fname, xlabel, xkey, ykey, logy in panels:
        fig, ax = plt.subplots(figsize=(8, 5))
        for r in ok:
            y = np.asarray([np.nan if v is None else v for v in r["trace"].get(ykey, [])], dtype=float)
            if y.size == 0 or not np.isfinite(y).any():
                continue
            if xkey is None:
                x = np.arange(1, y.size + 1)
            elif xkey == "time":
                x = np.linspace(r["wall_s"] / y.size, r["wall_s"], y.size)
            else:
                x = np.asarray(r["trace"][xkey], dtype=float)
            m = np.isfinite(y)
            ax.plot(x[m], y[m], label=r["name"], lw=1.2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ykey)
        if logy:
            ax.set_yscale("log")
        if ax.lines:
            ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        p = out_dir / fname
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths
