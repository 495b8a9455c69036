"""Combine the per-profile records of run_tables.py into the tables of experiments/results/dmf/README.md.

    python experiments/dmf/report.py [--out experiments/results/dmf]

Prints Markdown: Table 1 from profile ``cpu`` (the authors' raw inputs) and
from ``SELECTED`` (centred inputs + row masking, [1024, 512], 60 passes, chosen
with ``--tasks select``) and ``SMALLER`` (the same at [256, 128]); the selection table (pseudo areas I-IV built from area I training
entries, every profile with ``select`` records); Table 2 with DMF-D from
``cpu_slowlam`` (the DMF-D schedule chosen on validation, see the README) and
``cpu``, and the DMF / ALS rows from ``cpu``; DMF-D and DMF at the ``cpu_large``
size (``cpu_large_slowlam``); per-seed values; wall times.  ``SIDE``
(``SMALLER`` + the ML-1M side features as extra branch inputs, issue 14
part 1) is a separate block paired per seed with ``SMALLER``: an option
reported on its own, not a replacement of the selected profile.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

PAPER1 = {"I": 0.850, "II": 0.883, "III": 0.864, "IV": 0.904}
PAPER2 = (0.898, 0.625)
SELECTED = "cmr_large"  # chosen on the pseudo areas of `--tasks select` (lower mean on seeds 0 and 1; results README)
SMALLER = "cpu_center_mask_rows"  # the same inputs at [256, 128], 30 passes: selected before `cmr_large`
LARGE2 = "cpu_large_slowlam"  # Table 2 at the `cpu_large` size (DMF-D with the `cpu_slowlam` slope; DMF)
SIDE = "cmr_side"  # SMALLER + side features (users: gender, age, occupation; movies: genres, year); issue 14 part 1
SELECT_PROFILES = ("cpu", "cpu_mask", "cpu_mask_rows", "cpu_mask_rows_strong", "cpu_center", "cpu_center_mask_rows",
                   "cmr_cos", "cmr_norm", "cmr_sqrt", "cmr_large", "cmr_large_norm",  # issue 14 part 3: GAP_PROFILES
                   SIDE)


def load(out, profile, task):
    recs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob(f"{profile}_seed*_{task}.json"))]
    return sorted(recs, key=lambda r: r["seed"])


def ms(xs):
    xs = np.asarray(xs, float)
    if xs.size == 0:
        return "not run", None
    sd = xs.std(ddof=1) if xs.size > 1 else 0.0
    return f"{xs.mean():.3f} ± {sd:.3f}", xs.mean()


def ms4(xs, sign=""):
    """``mean ± std`` with 4 decimals (sample std; 0 for one value)."""
    xs = np.asarray(xs, float)
    sd = xs.std(ddof=1) if xs.size > 1 else 0.0
    return f"{xs.mean():{sign}.4f} ± {sd:.4f}"


def seeds(recs):
    return ",".join(str(r["seed"]) for r in recs) or "-"


def paired_side_block(out, side, base):
    """Markdown lines: Table 1 of ``side`` next to ``base`` on the seeds both ran, differences paired per seed."""
    s_recs = {r["seed"]: r for r in load(out, side, "table1")}
    b_recs = {r["seed"]: r for r in load(out, base, "table1")}
    common = sorted(set(s_recs) & set(b_recs))
    if not common:
        return []
    checks = {s_recs[s]["data_checksum"] == b_recs[s]["data_checksum"] for s in common}
    lines = [f"### Table 1 — with side features as extra branch inputs (profile `{side}` = `{base}` + users' "
             "gender, age, occupation and movies' genres, year; seeds " + ",".join(map(str, common)) + "; "
             "reported separately, not selected)", "",
             f"| area | `{base}` (same seeds) | `{side}` | paired difference (mean ± std) | per seed (side − base) |",
             "| --- | --- | --- | --- | --- |"]
    for a in ("I", "II", "III", "IV"):
        b = np.array([b_recs[s]["metrics"]["areas"][a]["rmse"] for s in common])
        v = np.array([s_recs[s]["metrics"]["areas"][a]["rmse"] for s in common])
        d = v - b
        lines.append(f"| {a} | {ms4(b)} | {ms4(v)} | {ms4(d, '+')} | "
                     + ", ".join(f"s{s} {x:+.4f}" for s, x in zip(common, d)) + " |")
    better = {a: sum(s_recs[s]["metrics"]["areas"][a]["rmse"] < b_recs[s]["metrics"]["areas"][a]["rmse"] for s in common)
              for a in ("I", "II", "III", "IV")}
    lines += ["", "Lower with side features on " + ", ".join(f"{a}: {k} of {len(common)}" for a, k in better.items())
              + " seeds; data checksum the same as the base records: " + ("yes" if checks == {True} else "NO") + "."]
    return lines + side_cold_block(out)


def side_cold_block(out):
    """Markdown lines from ``experiments/dmf/side_cold.py``: areas II / IV with new users embedded from fewer entries."""
    recs = sorted((json.loads(p.read_text()) for p in (out / "side_cold").glob("seed*.json")), key=lambda r: r["seed"])
    if not recs:
        return []
    side = recs[0].get("side", SIDE)  # the records' "models" keys are sorted: name the roles
    base = recs[0].get("base") or next(n for n in recs[0]["models"] if n != side)
    lines = ["", "New users with fewer ratings (`experiments/dmf/side_cold.py`, seeds " + seeds(recs) + "): the same "
             "area II / IV test entries, each held-out user embedded from a fraction q of its revealed entries "
             "(q = 0: no rating at all), the two Table 1 models above, nothing retrained; mean ± std over seeds:", "",
             f"| q | revealed per new user | II `{base}` | II `{side}` | IV `{base}` | IV `{side}` | "
             "II paired difference | IV paired difference |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for q in recs[0]["fractions"]:
        k = str(float(q))
        get = lambda n, a: np.array([r["models"][n]["thinned"][k][a] for r in recs])
        rev = np.mean([r["models"][side]["thinned"][k]["mean_revealed_per_user"] for r in recs])
        lines.append(f"| {q:g} | {rev:.1f} | {ms4(get(base, 'II'))} | {ms4(get(side, 'II'))} | {ms4(get(base, 'IV'))} | "
                     f"{ms4(get(side, 'IV'))} | {ms4(get(side, 'II') - get(base, 'II'), '+')} | "
                     f"{ms4(get(side, 'IV') - get(base, 'IV'), '+')} |")
    lower = {a: sum(r["models"][side]["thinned"][str(float(q))][a] < r["models"][base]["thinned"][str(float(q))][a]
                    for r in recs for q in recs[0]["fractions"]) for a in ("II", "IV")}
    diff = {n: max(r["models"][n]["max_abs_diff_to_record"] or 0.0 for r in recs) for n in (base, side)}
    lines += ["", f"Lower with side features in {lower['II']} (II) and {lower['IV']} (IV) of "
              f"{len(recs) * len(recs[0]['fractions'])} (seed, q) pairs.  The models' area RMSEs at q = 1 differ "
              f"from their Table 1 records by at most {diff[base]:.5f} (`{base}`, retrained: no checkpoint was kept) "
              f"and {diff[side]:.5f} (`{side}`, from its checkpoint)."]
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="experiments/results/dmf")
    out = pathlib.Path(ap.parse_args().out)
    lines = []

    def table1(prof, title):
        t1 = load(out, prof, "table1")
        lines.extend(["### " + title + f" (profile `{prof}`, seeds " + seeds(t1) + ")", "",
                      "| area | paper DMF | mfjax DMF (mean ± std) | gap | per seed | test entries (seed 0) |",
                      "| --- | --- | --- | --- | --- | --- |"])
        for a in ("I", "II", "III", "IV"):
            v = [r["metrics"]["areas"][a]["rmse"] for r in t1]
            s, m = ms(v)
            gap = f"{m - PAPER1[a]:+.3f}" if m is not None else "-"
            n = t1[0]["metrics"]["areas"][a]["n"] if t1 else "-"
            lines.append(f"| {a} | {PAPER1[a]:.3f} | {s} | {gap} | {', '.join(f'{x:.3f}' for x in v)} | {n} |")
        return t1

    t1 = table1("cpu", "Table 1 — DMF, RMSE by area, authors' raw inputs")
    lines.append("")
    table1(SELECTED, "Table 1 — DMF with centred inputs + row masking, [1024, 512], 60 passes, RMSE by area")
    lines.append("")
    table1(SMALLER, "Table 1 — the same inputs at [256, 128], 30 passes (selected before), RMSE by area")
    side_lines = paired_side_block(out, SIDE, SMALLER)
    if side_lines:
        lines += [""] + side_lines
    for prof, label in (("cpu_center", "centred inputs only, no masking"),):
        recs = load(out, prof, "table1")
        if recs:
            lines += ["", f"Ablation (`{prof}`, {label}; not selected; seeds " + seeds(recs) + "): " + ", ".join(
                f"{a} {ms([r['metrics']['areas'][a]['rmse'] for r in recs])[0]}" for a in ("I", "II", "III", "IV"))
                + " (mean ± std)."]
    sel = [(p, r) for p in SELECT_PROFILES for r in load(out, p, "select")]
    if sel:
        lines += ["", "Model selection without test entries (`--tasks select`: pseudo areas built inside area I "
                  "training entries; RMSE at the epoch selected on pseudo area I; `mean` = mean of the four):", "",
                  "| profile | seed | pseudo I | pseudo II | pseudo III | pseudo IV | mean | selected epoch |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for p, r in sel:
            pa = r["metrics"]["pseudo_areas"]
            lines.append(f"| `{p}` | {r['seed']} | " + " | ".join(f"{pa[a]:.4f}" for a in ("I", "II", "III", "IV"))
                         + f" | {np.mean([pa[a] for a in ('I', 'II', 'III', 'IV')]):.4f} | {r['best_epoch']} |")
    hide = load(out, "cpu_hide", "table1")
    if hide:
        lines += ["", "Exploratory (`cpu_hide`, targets removed from the inputs; seeds " + seeds(hide) + "): "
                  + ", ".join(f"{a} {np.mean([r['metrics']['areas'][a]['rmse'] for r in hide]):.3f}"
                              for a in ("I", "II", "III", "IV"))
                  + "; area I validation RMSE "
                  + ", ".join(f"{r['best_val']:.4f}" for r in hide)
                  + " vs `cpu` " + ", ".join(f"{r['best_val']:.4f}" for r in t1 if r["seed"] in {h['seed'] for h in hide}) + "."]

    large = load(out, "cpu_large", "table1")
    if large:
        lines += ["", "Exploratory (`cpu_large`: branches [1024, 512], 60 passes; seeds " + seeds(large) + "): "
                  + ", ".join(f"{a} {np.mean([r['metrics']['areas'][a]['rmse'] for r in large]):.3f}"
                              for a in ("I", "II", "III", "IV"))
                  + f"; training wall time {large[0]['wall_time_s']:.0f} s."]

    rows = []
    for label, prof, task, key in (
        ("DMF-D, [1024, 512], 60 passes, λ 0.1→30 (`cpu_large_slowlam`)", LARGE2, "dmfd", "discrete"),
        ("DMF-D, [256, 128], 30 passes, λ 0.1→30 (`cpu_slowlam`)", "cpu_slowlam", "dmfd", "discrete"),
        ("DMF-D, λ 0.1→2.9e5 (`cpu`, authors' schedule compressed)", "cpu", "dmfd", "discrete"),
        ("DMF + round, [1024, 512], 60 passes (`cpu_large_slowlam`)", LARGE2, "dmf", "round"),
        ("DMF + quantizer fitted on validation, [1024, 512] (`cpu_large_slowlam`)", LARGE2, "dmf", "fitted_quantizer"),
        ("DMF + round", "cpu", "dmf", "round"),
        ("DMF + quantizer fitted on validation", "cpu", "dmf", "fitted_quantizer"),
        ("ALS + round", "cpu", "als", "round"),
        ("ALS + quantizer fitted on validation", "cpu", "als", "fitted_quantizer"),
        ("DMF continuous, [1024, 512] (`cpu_large_slowlam`; reference, not discrete)", LARGE2, "dmf", "continuous"),
        ("DMF continuous (reference, not discrete)", "cpu", "dmf", "continuous"),
        ("ALS continuous (reference, not discrete)", "cpu", "als", "continuous"),
    ):
        recs = load(out, prof, task)
        r_s, r_m = ms([r["metrics"][key]["rmse"] for r in recs])
        a_s, a_m = ms([r["metrics"][key]["mae"] for r in recs])
        gap = f"{r_m - PAPER2[0]:+.3f} / {a_m - PAPER2[1]:+.3f}" if r_m is not None else "-"
        per = "; ".join(f"s{r['seed']} {r['metrics'][key]['rmse']:.4f} / {r['metrics'][key]['mae']:.4f}" for r in recs)
        rows.append(f"| {label} | {r_s} | {a_s} | {gap} | {seeds(recs)} | {per or '-'} |")
    lines += ["", "### Table 2 — discrete matrix completion (75/5/20 split)", "",
              "| model | RMSE | MAE | gap to paper DMF-D (0.898 / 0.625) | seeds | per seed (RMSE / MAE) |",
              "| --- | --- | --- | --- | --- | --- |",
              "| paper DMF-D | 0.898 | 0.625 | | 5 | |"] + rows

    vals = []
    for prof, task in (("cpu", "dmfd"), ("cpu_slowlam", "dmfd"), (LARGE2, "dmfd")):
        for r in load(out, prof, task):
            vals.append(f"{prof} seed {r['seed']}: best validation Q_b-RMSE {r['best_val']:.4f} (epoch {r['best_epoch']}),"
                        f" learned b = [{', '.join(f'{b:.3f}' for b in r['metrics']['learned_boundaries'])}]")
    lines += ["", "DMF-D validation (model selection) and learned boundaries:", ""] + [f"- {v}" for v in vals]
    dvals = []
    for prof in ("cpu", LARGE2):
        for r in load(out, prof, "dmf"):
            dvals.append(f"{prof} seed {r['seed']}: validation RMSE {r['metrics']['valid_continuous']['rmse']:.4f} "
                         f"(continuous, epoch {r['best_epoch']})")
    if dvals:
        lines += ["", "DMF (`dmf` task) validation:", ""] + [f"- {v}" for v in dvals]

    lines += ["", "### Wall time per task (s; 2-core CPU shared with other jobs: load average 10–18 for the `cpu`, `cpu_slowlam`, `cpu_hide`, `cpu_large` runs, 3–6 for the input-option runs, 1.4–3.7 for `cpu_large_slowlam`, run at nice 19)", "",
              "| profile / task | per seed |", "| --- | --- |"]
    for prof, task in (("cpu", "table1"), ("cpu", "dmf"), ("cpu", "als"), ("cpu", "dmfd"), ("cpu_slowlam", "dmfd"),
                       ("cpu_hide", "table1"), ("cpu_large", "table1"), (SMALLER, "table1"), (SELECTED, "table1"),
                       ("cpu_center", "table1"), (SIDE, "table1"),
                       (LARGE2, "dmfd"), (LARGE2, "dmf"),
                       *((p, "select") for p in SELECT_PROFILES)):
        recs = load(out, prof, task)
        if recs:
            lines.append(f"| {prof} / {task} | " + ", ".join(
                f"s{r['seed']}: {r.get('train_wall_time_s_original', r['wall_time_s']):.0f}" for r in recs) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
