"""benchmarks/gpu/netflix.py runs on the CPU at a tiny scale and writes its JSON/markdown (issue 16)."""

import importlib.util
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_netflix_gpu_script_runs_at_a_tiny_scale(tmp_path):
    spec = importlib.util.spec_from_file_location("netflix_gpu", ROOT / "benchmarks" / "gpu" / "netflix.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main(["--scale", "0.0005", "--ranks", "4", "--ops", "lossgrad", "--repeats", "1", "--out", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "netflix.json").read_text())
    assert res["nnz"] > 40_000 and res["shape"][1] == 17_770
    (run,) = res["runs"]
    assert run["op"] == "lossgrad" and run["rank"] == 4 and run["warm_s"] > 0
    assert run["traffic_gb"] == res["nnz"] * (16 + 16 * 4) / 1e9 and 0 < run["of_peak"] < 1
    assert "| lossgrad | 4 |" in (tmp_path / "netflix.md").read_text()
