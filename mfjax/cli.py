"""The ``mfjax`` command line.  Thin: parses arguments, calls the library, prints and saves.

Commands::

    mfjax                      # = mfjax compare on the built-in synthetic data (the main job)
    mfjax compare [...]        # grid of optimizers x step rules (+ solvers) on one problem
    mfjax fit [...] [--json]   # one configuration
    mfjax reproduce TABLE      # the source documents' tables and figures (see --help)
    mfjax data info|download   # data sets
    mfjax launch -n N -- fit   # N cooperating processes (jax.distributed) on this machine (fit, compare)
    mfjax --version

Statuses print as names (``max_steps``, ``diverged``, ...) everywhere.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import sys
import time

__all__ = ["main", "build_parser", "load_experiment", "REPRODUCIBLE", "REPRODUCIBLE_HELP",
           "COMPILE_CACHE_ENV", "NO_COMPILE_CACHE_ENV", "compile_cache_dir", "enable_compile_cache",
           "CompileTimer", "configure_logging", "program_cache", "PROGRAMS_SUBDIR"]

#: Environment variable naming the persistent compilation cache directory.
COMPILE_CACHE_ENV = "MFJAX_COMPILE_CACHE_DIR"
#: Environment variable that, set to a non-empty value other than ``0``, turns the cache off.
NO_COMPILE_CACHE_ENV = "MFJAX_NO_COMPILE_CACHE"

# table -> (script, arguments put before the user's own).  Each script is an experiment module of the
# source checkout with a public entry point ``main(argv) -> int`` (it parses, then calls ``run(config,
# workdir)``); ``mfjax reproduce`` imports it by file path and calls ``main``.
REPRODUCIBLE = {
    "slides-best": ("experiments/slides_best_model.py", []),
    "slides-compare": ("experiments/slides_optimizer_comparison.py", []),
    "slides-nn": ("experiments/side_mlp.py", []),
    "dmf-table1": ("experiments/dmf/run_tables.py", ["--tasks", "table1"]),
    "dmf-table2": ("experiments/dmf/run_tables.py", ["--tasks", "dmf", "dmfd", "als"]),
}

#: One line per :data:`REPRODUCIBLE` target, listed by ``mfjax reproduce --help``.
REPRODUCIBLE_HELP = {
    "slides-best": "the slides' best model on ML-1M (r = 10, lambda = 2, GD with the 1/L-estimate step; "
                   "target test RMSE <= 0.86) and a (rank, lambda) search",
    "slides-compare": "the slides' per-optimizer convergence plots (GD, heavy ball, Nesterov, RMSprop, AdaGrad, "
                      "Adam x step rules) and their comparison plot, ML-1M",
    "slides-nn": "the slides' side-feature neural network on ML-1M (ids, genres, gender, age, occupation; "
                 "target test MSE 1.1), and a variant with learned id embeddings",
    "dmf-table1": "Nguyen et al., Matrix Factorization via Deep Learning, Table 1: DMF RMSE on the "
                  "extendability areas I-IV of ML-1M",
    "dmf-table2": "the same paper's Table 2: DMF, DMF-D (learned quantizer) and an ALS baseline on a 75/5/20 "
                  "ML-1M split",
}


def _reproduce_epilog() -> str:
    width = max(map(len, REPRODUCIBLE))
    lines = [f"  {t:{width}s}  {REPRODUCIBLE_HELP.get(t, REPRODUCIBLE[t][0])}  [{REPRODUCIBLE[t][0]}]"
             for t in sorted(REPRODUCIBLE)]
    return "targets:\n" + "\n".join(lines) + "\n\narguments after TABLE go to the experiment script " \
        "(e.g. mfjax reproduce slides-best -- --help)"


def _rating_scale(text: str):
    from mfjax.compare import parse_rating_scale

    try:
        return parse_rating_scale(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _version() -> str:
    """``"mfjax X.Y.Z"``: the installed distribution's version (``mfjax.__version__`` is the same number;
    the package root is not imported here, see the layer test)."""
    import importlib.metadata

    try:
        return f"mfjax {importlib.metadata.version('mfjax')}"
    except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
        return "mfjax (version unknown: not installed)"


def _add_problem_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="synthetic",
                   help="'synthetic' (built-in, default), a MovieLens name such as 'ml-1m', or a path to a "
                        "(user, item, rating) CSV/TSV file")
    p.add_argument("--data-dir", default=None, help="directory holding the MovieLens files (else $MFJAX_DATA_DIR, cache)")
    p.add_argument("--rank", type=int, default=None,
                   help="factorization rank r (default: 10, the slides' choice, on MovieLens; on synthetic data "
                        "the generator's rank)")
    p.add_argument("--l2", type=float, default=2.0, help="regularisation lambda (default 2, the slides' best model)")
    p.add_argument("--scale", choices=["sum", "mean"], default="sum",
                   help="loss scaling: 'sum' = slides' ||W o (X-UV)||^2 (default), 'mean' divides the data term by |Omega|")
    p.add_argument("--test-fraction", type=float, default=0.1, help="held-out fraction of the ratings (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of the initialisation")
    p.add_argument("--synthetic-size", default="600x400", help="MxN of the synthetic data (default 600x400)")
    p.add_argument("--synthetic-density", type=float, default=0.05,
                   help="fraction of observed entries of the synthetic data (default 0.05)")
    p.add_argument("--synthetic-rank", type=int, default=5, help="rank of the synthetic truth (default 5)")
    p.add_argument("--synthetic-sampler", choices=["auto", "pairs", "rows", "rows32", "blocks"], default=None,
                   help="pattern sampler of the synthetic data (mfjax.data.synthetic; default auto, and blocks "
                        "under mfjax launch: row-local, each process generates only its rows)")
    p.add_argument("--split", choices=["random", "hash"], default=None, dest="split_method",
                   help="train/test split: random (a seeded permutation, the default) or hash (each rating "
                        "placed by a hash of (row, column, seed): row-local, the default under mfjax launch)")
    p.add_argument("--whole-data", action="store_true",
                   help="under mfjax launch: every process builds the whole data set and split (ALS, vector "
                        "descent and DSGD also run on per-process rows); default: each process builds only its "
                        "own rows (synthetic data; a triplet file or MovieLens release streamed)")
    p.add_argument("--devices", type=int, default=1, metavar="N",
                   help="run on N devices of a jax.sharding mesh (default 1): optimizer runs shard the objective's "
                        "entries, ALS its rows, DSGD its blocks; on the CPU N virtual devices are made")
    p.add_argument("--rating-scale", type=_rating_scale, default=None, metavar="LO,HI",
                   help="rating scale for the clipped RMSE, e.g. 1,5 or 0.5,5; ratings outside it are an error "
                        "(default: a MovieLens set's documented scale, else the training ratings' min,max; "
                        "recorded in the results)")


def compile_cache_dir() -> pathlib.Path:
    """Where compiled XLA programs are kept: ``$MFJAX_COMPILE_CACHE_DIR``, else ``<user cache>/jax``."""
    env = os.environ.get(COMPILE_CACHE_ENV)
    if env:
        return pathlib.Path(env).expanduser()
    from mfjax.data.download import default_cache_dir
    return default_cache_dir() / "jax"


def _cache_disabled_by_env() -> bool:
    return os.environ.get(NO_COMPILE_CACHE_ENV, "") not in ("", "0")


def enable_compile_cache(disabled: bool = False, min_compile_secs: float = 0.0) -> pathlib.Path | None:
    """Turn on JAX's persistent compilation cache (``jax_compilation_cache_dir``) for this process.

    A second run of the same program then loads its compiled programs from disk instead of compiling
    them again.  Off when ``disabled`` or ``$MFJAX_NO_COMPILE_CACHE`` is set; returns the directory used,
    or ``None`` when off.  Programs that compile in under ``min_compile_secs`` are not written; the
    default writes every program: a run's many small programs (initialisation, checks, layouts) each
    compile in ~20 ms and load in ~1 ms, so caching them took 0.4-0.7 s off a second ALS fit on ML-1M
    (BENCHMARKS.md, peers).  It also sets the process's default :class:`mfjax.core.programs.ProgramCache`
    (``<cache>/mfjax-programs``), from which the solver aliases (``sgd``, ``als``) load their whole
    compiled runs without tracing them.
    """
    if disabled or _cache_disabled_by_env():
        return None
    import jax
    path = compile_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # read-only home, full disk: run uncached, say so once
        print(f"mfjax: compilation cache off ({path}: {exc.strerror})", file=sys.stderr)
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    from mfjax.core import programs
    programs.set_default_cache(programs.ProgramCache(path / PROGRAMS_SUBDIR))  # the solvers' whole runs
    return path


#: Sub-directory of the compilation cache holding whole compiled programs (:func:`program_cache`).
PROGRAMS_SUBDIR = "mfjax-programs"


def program_cache(args):
    """The :class:`mfjax.core.programs.ProgramCache` of this command (``<compile cache>/mfjax-programs``), or
    ``None`` when the compilation cache is off (``--no-compile-cache``, ``$MFJAX_NO_COMPILE_CACHE``).

    It stores the optimizer runs' compiled executables, so that a second process skips tracing and lowering
    as well as compiling them (JAX's own cache saves the compilation only).
    """
    from mfjax.core.programs import ProgramCache, default_cache

    cache = getattr(args, "compile_cache", None)
    if cache is None:
        return None
    directory = pathlib.Path(cache) / PROGRAMS_SUBDIR
    shared = default_cache()  # the solvers' cache (enable_compile_cache): one object, so one count of both
    return shared if shared is not None and shared.directory == directory else ProgramCache(directory)


_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_compile_totals = {"seconds": 0.0, "count": 0, "listening": False}


def _on_duration(event: str, duration: float, **kwargs) -> None:
    if event == _COMPILE_EVENT:
        _compile_totals["seconds"] += float(duration)
        _compile_totals["count"] += 1


class CompileTimer:
    """Seconds XLA spent compiling in this process since the timer was made (``jax.monitoring`` events).

    Counts backend compilation only: programs loaded from the persistent cache cost none.  Used to report
    first-run compilation time per ``mfjax`` run.  One listener is registered per process, however many
    timers are made.
    """

    def __init__(self):
        if not _compile_totals["listening"]:
            import jax.monitoring
            jax.monitoring.register_event_duration_secs_listener(_on_duration)
            _compile_totals["listening"] = True
        self._start = (_compile_totals["seconds"], _compile_totals["count"])

    @property
    def seconds(self) -> float:
        return _compile_totals["seconds"] - self._start[0]

    @property
    def count(self) -> int:
        return _compile_totals["count"] - self._start[1]


def _add_cache_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-compile-cache", action="store_true",
                   help=f"do not read or write the on-disk compilation cache (also ${NO_COMPILE_CACHE_ENV}=1; "
                        f"directory: ${COMPILE_CACHE_ENV}, default <user cache>/mfjax/jax)")


def _add_verbose_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log progress to stderr (each finished run; an optimizer run's loss every --eval-every steps)")


def configure_logging(verbose: bool = False) -> logging.Logger:
    """Send the ``mfjax`` logger to stderr (``mfjax: message``), INFO with ``verbose`` else WARNING."""
    log = logging.getLogger("mfjax")
    for old in [h for h in log.handlers if getattr(h, "_mfjax_cli", False)]:
        log.removeHandler(old)  # an earlier main() in this process may have had another stderr
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("mfjax: %(message)s"))
    h._mfjax_cli = True
    log.addHandler(h)
    log.setLevel(logging.INFO if verbose else logging.WARNING)
    return log


_SOLVER_UNITS = {"als": "sweeps", "vector_descent": "sweeps", "sgd": "epochs", "dsgd": "epochs",
                 "nmf": "multiplicative updates"}


def _fit_progress(args, spec, problem):
    """The progress hook of ``mfjax fit``: a tqdm bar on a terminal, log lines with ``--verbose``, else none."""
    from mfjax.core.progress import LogProgress, TqdmProgress

    import jax

    if jax.process_index() != 0:
        return None
    if spec.kind == "solver":
        from mfjax.compare.run import solver_steps

        print(f"{spec.name}: --iters {args.iters} -> {solver_steps(spec.solver, args.iters)} "
              f"{_SOLVER_UNITS.get(spec.solver, 'steps')}", file=sys.stderr)
        return None
    if args.verbose:
        return LogProgress(spec.name)
    if not args.no_progress and not args.json and sys.stderr.isatty():
        return TqdmProgress(args.iters, desc=spec.name, leave=False)
    return None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``mfjax`` command (subcommands compare, fit, reproduce, data)."""
    parser = argparse.ArgumentParser(prog="mfjax", description="Masked matrix factorization research toolkit (JAX).")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command")

    c = sub.add_parser("compare", help="compare optimizers x step rules (and solvers) on one problem (main job)")
    _add_problem_args(c)
    c.add_argument("--directions", default=None,
                   help="comma-separated direction rules (default: all in mfjax.optim.REGISTRY)")
    c.add_argument("--steps", default=None,
                   help="comma-separated step rules (default: all in mfjax.linesearch.REGISTRY)")
    c.add_argument("--full-grid", action="store_true",
                   help="every direction x every step rule (default: every direction with Armijo + GD with every step rule)")
    c.add_argument("--solvers", default="als,sgd", help="comma-separated classical solvers to add (default als,sgd; '' for none)")
    c.add_argument("--optax", default="lbfgs", help="comma-separated optax baselines (default lbfgs; '' for none)")
    c.add_argument("--runs", default=None,
                   help="explicit comma-separated runs instead of a grid, e.g. 'gd+armijo,bfgs+strong_wolfe_zoom,optax:lbfgs,solver:als'")
    c.add_argument("--iters", type=int, default=200, help="iterations per optimizer run (default 200)")
    c.add_argument("--eval-every", type=int, default=10, help="held-out RMSE every k iterations (default 10)")
    c.add_argument("--out", default="results/compare", help="output directory (default results/compare)")
    c.add_argument("--no-resume", action="store_true", help="recompute runs whose results exist")
    c.add_argument("--no-plots", action="store_true", help="skip the plots (PNG and PDF)")
    c.add_argument("--plot-workers", type=int, default=None, metavar="N",
                   help="processes that render the plots, started at once and idle while the runs compute "
                        "(default min(2, CPUs); 0: render them in this process)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_verbose_flag(c)
    _add_cache_flag(c)

    f = sub.add_parser("fit", help="fit one configuration and print its metrics")
    _add_problem_args(f)
    f.add_argument("--run", default="gd+inverse_lipschitz(growth=2.0)",
                   help="'direction+step', 'direction+step(key=value,...)', 'optax:NAME' or 'solver:NAME' "
                        "(default gd+inverse_lipschitz(growth=2.0): the slides' best model, warm-started)")
    f.add_argument("--iters", type=int, default=200,
                   help="iteration budget: optimizer steps (default 200); solvers run max(1, iters // 10) "
                        "sweeps, NMF iters updates")
    f.add_argument("--eval-every", type=int, default=10,
                   help="held-out RMSE every k iterations in the trace (default 10; optimizer runs)")
    f.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    f.add_argument("--no-progress", action="store_true",
                   help="no progress bar (shown on a terminal for optimizer runs: loss and held-out RMSE "
                        "every --eval-every steps; such a run is not stored in the compilation cache)")
    _add_verbose_flag(f)
    _add_cache_flag(f)

    r = sub.add_parser("reproduce", help="reproduce a table/figure of the source documents",
                       epilog=_reproduce_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("table", choices=sorted(REPRODUCIBLE), metavar="TABLE",
                   help="which table/figure: " + ", ".join(sorted(REPRODUCIBLE)) + " (described below)")
    r.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the experiment script")

    la = sub.add_parser("launch", help="run an mfjax command as N cooperating processes on this machine "
                                       "(jax.distributed; CPU collectives by gloo)",
                        description="Start N copies of 'mfjax ARGS' with jax.distributed coordinates "
                                    "(process 0 coordinates on localhost). Supported: fit and compare (the main job; "
                                    "process 0 writes the results). Each process builds only its own rows (synthetic "
                                    "data; a triplet file or MovieLens release streamed; hash split) and optimizer "
                                    "runs shard the objective of every process's entries; solver:als and solver:vector_descent run "
                                    "on the parts (one exchange of column-block entries), solver:dsgd too (row "
                                    "block p on process p, V blocks rotate); SGD and NMF run on one device only: the "
                                    "default compare grid skips them (one log line each, records 'skipped'), an "
                                    "explicit --runs list naming them fails with the reason. With --whole-data "
                                    "every process builds the whole data set: ALS and "
                                    "vector descent shard their rows, DSGD its blocks over every process's devices; "
                                    "SGD and NMF cannot run over several processes.",
                        epilog="example: mfjax launch -n 2 -- compare --runs gd+armijo --iters 50")
    la.add_argument("-n", "--num-processes", type=int, required=True, help="number of processes N")
    la.add_argument("--local-devices", type=int, default=1, help="CPU devices per process (default 1)")
    la.add_argument("--port", type=int, default=None, help="coordinator port (default: a free one)")
    la.add_argument("--timeout", type=float, default=None, help="stop every process after this many seconds")
    la.add_argument("args", nargs=argparse.REMAINDER, help="-- then the mfjax command for each process")

    d = sub.add_parser("data", help="data sets: info or download")
    dsub = d.add_subparsers(dest="data_command", required=True)
    di = dsub.add_parser("info", help="facts about a data set")
    di.add_argument("name", nargs="?", default="synthetic")
    di.add_argument("--data-dir", default=None)
    dd = dsub.add_parser("download", help="download and verify an official MovieLens archive into the cache")
    dd.add_argument("name", help="e.g. ml-1m")
    dd.add_argument("--cache-dir", default=None)
    return parser


def _per_process(args) -> bool:
    """Whether this process builds only its own rows: under ``mfjax launch`` (several processes) and no
    ``--whole-data`` (synthetic data, a triplet file or a MovieLens release: each streamed, own rows kept)."""
    from mfjax.core import distributed

    if not distributed.is_initialized() or getattr(args, "whole_data", False):
        return False
    import jax

    return jax.process_count() > 1


def _problem(args):
    from mfjax import compare
    from mfjax import data as mfdata

    try:
        m, n = (int(v) for v in args.synthetic_size.lower().split("x"))
    except ValueError:
        raise SystemExit(f"mfjax: --synthetic-size must look like 600x400, got {args.synthetic_size!r}")
    rank = args.rank
    if rank is None:
        rank = args.synthetic_rank if args.data == "synthetic" else 10
    synthetic = {"m": m, "n": n, "seed": args.seed, "density": args.synthetic_density, "rank": args.synthetic_rank}
    sampler, split_method = getattr(args, "synthetic_sampler", None), getattr(args, "split_method", None)
    part = None
    if _per_process(args):
        import jax

        checks = [("--split", split_method, "hash")]
        if args.data == "synthetic":
            checks.append(("--synthetic-sampler", sampler, "blocks"))
        for flag, given, need in checks:
            if given not in (None, need):
                raise SystemExit(f"mfjax: {flag} {given}: under mfjax launch each process builds only its rows, "
                                 f"which needs {flag} {need}; pass --whole-data to build the whole data set "
                                 "in every process")
        sampler = "blocks" if args.data == "synthetic" else sampler
        split_method, part = "hash", (jax.process_index(), jax.process_count())
    if sampler is not None:
        synthetic["sampler"] = sampler
    data_errors = tuple(getattr(mfdata, e) for e in ("RatingsError", "MalformedFileError", "DataNotFoundError",
                                                      "ChecksumError") if hasattr(mfdata, e))
    try:
        problem = compare.make_problem(
            args.data, rank=rank, l2=args.l2, scale=args.scale, seed=args.seed,
            test_fraction=args.test_fraction, data_dir=args.data_dir, rating_scale=args.rating_scale,
            synthetic_kwargs=synthetic, split_method=split_method, part=part,
        )
    except data_errors + (OSError,) as e:
        raise SystemExit(f"mfjax: {args.data}: {e}") from None
    except ValueError as e:  # per-process data that cannot be built so (named); otherwise as before
        if part is None:
            raise
        raise SystemExit(f"mfjax: {args.data}: {e}") from None
    if problem.part is not None:  # every process says what it holds (the launch log prefixes [pK])
        print(_part_line(problem), file=sys.stderr, flush=True)
    return problem.with_mesh(_mesh(getattr(args, "devices", 1)))


def _part_line(problem) -> str:
    """``"mfjax: process K/N holds rows LO..HI-1 only: T train + S test ratings (of T_all + S_all)"``."""
    p = problem.part
    lo, hi = p.row_range
    return (f"mfjax: process {p.index}/{p.count} holds rows {lo}..{hi - 1} only: {problem.train.nnz} train + "
            f"{problem.test.nnz} test ratings (of {p.train_nnz} + {p.test_nnz})")


def _use_devices(n: int) -> None:
    """Ask for ``n`` CPU devices before JAX starts its backends (no effect on GPUs/TPUs)."""
    if n > 1:
        import jax

        try:
            jax.config.update("jax_num_cpu_devices", max(n, int(jax.config.jax_num_cpu_devices)))
        except RuntimeError:  # backends already started (e.g. an earlier main() in this process)
            pass


def _mesh(n: int):
    """A 1-D mesh of ``n`` devices (every process's devices under ``mfjax launch``), or ``None`` for one device."""
    import jax
    import numpy as np
    from jax.sharding import Mesh

    from mfjax.core import distributed

    if distributed.is_initialized():
        return Mesh(np.array(jax.devices()), ("devices",))
    if n is None or n <= 1:
        return None

    devices = jax.devices()
    if len(devices) < n:
        raise SystemExit(f"mfjax: --devices {n}: only {len(devices)} devices are available ({devices[0].platform}); "
                         "on the CPU start a fresh process")
    return Mesh(np.array(devices[:n]), ("devices",))


def _split_list(text):
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def cmd_compare(args) -> int:
    from mfjax import compare

    import jax

    t0 = time.perf_counter()
    # under mfjax launch every process runs the same grid on the global mesh; process 0 reports and writes
    lead = jax.process_index() == 0
    # the plot workers start now and import matplotlib while the runs compute, then wait idle
    pool = compare.plots.plot_pool(getattr(args, "plot_workers", None)) if lead and not args.no_plots else None
    try:
        return _compare(args, t0, lead, pool)
    finally:  # also when a run raises or the user interrupts: the workers exit, nothing is left behind
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _compare(args, t0: float, lead: bool, pool) -> int:
    """The body of :func:`cmd_compare`: build the problem, run the grid, write tables and plots
    (rendered by ``pool``'s workers when there is one)."""
    from mfjax import compare

    problem = _problem(args)
    say = print if lead else (lambda *a, **k: None)
    say(f"problem: {json.dumps(problem.describe())}")
    if args.runs:
        specs = [compare.parse_run(t) for t in compare.split_runs(args.runs)]
    else:
        specs = compare.default_grid(_split_list(args.directions), _split_list(args.steps),
                                     solvers=_split_list(args.solvers) or (),
                                     optax_baselines=_split_list(args.optax) or (), full=args.full_grid)
    say(f"{len(specs)} runs -> {args.out}")
    tally: dict = {}
    results = compare.run_grid(problem, specs, args.out, num_steps=args.iters, eval_every=args.eval_every,
                               seed=args.seed, resume=not args.no_resume, progress=lead and not args.no_progress,
                               summary=tally, skip_unsupported=not args.runs,  # the grid: skip, an explicit list: error
                               program_cache=getattr(args, "programs", None))
    ok = 0 if all(not r.get("error") for r in results) else 1
    mean = None if args.no_plots else compare.baseline_rmse(problem)  # per-process data: every process's sums
    if not lead:
        return ok
    compare.write_tables(results, args.out)
    if not args.no_plots:
        compare.plot_results(results, args.out, baselines={"mean predictor": mean}, executor=pool)
    print(compare.summarize(results))
    print(_tally_line(tally))
    print(f"results: {args.out}/results.json, {args.out}/results.csv" + ("" if args.no_plots else ", plots (PNG, PDF)"))
    print(f"total wall time {time.perf_counter() - t0:.1f} s, of which compilation {_compile_line(args)}")
    return ok


def _compile_line(args) -> str:
    timer = getattr(args, "compile_timer", None)
    cache = getattr(args, "compile_cache", None)
    where = f"cache {cache}" if cache else "cache off"
    if timer is None:
        return f"not measured ({where})"
    line = f"{timer.seconds:.1f} s in {timer.count} programs ({where})"
    programs = getattr(args, "programs", None)
    if programs is not None:
        line += f"; stored runs' programs: {programs.hits} loaded, {programs.misses} compiled"
    return line


def _tally_line(tally: dict) -> str:
    """``"runs: 3 resumed, 2 computed (1 stored file refused)"``, parsed by the fault test."""
    refused, skipped = tally.get("refused", []), tally.get("skipped", [])
    return (f"runs: {len(tally.get('resumed', []))} resumed, {len(tally.get('computed', []))} computed"
            + (f", {len(skipped)} skipped" if skipped else "")
            + (f" ({len(refused)} stored file(s) refused)" if refused else ""))


def cmd_launch(args) -> int:
    from mfjax.core import distributed

    rest = list(args.args)
    if rest and rest[0] == "--":
        rest = rest[1:]
    if not rest:
        raise SystemExit("mfjax launch: give the command after --, e.g. mfjax launch -n 2 -- fit --run gd+armijo")
    if rest[0] not in _MULTIPROCESS_COMMANDS:
        raise SystemExit(f"mfjax launch: {rest[0]!r} does not run multi-process yet "
                         f"(supported: {', '.join(_MULTIPROCESS_COMMANDS)})")
    try:
        return distributed.launch([sys.executable, "-m", "mfjax", *rest], args.num_processes,
                                  local_devices=args.local_devices, port=args.port, timeout_s=args.timeout)
    except ValueError as e:
        raise SystemExit(f"mfjax launch: {e}") from None


_MULTIPROCESS_COMMANDS = ("fit", "compare")


def cmd_fit(args) -> int:
    from mfjax import compare

    problem = _problem(args)
    spec = compare.parse_run(args.run)
    if problem.part is not None:  # per-process data: what needs the whole data set is refused by name
        from mfjax.compare.run import check_multiprocess

        try:
            check_multiprocess(spec, problem)
        except ValueError as e:
            raise SystemExit(f"mfjax: {e}") from None
    bar = _fit_progress(args, spec, problem)
    try:
        rec = compare.run_one(spec, problem, num_steps=args.iters, eval_every=args.eval_every, seed=args.seed,
                              callback=bar, program_cache=getattr(args, "programs", None))
    finally:
        if hasattr(bar, "close"):
            bar.close()
    train_rmse = rec["train_rmse"]
    summary = {k: rec[k] for k in ("name", "status", "status_code", "reported_status", "initial_loss", "final_loss",
                                   "test_rmse", "test_rmse_clipped", "rating_scale", "fun_evals", "grad_evals",
                                   "wall_s")}
    summary["train_rmse"] = train_rmse
    timer = getattr(args, "compile_timer", None)
    summary["compile_s"] = None if timer is None else round(timer.seconds, 3)
    summary["problem"] = problem.describe()
    import jax

    summary["processes"] = jax.process_count()
    if jax.process_index() != 0:  # under mfjax launch every process computes the same; process 0 reports
        return 0
    if args.json:
        from mfjax.store import to_jsonable

        print(json.dumps(to_jsonable(summary)))
    else:
        clipped = summary["test_rmse_clipped"]
        clipped = "n/a" if clipped is None else f"{clipped:.4f}"
        lo, hi = summary["rating_scale"] or (float("nan"), float("nan"))
        print(f"{summary['name']}: train RMSE {train_rmse:.4f}, test RMSE {summary['test_rmse']:.4f} "
              f"(clipped to [{lo:g}, {hi:g}]: {clipped}), final loss {summary['final_loss']:.6g} "
              f"(initial {summary['initial_loss']:.6g}), {summary['fun_evals']} f-evals, "
              f"{summary['wall_s']:.2f} s, status {summary['status']}")
        print(f"compilation {_compile_line(args)}", file=sys.stderr)
    return 0


def load_experiment(rel: str, root: pathlib.Path | None = None):
    """Import the experiment module ``rel`` (a path under the source checkout) by file path.

    The experiments live beside the package, not in it (they are the
    checkout's reproduction scripts, with their results under
    ``experiments/results``); they are imported under a private module name
    so that nothing is executed as ``__main__`` and their ``main(argv)`` is
    called like any function.

    Raises:
      FileNotFoundError: no source checkout (an installed wheel has no experiments).
    """
    import importlib.util

    root = pathlib.Path(__file__).resolve().parents[1] if root is None else pathlib.Path(root)
    script = root / rel
    if not script.is_file():
        raise FileNotFoundError(f"experiment script {script} not found (run from a source checkout of mfjax)")
    name = "_mfjax_experiment_" + rel.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses / pickling inside the experiment look their module up
    spec.loader.exec_module(module)
    return module


def cmd_reproduce(args) -> int:
    rel, fixed = REPRODUCIBLE[args.table]
    try:
        module = load_experiment(rel)
    except FileNotFoundError as e:
        print(str(e), file=sys.stderr)
        return 2
    user = list(args.args)
    if user[:1] == ["--"]:
        user = user[1:]
    code = module.main(list(fixed) + user)
    return 0 if code is None else int(code)


def cmd_data(args) -> int:
    import numpy as np

    from mfjax import data as mfdata

    if args.data_command == "download":
        try:
            path = mfdata.download_movielens(args.name, cache_dir=args.cache_dir)
        except mfdata.RatingsError as e:  # DownloadError (offline), ChecksumError
            raise SystemExit(f"mfjax data download {args.name}: {e}") from None
        print(f"{args.name}: downloaded and verified -> {path}")
        return 0
    if args.name == "synthetic":
        ratings = mfdata.synthetic()
    else:
        ratings = mfdata.load_movielens(args.name, data_dir=args.data_dir)
    rc, cc = ratings.row_counts(), ratings.col_counts()
    info = {
        "name": args.name,
        "shape": list(ratings.shape),
        "ratings": ratings.nnz,
        "density": ratings.density,
        "mean": ratings.mean(),
        "row_degree_min_median_max": [int(rc.min()), float(np.median(rc)), int(rc.max())],
        "col_degree_min_median_max": [int(cc.min()), float(np.median(cc)), int(cc.max())],
        "checksum": mfdata.data_checksum(ratings),
    }
    print(json.dumps(info, indent=1))
    return 0


def main(argv=None) -> int:
    """Run the ``mfjax`` command line on ``argv`` (default ``sys.argv[1:]``); return the exit status.

    With no subcommand (``mfjax`` alone or options only) it runs ``mfjax compare``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv = ["compare"] + argv
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from mfjax.core import distributed

    try:
        if distributed.initialize_from_env() and args.command not in _MULTIPROCESS_COMMANDS:
            raise SystemExit(f"mfjax: {args.command!r} does not run multi-process yet")
    except (ValueError, RuntimeError) as e:
        raise SystemExit(f"mfjax: {e}") from None
    configure_logging(getattr(args, "verbose", False))
    if args.command in ("compare", "fit", "reproduce"):
        _use_devices(getattr(args, "devices", 1))
        args.compile_cache = enable_compile_cache(getattr(args, "no_compile_cache", False))
        args.compile_timer = CompileTimer()
        args.programs = program_cache(args)
    handlers = {"compare": cmd_compare, "fit": cmd_fit, "reproduce": cmd_reproduce, "data": cmd_data,
                "launch": cmd_launch}
    if not distributed.is_initialized():
        return handlers[args.command](args)
    try:  # under mfjax launch: each process's peak host memory in the launch log (prefixed [pK] there)
        return handlers[args.command](args)
    finally:
        print(peak_memory_line(), file=sys.stderr, flush=True)


def peak_memory_line() -> str:
    """``"mfjax: process K/N peak host memory X MiB"``: this process's peak resident set size so far
    (``getrusage(RUSAGE_SELF).ru_maxrss``, KiB on Linux), written by every process under ``mfjax launch``."""
    import resource

    import jax

    mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if sys.platform == "darwin":  # bytes there
        mib /= 1024.0
    return f"mfjax: process {jax.process_index()}/{jax.process_count()} peak host memory {mib:.1f} MiB"


if __name__ == "__main__":
    sys.exit(main())
