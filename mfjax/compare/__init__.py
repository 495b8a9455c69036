"""Optimizer / solver comparisons on one masked MF problem: the CLI's main job.

A comparison is a grid of *runs* on one :class:`Problem` (train/test split of
one ratings matrix, rank, regularisation).  A run is either

- ``"opt"``: a direction rule from :data:`mfjax.optim.REGISTRY` (or
  :data:`DATA_DIRECTIONS`) combined with a step rule from
  :data:`mfjax.linesearch.REGISTRY` (any with any), or an optax optimizer
  (``optax:lbfgs``, ``optax:adam``), trained by :func:`mfjax.loop.fit` on the
  masked loss; or
- ``"solver"``: a classical solver from :data:`SOLVERS` (ALS, SGD, NMF,
  vector descent).

Every run is written to ``out_dir/runs/<name>.json`` atomically as soon as it
finishes (a :class:`mfjax.store.ResultStore`); a re-run skips runs whose file
holds a complete, unaltered record of the same configuration and data
(resume without recomputation) and names and recomputes any other file;
failed runs are retried.  Runs that diverge show ``diverged`` and the
clipped RMSE uses the data's rating scale
(:mod:`~mfjax.compare.records`).
:func:`summarize` prints the table (statuses by name), :func:`write_tables`
writes ``results.json`` / ``results.csv`` and :func:`plot_results` the figures (PNG and PDF;
:mod:`~mfjax.compare.plots`: one style per run, ``f - f*`` on log-y, measured time).

Modules: :mod:`~mfjax.compare.spec` (problem, run specs, grid, rating scale),
:mod:`~mfjax.compare.records` (record checks, divergence),
:mod:`~mfjax.compare.run` (registries, one run, the resumable grid),
:mod:`~mfjax.compare.report` (table, JSON / CSV), :mod:`~mfjax.compare.plots`.

Example::

    from mfjax import compare
    problem = compare.make_problem("synthetic", rank=5)
    specs = [compare.parse_run(t) for t in ("gd+armijo", "solver:als")]
    results = compare.run_grid(problem, specs, "results/compare", num_steps=50)
    print(compare.summarize(results))
"""

from mfjax.compare import plots
from mfjax.compare.plots import assign_styles, base_style, figure, fit_record, mean_predictor_rmse, plot_results
from mfjax.compare.records import DIVERGENCE_FACTOR, REQUIRED_FIELDS, classify_status, validate_record
from mfjax.compare.report import COLUMNS, status_label, summarize, write_tables
from mfjax.compare.run import (DATA_DIRECTIONS, SOLVERS, baseline_rmse, build_optimizer, run_config, run_grid, run_one,
                               trace_record)
from mfjax.compare.spec import (DataPart, Problem, RunSpec, data_rating_scale, default_grid, make_problem,
                                parse_rating_scale, parse_run, split_runs)

__all__ = [
    "Problem",
    "DataPart",
    "RunSpec",
    "make_problem",
    "parse_rating_scale",
    "data_rating_scale",
    "parse_run",
    "split_runs",
    "default_grid",
    "run_one",
    "run_grid",
    "baseline_rmse",
    "build_optimizer",
    "run_config",
    "trace_record",
    "DIVERGENCE_FACTOR",
    "REQUIRED_FIELDS",
    "classify_status",
    "validate_record",
    "DATA_DIRECTIONS",
    "SOLVERS",
    "COLUMNS",
    "status_label",
    "summarize",
    "write_tables",
    "plot_results",
    "plots",
    "figure",
    "fit_record",
    "assign_styles",
    "base_style",
    "mean_predictor_rmse",
]
