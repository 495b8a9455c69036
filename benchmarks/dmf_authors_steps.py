"""Steps/s of the authors' DMF / DMF-D training profile, and a FLOP-based estimate of the GPU run time.

    python benchmarks/dmf_authors_steps.py [--epochs 5] [--task dmf|dmfd|both]

Trains ``DMFConfig.authors()`` / ``TrainConfig.authors(shape)`` (branches
[2048, 1024], 100 x 170 blocks; DMF-D 300 x 200) on the seed-0 75/5/20 split
of ML-1M without validation, twice in one process: 1 epoch (compilation + 1
epoch), then ``1 + epochs`` epochs (the compiled epoch is cached, the check
is printed); the difference is the time of ``epochs`` epochs.

FLOPs per step (multiply-adds x 2, forward): the sparse first layers
``2 nnz_r w0 + 2 nnz_c w0`` (nnz = input entries of the block's rows /
columns), the second layers ``2 (B_r + B_c) w0 w1``, the cosine matrix
``2 B_r B_c w1``; a training step is taken as 3x the forward (backward ~2x).
The Adam update (~24M parameters) is memory-bound and not counted.  The
projected device time of the whole protocol divides the counted FLOPs by an
assumed sustained rate (``--assume-tflops``, default 20: H200 fp32 dense peak
~67 TFLOP/s, small 100-row blocks and a scan of ~16k dependent steps reach a
fraction of it) and adds a per-step overhead floor (``--step-floor-ms``,
default 1 ms: kernel launches of one scanned step).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import jax

import mfjax.data as mdata
import mfjax.models as mm


def step_flops(train, cfg, tc):
    """Expected forward FLOPs of one training step (module docstring), blocks of mean-length vectors."""
    rl, cl = mm.csr_inputs(train, "rows").lengths(), mm.csr_inputs(train, "cols").lengths()
    nnz_r, nnz_c = tc.block_rows * rl[rl > 0].mean(), tc.block_cols * cl[cl > 0].mean()
    w0, w1 = cfg.row_widths[0], cfg.row_widths[-1]
    return float(2 * (nnz_r + nnz_c) * w0 + 2 * (tc.block_rows + tc.block_cols) * w0 * w1
                 + 2 * tc.block_rows * tc.block_cols * w1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--task", default="both", choices=["dmf", "dmfd", "both"])
    ap.add_argument("--data-dir", default=os.environ.get("MFJAX_ML1M", "/work/shared/data"))
    ap.add_argument("--assume-tflops", type=float, default=20.0)
    ap.add_argument("--step-floor-ms", type=float, default=1.0)
    args = ap.parse_args(argv)
    ratings = mdata.load_movielens("ml-1m", args.data_dir)
    tr, _, _ = mdata.split(ratings, (0.75, 0.05, 0.2), seed=0)
    out = {"machine": {"platform": platform.platform(), "devices": [str(d) for d in jax.devices()],
                       "cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg()}, "runs": {}}
    for task in (["dmf", "dmfd"] if args.task == "both" else [args.task]):
        cfg = mm.DMFConfig.authors() if task == "dmf" else mm.DMFConfig.authors_dmfd()
        full = mm.TrainConfig.authors(ratings.shape, dmfd=task == "dmfd")
        steps_per_epoch = math.ceil(ratings.shape[0] / full.block_rows)
        total_steps = full.epochs * steps_per_epoch
        times = {}
        for ep in (1, 1 + args.epochs):
            tc = mm.TrainConfig.authors(ratings.shape, dmfd=task == "dmfd", epochs=ep, max_seconds=None)
            t0 = time.perf_counter()
            res = mm.train_dmf(tr, None, cfg, tc)
            jax.block_until_ready(res.variables)
            times[ep] = time.perf_counter() - t0
        dt = times[1 + args.epochs] - times[1]
        steps = args.epochs * steps_per_epoch
        f = step_flops(tr, cfg, full)
        sps = steps / dt
        est_step_s = max(3 * f / (args.assume_tflops * 1e12), args.step_floor_ms * 1e-3)
        out["runs"][task] = {
            "steps_timed": steps, "seconds": dt, "steps_per_s": sps, "first_epoch_incl_compile_s": times[1],
            "forward_gflop_per_step": f / 1e9, "train_gflop_per_step_3x": 3 * f / 1e9,
            "achieved_gflop_s": 3 * f * sps / 1e9,
            "protocol_steps": total_steps, "protocol_epochs": full.epochs,
            "cpu_hours_for_protocol": total_steps / sps / 3600,
            "gpu_estimate_s_training_only": total_steps * est_step_s,
            "gpu_assumption": f"{args.assume_tflops} TFLOP/s sustained, floor {args.step_floor_ms} ms/step",
        }
        print(task, json.dumps(out["runs"][task], indent=1), flush=True)
    out["machine"]["load_avg_end"] = os.getloadavg()
    print(json.dumps(out["machine"]))


if __name__ == "__main__":
    main()
