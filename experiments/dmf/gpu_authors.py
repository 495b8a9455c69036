"""The authors' DMF / DMF-D protocol (Tables 1 and 2) on one GPU, in time-boxed, resumable calls.

One command runs as many (seed, task) pairs of ``run_tables.py --profile
authors`` (branches [2048, 1024], 100 x 170 blocks, ~16.2k Adam steps =
the authors' 1000 epochs; DMF-D 300 x 200 blocks, ~10k steps) as fit in
``--budget-s`` seconds, then stops cleanly:

- before each task it checks that the task's estimated time (measured on
  an earlier task of the same kind in this call, else ``PRIOR_S``) still
  fits in the budget, and stops otherwise;
- a ``SIGALRM`` at the budget aborts a task that overruns anyway; an
  aborted task writes nothing and is redone by the next call.

Resume is at task granularity, with no checkpoints (the authors' network
with its Adam state is ~0.4 GB, too large to bring back): the finished
records travel in the repository (``--records``, default
``experiments/results/dmf_gpu``: ``runs/*.json``, committed or untracked),
are copied into a scratch work directory at the start, and a task whose
record exists (same configuration hash) is skipped.  Everything a call
produces is written under ``--out`` (default ``$OUT``) as at most four files
(the device tool brings back at most 8 files, 2 folders deep):

- ``dmf_gpu_records.json``: every finished record (earlier and new), the
  bundle to unpack into ``--records`` with ``--unpack``;
- ``tables_authors.md``, ``summary_authors.json``: the aggregated tables;
- ``gpu_authors.log``: written by the command line's ``tee`` (see README).

Device call (documented in ``experiments/dmf/README.md``)::

    PYTHONUNBUFFERED=1 python3 experiments/dmf/gpu_authors.py --data-dir .mldata --budget-s 420 \\
        2>&1 | tee $OUT/gpu_authors.log

Back here::

    python experiments/dmf/gpu_authors.py --unpack /work/.device/.../dmf_gpu_records.json

CPU check of the plumbing (2 epochs of the CPU network, seed 0)::

    python experiments/dmf/gpu_authors.py --smoke --out /tmp/dmf_gpu_smoke --budget-s 300
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import sys
import tempfile
import time

T_START = time.time()  # the budget counts from the start of the process (imports included)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import jax  # noqa: E402

import run_tables as rt  # noqa: E402
from mfjax.store import atomic_write_json  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_RECORDS = ROOT / "experiments" / "results" / "dmf_gpu"
BUNDLE = "dmf_gpu_records.json"
#: default order: Table 1 and DMF-D (the paper's figures) for every seed first, then DMF and ALS (Table 2 rows)
DEFAULT_TASKS = ("table1", "dmfd", "dmf", "als")
#: prior estimates (s) of one task on an H200 before one of its kind was measured in this call:
#: compilation (~30-60 s) + ~16k (DMF) / ~10k (DMF-D) steps at ~2 ms + 27-48 validations (see README)
PRIOR_S = {"table1": 100.0, "dmf": 100.0, "dmfd": 80.0, "als": 40.0, "select": 100.0}
#: margin (s) kept free at the end of the budget: writing the bundle and the tables
RESERVE_S = 10.0


class BudgetExceeded(Exception):
    """Raised by the SIGALRM handler when the budget ends during a task."""


def pending_tasks(seeds, tasks, finished) -> list[tuple[int, str]]:
    """The ``(seed, task)`` pairs still to run, seed-major in the given task order.

    ``finished(seed, task) -> bool`` says whether a record exists.

    >>> pending_tasks([0, 1], ["table1", "dmfd"], lambda s, t: (s, t) == (0, "table1"))
    [(0, 'dmfd'), (1, 'table1'), (1, 'dmfd')]
    """
    return [(s, t) for s in seeds for t in tasks if not finished(s, t)]


def fits(task: str, elapsed: float, budget: float, measured: dict, prior: dict = PRIOR_S,
         reserve: float = RESERVE_S) -> tuple[bool, float]:
    """Whether ``task`` is expected to finish inside the budget: ``elapsed + est + reserve <= budget``.

    ``est`` is the longest time measured for a task of that kind in this
    call (``measured[task]``, a list of seconds), else ``prior[task]``.

    >>> fits("dmf", 100.0, 420.0, {})
    (True, 100.0)
    >>> fits("dmf", 100.0, 420.0, {"dmf": [330.0]})
    (False, 330.0)
    """
    est = max(measured[task]) if measured.get(task) else float(prior.get(task, 100.0))
    return elapsed + est + reserve <= budget, est


def write_bundle(records_dir: pathlib.Path, dest: pathlib.Path, profile: str) -> int:
    """Every record ``<records_dir>/<profile>_seed*_*.json`` in one JSON file ``dest``; returns the count."""
    recs = {p.name: json.loads(p.read_text()) for p in sorted(records_dir.glob(f"{profile}_seed*_*.json"))}
    tmp = dest.with_suffix(".tmp")
    tmp.write_text(json.dumps({"profile": profile, "records": recs}, indent=1))
    os.replace(tmp, dest)
    return len(recs)


def unpack_bundle(bundle: pathlib.Path, records: pathlib.Path) -> list[str]:
    """Write the records of a bundle into ``<records>/runs/`` (atomic per file) and regenerate the tables."""
    d = json.loads(pathlib.Path(bundle).read_text())
    runs = records / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    names = []
    for name, rec in d["records"].items():
        if "/" in name or not name.endswith(".json"):
            raise ValueError(f"bad record name {name!r} in {bundle}")
        atomic_write_json(runs / name, rec)
        names.append(name)
    rt.aggregate(records, d["profile"])
    return names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="stop cleanly before this many seconds since the process started (default 420)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), choices=list(rt.TASKS))
    ap.add_argument("--profile", default="authors")
    ap.add_argument("--smoke", action="store_true",
                    help="plumbing check on the CPU: profile `smoke` (2 epochs, CPU network), seed 0, table1 + dmfd")
    ap.add_argument("--data-dir", default=os.environ.get("MFJAX_ML1M"))
    ap.add_argument("--records", default=str(DEFAULT_RECORDS),
                    help="finished records to resume from (<records>/runs/*.json); --unpack writes there")
    ap.add_argument("--out", default=os.environ.get("OUT"),
                    help="where the bundle and the tables go (default $OUT)")
    ap.add_argument("--matmul-precision", default="highest", choices=["highest", "high", "default"],
                    help="jax_default_matmul_precision (default highest: fp32 as on the CPU, no TF32)")
    ap.add_argument("--allow-cpu", action="store_true", help="run the full profile even without a GPU")
    ap.add_argument("--unpack", metavar="BUNDLE", help="write a bundle's records into --records and exit")
    args = ap.parse_args(argv)
    records = pathlib.Path(args.records)
    if args.unpack:
        names = unpack_bundle(pathlib.Path(args.unpack), records)
        print(f"unpacked {len(names)} records into {records / 'runs'}")
        return 0
    if args.smoke:
        args.profile, args.seeds, args.tasks = "smoke", [0], ["table1", "dmfd"]
    if args.out is None:
        ap.error("--out is required when $OUT is not set")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    jax.config.update("jax_default_matmul_precision", args.matmul_precision)
    devices = jax.devices()
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {devices}", flush=True)
    if jax.default_backend() == "cpu" and not (args.smoke or args.allow_cpu):
        print("no GPU found: the authors' protocol would take days on a CPU (use --smoke or --allow-cpu)")
        return 2

    work = pathlib.Path(tempfile.mkdtemp(prefix="dmf_gpu_"))
    (work / "runs").mkdir()
    for p in sorted((records / "runs").glob(f"{args.profile}_seed*_*.json")):
        shutil.copy2(p, work / "runs" / p.name)
    command = "python experiments/dmf/gpu_authors.py " + " ".join(argv if argv is not None else sys.argv[1:])
    ctx = rt.Context(args.profile, args.data_dir, work, None, command)
    todo = pending_tasks(args.seeds, args.tasks, ctx.finished)
    print(f"[plan] {len(todo)} tasks pending: {todo}; budget {args.budget_s:.0f}s, "
          f"{time.time() - T_START:.0f}s used by start-up", flush=True)

    def on_alarm(signum, frame):
        raise BudgetExceeded

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(args.budget_s - RESERVE_S - (time.time() - T_START), 1.0))
    measured: dict = {}
    done, stop_reason = [], "all pending tasks finished"
    try:
        for seed, task in todo:
            elapsed = time.time() - T_START
            ok, est = fits(task, elapsed, args.budget_s, measured)
            if not ok:
                stop_reason = (f"seed {seed} task {task} (estimated {est:.0f}s) does not fit: "
                               f"{elapsed:.0f}s of {args.budget_s:.0f}s used")
                break
            t0 = time.time()
            rt.run_task(ctx, seed, task)
            measured.setdefault(task, []).append(time.time() - t0)
            done.append((seed, task, round(time.time() - t0, 1)))
            write_bundle(work / "runs", out / BUNDLE, args.profile)
    except BudgetExceeded:
        stop_reason = f"budget reached during seed {seed} task {task}: that task was not recorded"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    n = write_bundle(work / "runs", out / BUNDLE, args.profile)
    summ = rt.aggregate(work, args.profile)
    for name in (f"tables_{args.profile}.md", f"summary_{args.profile}.json"):
        shutil.copy2(work / name, out / name)
    left = pending_tasks(args.seeds, args.tasks, ctx.finished)
    print(f"[stop] {stop_reason}", flush=True)
    print(f"[summary] ran {done}; {n} records in {out / BUNDLE}; still pending: {left}; "
          f"{time.time() - T_START:.0f}s elapsed", flush=True)
    print(json.dumps({"table1": summ["table1"]}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
