"""Netflix-size loss+grad, ALS sweeps and DSGD epochs on one accelerator, with achieved bandwidth (issue 16).

One command, sized for under 8 minutes on one H200 (``--scale 1``: 480,189 x
17,770, ~100M synthetic ratings, ``mf.data.synthetic(..., sampler="rows32")``):
for r in ``--ranks`` (default 10, 64, 128) it times

* ``lossgrad``: ``mf.objective.value_and_grad`` (closed form);
* ``als_cg``: one CG-ALS sweep (3 CG steps per row, Gram tiers), incl. the trace's loss;
* ``als``: one exact ALS sweep (batched Cholesky on the Gram tiers), incl. the loss;
* ``dsgd``: one DSGD epoch on one device (``--dsgd-batch`` ratings updated together per
  minibatch: per-rating sequential updates would be 100M dependent steps on a GPU);

each as first call (compile + run) and best of ``--repeats`` warm runs, and
reports the achieved memory bandwidth of a stated traffic model against the
device's peak (``--peak-tbs``, H200: 4.8 TB/s).  Traffic models (bytes that
must cross HBM at least once, 4-byte indices and floats):

* lossgrad: ``nnz (16 + 16 r)``: entry arrays (row, col, value, weight),
  gathers of ``u_i``, ``v_j`` and scatter-adds of both gradient rows;
* ALS sweep: per side ``slots (16 + 4 r)`` (layout entry/col/mask + target,
  one feature-row gather per slot); CG re-reads the gathered block ``2 s + 2``
  times, counted once (a lower bound);
* DSGD epoch: ``nnz (12 + 16 r)`` (entry arrays, read and write ``u_i``, ``v_j``).

Anchor: cuMF_SGD does a Netflix epoch at k = 128 in ~0.16 s (Xie et al.,
"CuMF_SGD: Fast and scalable matrix factorization", HPDC 2017), i.e.
~1.3 TB/s in the DSGD model above.

Writes ``netflix.json`` and ``netflix.md`` under ``$OUT`` (or ``--out``) after
every operation, so a run cut short still leaves its figures.  On a CPU use a
small ``--scale`` (``tests`` run ``--scale 0.002``)::

    python benchmarks/gpu/netflix.py                       # the device run
    python benchmarks/gpu/netflix.py --scale 0.01 --ranks 10 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import scaling  # noqa: E402  (benchmarks/scaling.py: the same operations and data)

OPS = ("lossgrad", "als_cg", "als", "dsgd")


def traffic_bytes(op: str, rank: int, nnz: int, slots: int) -> float:
    """The traffic model of the module docstring (bytes)."""
    if op == "lossgrad":
        return nnz * (16 + 16 * rank)
    if op in ("als", "als_cg"):
        return slots * (16 + 4 * rank)
    return nnz * (12 + 16 * rank)


def layout_slots(train) -> int:
    """Entry slots of both sides' Gram tiers (default chunks): what one ALS sweep reads."""
    import numpy as np

    from mfjax.objective.gram import SEGMENT

    total = 0
    for idx, size in ((train.rows, train.shape[0]), (train.cols, train.shape[1])):
        counts = np.bincount(np.asarray(idx), minlength=size)
        total += int((-(-counts // SEGMENT) * SEGMENT).sum())  # segments padded to L (chunk padding aside)
    return total


def markdown(res: dict) -> str:
    lines = [f"Device: {res['device']}; data {res['shape'][0]:,} x {res['shape'][1]:,}, {res['nnz']:,} ratings "
             f"(built in {res['data_s']:.1f} s on the host); peak {res['peak_tbs']} TB/s.", "",
             "| op | rank | host prep + first call | warm | model traffic | achieved | of peak |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in res["runs"]:
        if "error" in r:
            lines.append(f"| {r['op']} | {r['rank']} | failed: {r['error'][:80]} | | | | |")
            continue
        lines.append(f"| {r['op']} | {r['rank']} | {r['prepare_s']:.1f} s + {r['first_s']:.2f} s | "
                     f"{r['warm_s'] * 1e3:.4g} ms | {r['traffic_gb']:.3g} GB | {r['achieved_tbs']:.3g} TB/s | "
                     f"{100 * r['of_peak']:.3g}% |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of Netflix's 100M ratings")
    ap.add_argument("--ranks", type=int, nargs="+", default=[10, 64, 128])
    ap.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dsgd-batch", type=int, default=1 << 16)
    ap.add_argument("--peak-tbs", type=float, default=4.8, help="device peak memory bandwidth (H200: 4.8)")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="result folder (default $OUT)")
    a = ap.parse_args(argv)
    import jax

    t0 = time.perf_counter()
    train = scaling.make_data(scaling.NNZ * a.scale)
    res = {"device": str(jax.devices()[0].device_kind), "platform": jax.devices()[0].platform,
           "shape": list(train.shape), "nnz": int(train.nnz), "data_s": round(time.perf_counter() - t0, 2),
           "peak_tbs": a.peak_tbs, "command": " ".join(sys.argv), "runs": []}
    slots = layout_slots(train)
    print(f"# {res['device']} ({res['platform']}); {train.shape} {train.nnz:,} ratings, data {res['data_s']} s",
          flush=True)
    out = pathlib.Path(a.out) if a.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    problems: dict = {}  # the ALS layouts are built once per method, shared by the ranks
    make = {"lossgrad": lambda r: scaling.lossgrad_op(train, r),
            "als_cg": lambda r: scaling.als_op(train, r, "cg", 3, problems),
            "als": lambda r: scaling.als_op(train, r, "cholesky", cache=problems),
            "dsgd": lambda r: scaling.dsgd_op(train, r, 1, a.dsgd_batch)}
    for rank in a.ranks:
        for op in a.ops:
            run = {"op": op, "rank": rank}
            try:
                run.update(scaling.time_op(make[op](rank), a.repeats))
                b = traffic_bytes(op, rank, train.nnz, slots)
                run.update(traffic_gb=b / 1e9, achieved_tbs=b / run["warm_s"] / 1e12,
                           of_peak=b / run["warm_s"] / 1e12 / a.peak_tbs)
            except Exception as e:  # noqa: BLE001  (report and go on: one failure must not lose the rest)
                run["error"] = f"{type(e).__name__}: {e}"
            res["runs"].append(run)
            print(json.dumps(run), flush=True)
            if out:
                (out / "netflix.json").write_text(json.dumps(res, indent=1))
                (out / "netflix.md").write_text(markdown(res))
    res["total_s"] = round(time.perf_counter() - t0, 1)
    print(markdown(res))
    if out:
        (out / "netflix.json").write_text(json.dumps(res, indent=1))
        (out / "netflix.md").write_text(markdown(res))
    return 1 if any("error" in r for r in res["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
