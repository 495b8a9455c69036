"""The notebooks run end to end, and every experiment script runs with ``--quick``.

Notebooks (``notebooks/*.ipynb``, stored without outputs) are executed with
nbclient on a kernel that runs *this* interpreter (a kernelspec written to a
temporary ``JUPYTER_PATH`` entry whose argv is ``sys.executable -m
ipykernel_launcher``), so the test exercises the mfjax under test.  A missing
kernel is a failure with a clear message, not a skip.  The kernel uses
Jupyter's inline matplotlib backend, and every notebook must show at least
one figure as an ``image/png`` output; the ML-1M notebook runs with an empty
``$MFJAX_DATA_DIR`` and must skip with a message.

The experiment scripts are run in-process (``main([...])`` of each module)
with ``--quick`` into ``tmp_path``; the smoke test checks that each writes
its ``results.json`` (with command, seed, split and data checksum) and PNGs,
and that a second run resumes instead of recomputing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
EXPERIMENTS = [
    "slides_best_model",
    "slides_optimizer_comparison",
    "vector_descent",
    "nnmf",
    "sgd_vs_als",
    "svd_power_iteration",
    "side_mlp",
    "sideinfo_ml1m",
]
REQUIRED_NOTEBOOKS = {"quickstart", "optimizers_linesearch", "dmf_extendability", "nmf_losses", "movielens_1m"}
# notebooks that need data the test run does not have: they must say so and skip, with no figure
DATA_NOTEBOOKS = {"movielens_1m"}
KERNEL_NAME = "mfjax-test-python3"


def test_required_notebooks_present_and_clean():
    import nbformat
    names = {p.stem for p in NOTEBOOKS}
    assert REQUIRED_NOTEBOOKS <= names, f"missing notebooks: {REQUIRED_NOTEBOOKS - names}"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.get("outputs"), f"{path.name}: stored with outputs (clear them)"
                assert cell.get("execution_count") is None, f"{path.name}: stored with execution counts"
                # public API only: no private modules
                assert "mfjax._" not in cell.source and "from mfjax." not in cell.source.replace(
                    "import mfjax.losses.divergences", ""), f"{path.name}: uses a non-public import"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A kernelspec for the current interpreter, first on JUPYTER_PATH."""
    try:
        import ipykernel  # noqa: F401
        import nbclient  # noqa: F401
        from jupyter_client.kernelspec import KernelSpecManager
    except ImportError as e:  # a failure, not a skip: the notebooks are part of the deliverable
        pytest.fail(f"cannot execute notebooks: {e}. Install the notebook extra (ipykernel, nbclient, nbformat) "
                    f"into {sys.executable}")
    root = tmp_path_factory.mktemp("jupyter")
    empty = tmp_path_factory.mktemp("no-data")
    kdir = root / "kernels" / KERNEL_NAME
    kdir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "mfjax test (current interpreter)", "language": "python",
            "env": {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                    "JAX_PLATFORMS": "cpu",
                    # Jupyter's inline backend (the notebooks select none): figures become image/png outputs
                    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
                    # no ML-1M for the data notebooks: an empty data directory and cache (they must skip)
                    "MFJAX_DATA_DIR": str(empty), "MFJAX_CACHE_DIR": str(empty)}}
    (kdir / "kernel.json").write_text(json.dumps(spec))
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(root)] + ([old] if old else []))
    try:
        ks = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"kernel {KERNEL_NAME!r} for {sys.executable} not found by jupyter_client: {e}")
    assert ks.argv[0] == sys.executable, (ks.argv, sys.executable)
    yield KERNEL_NAME
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_env):
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=kernel_env, timeout=300,
                                     resources={"metadata": {"path": str(REPO)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{path.name} failed:\n{e}")
    except Exception as e:  # noqa: BLE001  (kernel could not start, ...)
        pytest.fail(f"{path.name}: could not execute with kernel {kernel_env!r} ({sys.executable}): "
                    f"{type(e).__name__}: {e}")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: error outputs {errors}"
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    if path.stem in DATA_NOTEBOOKS:  # the data are absent here: a clear message, no figure, no error
        assert "SKIPPED" in text and "MFJAX_DATA_DIR" in text, text
        assert not images
    else:  # figures render inline (no Agg backend forced by the notebook)
        assert images, f"{path.name}: no inline figure (image/png output)"
        assert not any("matplotlib.use(" in c.source for c in nb.cells if c.cell_type == "code"), path.name
    assert any(c.cell_type == "markdown" and "Conclusion" in c.source for c in nb.cells), \
        f"{path.name}: no conclusion"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_mfjax_experiment_{name}", REPO / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_quick(name, tmp_path, capsys):
    mod = _load(name)
    out = tmp_path / name
    assert mod.main(["--quick", "--out", str(out)]) == 0
    doc = json.loads((out / "results.json").read_text())
    for key in ("command", "seed", "split", "config", "data", "parts"):
        assert key in doc, f"{name}: results.json lacks {key!r}"
    assert doc["data"]["checksum"].startswith("sha256:")
    assert doc["parts"], f"{name}: no finished parts"
    assert all("wall_s" in p for p in doc["parts"].values())
    assert list(out.glob("*.png")), f"{name}: no PNG written"
    capsys.readouterr()
    # resume: a second run recomputes nothing
    assert mod.main(["--quick", "--out", str(out), "--no-plots"]) == 0
    log = capsys.readouterr().out
    assert log.count("[resume]") >= len(doc["parts"]), log
