"""Run by tests/test_perprocess.py as N cooperating processes (mfjax.core.distributed.launch), or as one.

Under the launcher every process builds ONLY its rows of the synthetic data (``mfjax.cli._problem``:
``synthetic(sampler="blocks", row_range=...)`` and the hash split); alone it builds the whole (union) data
with ``--synthetic-sampler blocks --split hash``.  Each process writes what it holds to
``argv[1]/part_K.json`` (its row range and its train / test entries), then runs ``mfjax fit`` (process 0
writes its JSON line to ``argv[1]/fit.json``) and ``mfjax compare`` (results under ``argv[1]/cmp``), and
``mfjax fit`` on the triplet file ``argv[2]`` (each process streams only its rows; alone: ``--split hash``).
"""

import contextlib
import io
import json
import pathlib
import sys

from mfjax.core import distributed

distributed.initialize_from_env()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from mfjax import cli  # noqa: E402

#: The problem (small); one process asks for the row-local layout itself (under the launcher it is the default).
PROBLEM = ["--synthetic-size", "70x40", "--synthetic-density", "0.2", "--scale", "mean", "--l2", "0.05",
           "--no-compile-cache"]
UNION = ["--synthetic-sampler", "blocks", "--split", "hash"]
FIT = ["fit", "--run", "gd+armijo", "--iters", "8", "--json"]
COMPARE = ["compare", "--runs", "gd+armijo,solver:als,solver:dsgd,solver:vector_descent", "--iters", "8", "--eval-every", "2", "--no-plots",
           "--no-progress"]


def _entries(r) -> dict:
    return {f: np.asarray(getattr(r, f)).tolist() for f in ("rows", "cols", "values")}


def _fit(argv) -> tuple[int, dict | None]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(argv)
    lines = buf.getvalue().strip().splitlines()
    return rc, json.loads(lines[-1]) if lines else None  # process 0 alone prints


def main(out: str, triplets: str) -> None:
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extra = PROBLEM + (UNION if jax.process_count() == 1 else [])
    problem = cli._problem(cli.build_parser().parse_args(["fit", *extra]))
    part = problem.part
    mine = {"process": jax.process_index(), "processes": jax.process_count(),
            "row_range": None if part is None else list(part.row_range),
            "describe": problem.describe(), "train": _entries(problem.train), "test": _entries(problem.test)}
    (out / f"part_{jax.process_index()}.json").write_text(json.dumps(mine))
    fit_rc, fit = _fit([*FIT, *extra])
    with contextlib.redirect_stdout(io.StringIO()):
        compare_rc = cli.main([*COMPARE, *extra, "--out", str(out / "cmp")])
    file_rc, file_fit = _fit([*FIT, "--data", triplets, "--no-compile-cache", "--l2", "0.05",
                              *(["--split", "hash"] if jax.process_count() == 1 else [])])
    if jax.process_index() == 0:
        (out / "fit.json").write_text(json.dumps({"fit_rc": fit_rc, "compare_rc": compare_rc, "fit": fit,
                                                  "file_rc": file_rc, "file_fit": file_fit}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
