"""Running a comparison: one spec (:func:`run_one`) and a resumable grid (:func:`run_grid`).

Variants are chosen by name through the registries (the one place where
names, not objects, pick them): direction rules from
:data:`mfjax.optim.REGISTRY` and :data:`DATA_DIRECTIONS`, step rules from
:data:`mfjax.linesearch.REGISTRY`, classical solvers from :data:`SOLVERS`.

Every run is one record of a :class:`mfjax.store.ResultStore` in
``out_dir/runs/``: written atomically as soon as it finishes, tagged with the
hash of (problem, spec, steps, eval interval, seed), the data checksum and a
content checksum, reused on a re-run only when all of them match and the
record is complete (:func:`mfjax.compare.records.validate_record`).  Any
other file is named with its reason and recomputed.  A run that raises is
stored as an error record, the grid goes on, and the next resume retries it.

The "clipped" RMSE clips predictions to the problem's rating scale
(``Problem.rating_scale``, recorded in every record), and a run that
diverged shows ``diverged`` whatever its fit reported
(:func:`mfjax.compare.records.classify_status`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import time
from typing import Callable, Sequence

import jax
import numpy as np

from mfjax import metrics
from mfjax.compare.records import FAILED_STATUSES, classify_status, error_record, validate_record
from mfjax.compare.spec import Problem, RunSpec
from mfjax.core import Status, status_name
from mfjax.losses import init_factors, masked_sq_loss
from mfjax.store import ResultStore, to_jsonable

_LOG = logging.getLogger("mfjax")

__all__ = ["DATA_DIRECTIONS", "SOLVERS", "TIME_CHUNKS", "build_optimizer", "solver_steps", "trace_record", "run_one", "run_grid", "run_config",
           "SINGLE_DEVICE_SOLVERS", "PART_SOLVERS", "check_multiprocess", "unsupported_reason", "skipped_record", "part_objectives",
           "baseline_rmse"]


# --------------------------------------------------------------- registries
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


def _kw(fn, unified: str, legacy: str, value) -> dict:
    """``{unified: value}`` when the solver takes the unified keyword (``num_steps``, ``eval_set``), else
    ``{legacy: value}`` (the keyword before the solvers' vocabulary was unified)."""
    return {unified: value} if unified in inspect.signature(fn).parameters else {legacy: value}


def _call(fn, legacy_budget: str, problem, budget: int, **kwargs):
    """``fn(train, rank, **kwargs)`` with the step budget and the held-out set in ``fn``'s vocabulary."""
    return fn(problem.train, problem.rank, **_kw(fn, "num_steps", legacy_budget, budget),
              **_kw(fn, "eval_set", "eval", problem.test), **kwargs)


def _sweeps(num_steps: int) -> int:
    return max(1, num_steps // 10)


def solver_steps(solver: str, num_steps: int) -> int:
    """The sweeps / epochs / updates a solver run gets from an iteration budget (see :data:`SOLVERS`)."""
    return num_steps if solver == "nmf" else _sweeps(num_steps)


def _als(problem, l2, num_steps, key):  # on a mesh: each device solves its own rows
    from mfjax import solvers

    if getattr(problem, "part", None) is not None:  # per-process rows: one exchange of column blocks, then sweeps
        from mfjax.solvers.als_perprocess import als_parts

        return als_parts(problem.train, problem.rank, row_ranges=problem.part.row_ranges, l2=l2, key=key,
                         num_steps=_sweeps(num_steps), eval_set=problem.test)
    mesh = {} if problem.mesh is None else {"mesh": problem.mesh}
    return _call(solvers.als, "num_sweeps", problem, _sweeps(num_steps), l2=l2, key=key, **mesh)


def _dsgd(problem, l2, num_steps, key):  # one block per device of the mesh (1 block without one)
    from mfjax import solvers

    if getattr(problem, "part", None) is not None:  # per-process rows: row block p is process p's part
        return solvers.dsgd_parts(problem.train, problem.rank, row_ranges=problem.part.row_ranges, l2=l2, key=key,
                                  num_steps=_sweeps(num_steps), eval_set=problem.test)
    return solvers.dsgd(problem.train, problem.rank, l2=l2, key=key, num_steps=_sweeps(num_steps),
                        eval_set=problem.test, mesh=problem.mesh)


def _sgd(problem, l2, num_steps, key):  # l2 / n_i per rating: the same objective as the masked loss
    from mfjax import solvers

    return _call(solvers.sgd, "num_epochs", problem, _sweeps(num_steps), l2=l2, key=key)


def _vector_descent(problem, l2, num_steps, key):  # on a mesh: each device solves its own rows
    from mfjax import solvers

    if getattr(problem, "part", None) is not None:  # per-process rows: one exchange of column blocks, then sweeps
        return solvers.vector_descent_parts(problem.train, problem.rank, row_ranges=problem.part.row_ranges, l2=l2,
                                            key=key, num_steps=_sweeps(num_steps), eval_set=problem.test)
    mesh = {} if problem.mesh is None else {"mesh": problem.mesh}
    return _call(solvers.vector_descent, "num_sweeps", problem, _sweeps(num_steps), l2=l2, key=key, **mesh)


def _nmf(problem, l2, num_steps, key):  # unregularised masked NMF (its own constraint set)
    from mfjax import solvers

    return _call(solvers.nmf, "num_iters", problem, num_steps, key=key)


SOLVERS: dict[str, Callable] = {"als": _als, "sgd": _sgd, "dsgd": _dsgd, "vector_descent": _vector_descent,
                                 "nmf": _nmf}
"""Classical solvers by name: ``factory(problem, l2_sum, num_steps, key) -> result`` (held out: ``problem.test``)
(``l2`` in the solvers' "sum" scaling; ALS / SGD / vector descent run
``max(1, num_steps // 10)`` sweeps, NMF ``num_steps`` multiplicative updates).  On a
problem with a mesh ALS, vector descent and DSGD use it; SGD and NMF run on one device (and are refused
over several processes: :func:`check_multiprocess`).  On per-process data (``problem.part``) ALS, vector
descent and DSGD run on each process's rows (:func:`mfjax.solvers.als_parts`,
:func:`mfjax.solvers.vector_descent_parts`: one exchange of column blocks; :func:`mfjax.solvers.dsgd_parts`:
one block row per process); SGD and NMF are refused."""


#: Timed pieces of a run: ``trace["time_s"]`` (seconds since the run's start) is measured at the last step
#: of each piece (:func:`mfjax.loop.compile_fit_timed`, :func:`mfjax.solvers.time_steps`), NaN inside one.
TIME_CHUNKS = 20


# --------------------------------------------------------------------- runs
def _optimizer(spec: RunSpec, problem: Problem, num_steps: int | None = None):
    # on a mesh the data-dependent rules read the (sharded) objective from the loss arguments
    return build_optimizer(spec, problem.train, problem.l2, problem.scale, sharded=problem.mesh is not None,
                           num_steps=num_steps)


def build_optimizer(spec: RunSpec, train, l2: float, scale: str = "sum", *, sharded: bool = False,
                    num_steps: int | None = None):
    """The optax transformation of an optimizer run (direction rule chained with its step rule).

    Args:
      spec: a :class:`RunSpec` (``parse_run("gd+armijo")``); ``optax:lbfgs`` /
        ``optax:adam`` are the optax baselines.
      train: the training :class:`~mfjax.data.Ratings` (the data-dependent
        rules, Gauss-Newton directions and ``exact_mf``, read it).
      l2, scale: the objective's ``lambda`` and scaling.
      sharded: the objective is sharded: data-dependent rules read it from the
        loss arguments instead of ``train``.
      num_steps: the run's step budget.  Given, ``bfgs`` keeps every pair it accepts in the compact
        representation (:func:`mfjax.optim.compact_bfgs_direction` with ``memory=num_steps``): the
        dense algorithm's directions (equal up to rounding) at O(n num_steps) memory and work per step
        instead of O(n^2), so that BFGS also runs where ``H`` would not fit (ML-1M: 38 GB).

    Raises:
      ValueError: an unknown direction rule, step rule or optax baseline (the message lists the known ones).
    """
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
    data = None if sharded else train.device_put()
    if spec.direction in DATA_DIRECTIONS:
        direction = DATA_DIRECTIONS[spec.direction](data, l2, scale)
    elif spec.direction == "bfgs" and num_steps is not None:
        direction = optim.bfgs_direction(memory=max(1, int(num_steps)))
    else:
        direction = optim.REGISTRY[spec.direction]()
    if spec.step_options:  # explicit settings: call the rule's constructor
        options = dict(spec.step_options)
        if spec.step == "exact_mf":
            step = linesearch.exact_mf(data, l2, scale=scale, **options)
        else:
            step = getattr(linesearch, spec.step)(**options)
    elif spec.step == "exact_mf" and data is None:
        step = linesearch.exact_mf()
    else:  # registry defaults; factories take the problem (only ``exact_mf`` uses it)
        step = linesearch.REGISTRY[spec.step](data, l2, scale)
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


def part_objectives(problem: Problem):
    """The global ``(train, test)`` objectives of a problem whose processes hold only their rows (``problem.part``).

    Each process shards its own entries (:func:`mfjax.objective.shard_local_objective`): the training
    objective with the problem's ``l2`` and scale and the global rating count, the test one with unit entry
    weights (padding weight 0), so that ``metrics.rmse(params, test)`` is the global test RMSE
    ``sqrt(sum_p sum_{k in test_p} e_k^2 / sum_p |test_p|)``, summed over the mesh by the compiled program.
    Every process must call it (one exchange of entry counts each).

    Raises:
      ValueError: the problem has no per-process data or no mesh.
    """
    from mfjax import objective

    if problem.part is None or problem.mesh is None:
        raise ValueError("part_objectives needs a problem with per-process data (part) on a mesh")
    train = objective.shard_local_objective(objective.mf_objective(problem.train, problem.l2, scale=problem.scale),
                                            problem.mesh, num_ratings=problem.part.train_nnz)
    test = objective.shard_local_objective(objective.mf_objective(problem.test), problem.mesh,
                                           num_ratings=problem.part.test_nnz)
    return train, test


def _run_opt(spec: RunSpec, problem: Problem, num_steps: int, eval_every: int, key, callback=None,
             program_cache=None, seed: int = 0, objectives=None):
    from mfjax import loop

    # data enter the compiled loop as traced arguments, not as embedded constants
    loss = functools.partial(masked_sq_loss, scale=problem.scale)
    params0 = init_factors(key, problem.train.shape, problem.rank)
    opt = _optimizer(spec, problem, num_steps)
    if objectives is not None:  # per-process data: the sharded objectives of every process's own entries
        from mfjax import objective

        loss, loss_args, eval_args = objective.loss, objectives[:1], objectives[1:]
    else:
        train = problem.train.device_put()
        loss_args, eval_args = (train, problem.l2), (problem.test.device_put(),)
    if problem.mesh is not None and objectives is None:  # the same objective, its entries split over the mesh
        from mfjax import objective

        loss = objective.loss
        if jax.process_count() > 1:  # each process builds its part of the objective from its own rows only
            mine = objective.process_row_block(problem.train)
            local = objective.mf_objective(mine, problem.l2, scale=problem.scale)
            loss_args = (objective.shard_local_objective(local, problem.mesh, num_ratings=problem.train.nnz),)
        else:
            loss_args = (objective.shard_objective(objective.mf_objective(train, problem.l2, scale=problem.scale),
                                                   problem.mesh),)

    # compile ahead of time so that ``wall_s`` is the run alone (``compile_s`` reported apart); the scan
    # runs in TIME_CHUNKS timed pieces: ``trace["time_s"]`` is measured at each piece's last step
    args = (params0, loss_args, eval_args)
    t0 = time.perf_counter()
    compiled = loop.compile_fit_timed(loss, opt, *args, num_steps=num_steps, eval_fn=metrics.rmse,
                                      eval_every=eval_every, chunks=TIME_CHUNKS, callback=callback,
                                      callback_every=eval_every, program_cache=program_cache,
                                      program_key=_program_key(spec, problem, num_steps, eval_every, seed))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res, seconds = compiled(*args)
    jax.block_until_ready(res.params)
    wall = float(seconds[-1]) if len(seconds) else time.perf_counter() - t0  # the run's end, as plotted
    trace = trace_record(res.trace)
    trace["time_s"] = seconds
    return _host_params(res.params), trace, wall, compile_s, int(res.status)


def _program_key(spec: RunSpec, problem: Problem, num_steps: int, eval_every: int, seed: int) -> dict:
    """What an optimizer run's compiled programs depend on beyond their arguments' shapes: the spec (direction,
    step rule, options), the problem (``l2``, scale, rank and the data checksum and split: the data-dependent
    rules embed the training ratings), the loss and metric, the budget and the timing pieces."""
    return {"run": run_config(problem, spec, num_steps, eval_every, seed), "time_chunks": TIME_CHUNKS,
            "loss": "masked_sq_loss", "eval": "metrics.rmse"}


def _host_params(params):
    """Parameters replicated over a multi-process mesh, as host arrays (every process has them all)."""
    return jax.tree.map(lambda a: jax.numpy.asarray(np.asarray(a)), params) if jax.process_count() > 1 else params


def _solver_trace(trace) -> dict:
    """A solver's trace in the record format (missing fields NaN: solvers count sweeps, not evaluations)."""
    loss = np.asarray(trace.loss)
    T = len(loss)
    ev = getattr(trace, "eval_metric", None)
    if ev is None:
        ev = getattr(trace, "eval_rmse")
    return {
        "loss": loss,
        "eval_rmse": np.asarray(ev),
        "step_size": np.full(T, np.nan),
        "fun_evals": np.arange(1, T + 1),
        "grad_evals": np.arange(1, T + 1),
        "grad_norm": np.full(T, np.nan),
    }


def _run_solver(spec: RunSpec, problem: Problem, num_steps: int, key):
    if spec.solver not in SOLVERS:
        raise ValueError(f"unknown solver {spec.solver!r} (known: {', '.join(SOLVERS)})")
    make = SOLVERS[spec.solver]
    nnz = problem.train.nnz if problem.part is None else problem.part.train_nnz  # per-process data: the global count
    l2 = problem.l2 if problem.scale == "sum" else problem.l2 * nnz

    def call():
        from mfjax import solvers

        with solvers.time_steps(TIME_CHUNKS) as clock:  # sweeps / epochs in timed pieces
            t0 = time.perf_counter()
            res = make(problem, l2, num_steps, key)
            jax.block_until_ready(res.params)
            wall = time.perf_counter() - t0
        return res, wall, clock.runs[-1] if clock.runs else None

    # the first call compiles; the second (cached) call is the one timed
    _, first, _ = call()
    res, wall, seconds = call()
    status = getattr(res, "status", None)
    status = int(Status.MAX_STEPS if status is None else status)  # no status reported: the sweep budget ran out
    trace = _solver_trace(res.trace)
    T = len(trace["loss"])
    trace["time_s"] = seconds if seconds is not None and len(seconds) == T else np.full(T, np.nan)
    return _host_params(res.params), trace, wall, max(first - wall, 0.0), status


def run_one(spec: RunSpec, problem: Problem, *, num_steps: int = 100, eval_every: int = 10,
            seed: int = 0, callback=None, program_cache=None) -> dict:
    """Run one spec on the problem; return a JSON-ready record with the trace.

    The record's ``status`` is the stop reason's name (``max_steps``,
    ``diverged``, ...; :func:`mfjax.core.status_name`) after the compare
    side's divergence test (:func:`~mfjax.compare.records.classify_status`),
    ``reported_status`` what the fit itself said, ``status_code`` the
    :class:`mfjax.core.Status` code of ``status``.  ``initial_loss`` /
    ``final_loss`` are the problem's objective at the common initialisation
    ``init_factors(key(seed), shape, rank)`` and at the final parameters,
    whatever the run.  ``trace["time_s"]``: measured seconds from the run's
    start to the end of each step (sweep / epoch for a solver), read at the
    end of each of :data:`TIME_CHUNKS` timed pieces, NaN inside a piece.  ``test_rmse_clipped`` clips to ``rating_scale``
    (``None`` for a diverged or non-finite run).  ``callback`` is an
    optimizer run's progress hook (:mod:`mfjax.core.progress`, a report every
    ``eval_every`` steps; a program with a host callback is not written to
    the persistent compilation cache); solvers ignore it.  ``program_cache``: an optional
    :class:`mfjax.core.programs.ProgramCache` from which an optimizer run's compiled programs are
    loaded (written on a miss), so that a second process skips tracing and compiling them; the results
    are the same with or without it.
    """
    key = jax.random.key(seed)
    objectives = None
    if problem.part is not None:  # per-process data: only the sharded optimizer runs see every process's rows
        why = _part_reason(spec, problem)
        if why is not None:
            raise ValueError(f"run {spec.name!r}: {why}")
        objectives = part_objectives(problem)
    if spec.kind == "solver":
        params, trace, wall, compile_s, code = _run_solver(spec, problem, num_steps, key)
    else:
        params, trace, wall, compile_s, code = _run_opt(spec, problem, num_steps, eval_every, key,
                                                        callback=callback, program_cache=program_cache,
                                                        seed=seed, objectives=objectives)
    scale = tuple(float(v) for v in problem.rating_scale) if problem.rating_scale is not None else None
    params0 = init_factors(key, problem.train.shape, problem.rank)
    if objectives is not None:
        numbers = _summary_objectives_jit(params, params0, *objectives, clip=scale)
    else:
        numbers = _summary_jit(params, params0, problem.train.device_put(), problem.test.device_put(),
                               problem.l2, scale=problem.scale, clip=scale)
    initial_loss, final_loss, train_rmse, test_rmse, test_clipped = (float(v) for v in numbers)
    reported = status_name(code)
    status = classify_status(reported, initial_loss, final_loss)
    clipped = None if status in FAILED_STATUSES else test_clipped
    return {
        "name": spec.name,
        "spec": dataclasses.asdict(spec),
        "status": status,
        "status_code": int(Status[status.upper()]),
        "reported_status": reported,
        "initial_loss": initial_loss,
        "final_loss": final_loss,
        "train_rmse": train_rmse,
        "test_rmse": test_rmse,
        "test_rmse_clipped": clipped,
        "rating_scale": None if scale is None else list(scale),
        "fun_evals": int(np.nanmax(trace["fun_evals"])) if len(trace["fun_evals"]) else 0,
        "grad_evals": int(np.nanmax(trace["grad_evals"])) if len(trace["grad_evals"]) else 0,
        "wall_s": wall,
        "compile_s": compile_s,
        "trace": trace,
    }


@functools.partial(jax.jit, static_argnames=("scale", "clip"))
def _summary_jit(params, params0, train, test, l2, *, scale, clip):
    """A record's numbers in one compiled program (op-by-op they cost a dispatch and a small compilation
    each in every new process): the objective at the initial and final parameters, train / test RMSE and the
    test RMSE clipped to the rating scale ``clip``."""
    return (masked_sq_loss(params0, train, l2, scale=scale), masked_sq_loss(params, train, l2, scale=scale),
            metrics.rmse(params, train), metrics.rmse(params, test), metrics.rmse(params, test, clip=clip))


@functools.partial(jax.jit, static_argnames=("clip",))
def _summary_objectives_jit(params, params0, train, test, *, clip):
    """:func:`_summary_jit` on the global (sharded) objectives of per-process data (:func:`part_objectives`):
    the objective's value and the entry-weighted RMSEs, each a sum over every process's entries."""
    from mfjax import objective

    return (objective.value(train, params0), objective.value(train, params), metrics.rmse(params, train),
            metrics.rmse(params, test), metrics.rmse(params, test, clip=clip))


def baseline_rmse(problem: Problem) -> float:
    r"""The held-out RMSE of predicting the training mean everywhere (:func:`mfjax.compare.mean_predictor_rmse`).

    With per-process data it is computed from every process's sums (one exchange; every process must call
    it): ``mu = S_train / n_train``, ``sum (t - mu)^2 = S2_test - 2 mu S_test + n_test mu^2``.
    """
    from mfjax.compare.plots import mean_predictor_rmse

    if problem.part is None:
        return mean_predictor_rmse(problem.train.values, problem.test.values)
    from mfjax.core.distributed import allgather_host

    tr = np.asarray(problem.train.values, np.float64)
    te = np.asarray(problem.test.values, np.float64)
    sums = allgather_host(np.array([tr.sum(), tr.size, te.sum(), (te * te).sum(), te.size])).sum(axis=0)
    mu = sums[0] / sums[1]
    return float(np.sqrt(max(sums[3] - 2.0 * mu * sums[2] + sums[4] * mu * mu, 0.0) / sums[4]))


def run_config(problem: Problem, spec: RunSpec, num_steps: int, eval_every: int, seed: int) -> dict:
    """What determines a run's record (hashed by the store: a change recomputes the run)."""
    return {"problem": problem.describe(), "spec": dataclasses.asdict(spec),
            "num_steps": num_steps, "eval_every": eval_every, "seed": seed}


def _tally(summary: dict | None, what: str, name: str, reason: str | None = None) -> None:
    if summary is None:
        return
    summary.setdefault(what, []).append(name if reason is None else (name, reason))


def run_grid(problem: Problem, specs: Sequence[RunSpec], out_dir, *, num_steps: int = 100,
             eval_every: int = 10, seed: int = 0, resume: bool = True, progress: bool = True,
             log: Callable[[str], None] | None = None, summary: dict | None = None,
             skip_unsupported: bool = False, program_cache=None) -> list[dict]:
    """Run every spec, writing ``out_dir/runs/<name>.json`` atomically as each finishes.

    With ``resume=True`` a run whose file holds a complete record with the
    same configuration hash (:func:`run_config`), data checksum and content
    checksum is loaded instead of recomputed; any other existing file is
    reported through ``log`` (its path and the reason) and recomputed, as is
    a stored failed run.  A run that raises becomes a record with ``error``
    set; the grid goes on.

    Args:
      log: where notices go (refused files, failed runs; default: the
        ``mfjax`` logger at WARNING).  Each finished run is also logged at INFO.
      summary: optional dict filled with ``"resumed"`` (names),
        ``"computed"`` (names), ``"refused"`` (``(name, reason)`` pairs) and
        ``"skipped"`` (``(name, reason)`` pairs).
      skip_unsupported: a run that cannot run here (:func:`unsupported_reason`:
        SGD / NMF over several processes) is skipped instead of failing: one
        line through ``log`` and a record with ``skipped`` set to the reason
        (``status`` ``"skipped"``, ``error`` ``None``, not stored in
        ``runs/``).  The main job sets it for its default grid; an explicit
        run list keeps the error.
      program_cache: optional :class:`mfjax.core.programs.ProgramCache` of compiled programs
        (:func:`run_one`).

    Returns:
      The records, in the order of ``specs`` (JSON types, as stored).
    """
    import pathlib

    log = _LOG.warning if log is None else log
    store = ResultStore(pathlib.Path(out_dir) / "runs", resume=resume, require_checksum=True,
                        retry_errors=True)
    store.root.mkdir(parents=True, exist_ok=True)
    results = []
    bar = _progress(specs, progress)
    writer = jax.process_index() == 0  # under mfjax launch every process runs the grid, process 0 writes
    for spec in bar:
        why = unsupported_reason(spec, problem) if skip_unsupported else None
        if why is not None:  # every process decides the same (the process count and the spec)
            if writer:
                log(f"run {spec.name} skipped: {why}")
            _tally(summary, "skipped", spec.name, why)
            results.append(skipped_record(spec, why))
            continue
        h = store.hash(run_config(problem, spec, num_steps, eval_every, seed))
        rec, reason = store.inspect(spec.name, config_hash=h, expect={"data_checksum": problem.checksum},
                                    validate=functools.partial(validate_record, name=spec.name))
        rec, reason = _agree_on_resume(rec, reason, spec.name)
        if rec is not None:
            _tally(summary, "resumed", spec.name)
        else:
            if reason not in ("missing", "not resuming"):
                log(f"{store.path(spec.name)}: {reason}; recomputing")
                _tally(summary, "refused", spec.name, reason)
            _set_desc(bar, spec.name)
            try:
                check_multiprocess(spec, problem)
                rec = run_one(spec, problem, num_steps=num_steps, eval_every=eval_every, seed=seed,
                              program_cache=program_cache)
                rec["error"] = None
            except Exception as e:  # noqa: BLE001  (a bad combination is reported, not fatal for the grid)
                rec = error_record(spec, e, log if writer else (lambda _msg: None))
            rec.update(problem=problem.describe(), num_steps=num_steps, seed=seed,
                       data_checksum=problem.checksum)
            rec = store.save(spec.name, rec, config_hash=h) if writer else to_jsonable(rec)
            _tally(summary, "computed", spec.name)
            _LOG.info("%s: %s, test RMSE %s, %.2f s (+%.2f s compilation)", spec.name, rec.get("status"),
                      rec.get("test_rmse"), rec.get("wall_s") or 0.0, rec.get("compile_s") or 0.0)
        results.append(rec)
    return results


#: Solvers that run on one device only: under ``mfjax launch`` (several processes) they are refused by name.
SINGLE_DEVICE_SOLVERS = ("sgd", "nmf")


def unsupported_reason(spec: RunSpec, problem: Problem) -> str | None:
    """Why ``spec`` cannot run in this program (``None``: it can).

    Optimizer runs shard the objective's entries, ALS and vector descent their
    rows and DSGD its blocks over the mesh; SGD and NMF
    (:data:`SINGLE_DEVICE_SOLVERS`) have no sharded form, so they cannot run
    over several processes (on a one-process mesh they run on one device, as
    without a mesh).  On per-process data (``problem.part``: each process
    holds only its rows) ALS, vector descent and DSGD run on the processes' parts (:data:`PART_SOLVERS`);
    SGD and NMF need the whole ratings.
    """
    if jax.process_count() > 1 and spec.kind == "solver" and spec.solver in SINGLE_DEVICE_SOLVERS:
        return (f"solver {spec.solver!r} runs on one device only and cannot run over {jax.process_count()} "
                "processes (use solver:dsgd for distributed SGD, or run it without mfjax launch)")
    return _part_reason(spec, problem)


#: Solvers that run on per-process data (each process holding only its rows): ALS
#: and vector descent (:func:`mfjax.solvers.als_parts`, :func:`mfjax.solvers.vector_descent_parts`: one
#: exchange of column-block entries at setup) and DSGD (:func:`mfjax.solvers.dsgd_parts`: process ``p`` holds
#: row block ``p``; only ``V`` blocks move).
PART_SOLVERS = ("als", "vector_descent", "dsgd")


def _part_reason(spec: RunSpec, problem: Problem) -> str | None:
    """Why ``spec`` cannot run on per-process data (``problem.part``): the solvers other than
    :data:`PART_SOLVERS` build their row, column or block layouts from the whole ratings, which no process
    holds."""
    part = getattr(problem, "part", None)
    if part is None or spec.kind != "solver" or spec.solver in PART_SOLVERS:
        return None
    return (f"solver {spec.solver!r} needs the whole data set in every process, but each of the {part.count} "
            "processes holds only its own rows (per-process data); run it with --whole-data (every process "
            "builds the whole data set) or without mfjax launch")


def check_multiprocess(spec: RunSpec, problem: Problem) -> None:
    """Refuse, naming the run, what cannot run over several processes (:func:`unsupported_reason`).

    Raises:
      ValueError: a single-device solver in a multi-process run.
    """
    why = unsupported_reason(spec, problem)
    if why is not None:
        raise ValueError(f"run {spec.name!r}: {why}")


def skipped_record(spec: RunSpec, reason: str) -> dict:
    """The record of a run the grid skipped (:func:`run_grid` with ``skip_unsupported``): ``skipped: reason``."""
    return {"name": spec.name, "spec": dataclasses.asdict(spec), "status": "skipped", "status_code": -1,
            "skipped": reason, "error": None, "trace": {}}


def _agree_on_resume(rec, reason, name):
    """Process 0's resume decision on every process (a run computed by some processes only would hang the
    others' collectives).  One process: unchanged."""
    if jax.process_count() == 1:
        return rec, reason
    from jax.experimental import multihost_utils

    resumed = bool(np.asarray(multihost_utils.broadcast_one_to_all(np.int32(rec is not None))))
    if not resumed:
        return None, reason if rec is None else "process 0 recomputes it"
    if rec is None:  # process 0 reuses its stored record; this process only follows along
        rec = {"name": name, "resumed_by_process_0": True}
    return rec, None


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
