"""Imports point down the layers; no cycles; experiments and benchmarks use the public API only.

The modules are parsed with :mod:`ast`, never imported, so the test sees
every import: at module level, inside functions (lazy imports count: a lazy
upward import is still an upward dependency) and ``importlib.import_module``
calls with a literal name.

Layers, bottom to top (a module may import its own package and any package
of a lower layer; peers of one layer only in the direction listed in
:data:`PEERS`)::

    0  data, store (+ the deprecated _io shim)  numpy / stdlib only
    1  core                                     statuses, trees, checks
    2  objective, losses                        the MF objective; losses -> objective
    3  metrics, eval                             eval: top-k lists, ranking metrics
    4  linesearch, optim                        optim -> linesearch
    5  loop
    6  solvers
    7  models
    8  compare, cli, __main__,                  cli -> compare, __main__ -> cli,
       estimator, selection                     estimator -> compare, selection -> estimator
    9  mfjax (the package root re-exports everything; nothing inside imports it)

``store`` sits at the bottom, beside ``data``: atomic result files and the
resumable store use numpy and the standard library only, so every layer
(checkpoints in ``models``, ``compare``, the CLI, experiments) can use it.
"""

from __future__ import annotations

import ast
import pathlib
from collections import defaultdict

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "mfjax"

LAYERS = {
    "data": 0, "store": 0, "_io": 0,
    "core": 1,
    "objective": 2, "losses": 2,
    "metrics": 3, "eval": 3,
    "linesearch": 4, "optim": 4,
    "loop": 5,
    "solvers": 6,
    "models": 7,
    "compare": 8, "cli": 8, "__main__": 8, "estimator": 8, "selection": 8,
    "": 9,  # the package root, mfjax/__init__.py
}
# allowed imports between different packages of one layer: (importer, imported)
PEERS = {("data", "store"), ("data", "_io"), ("_io", "store"), ("losses", "objective"),
         ("optim", "linesearch"), ("cli", "compare"), ("__main__", "cli"),
         ("estimator", "compare"), ("selection", "estimator")}


# ------------------------------------------------------------------ parsing
def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(name: str) -> str:
    """The longest prefix of ``name`` that is a module of the package (``mfjax.data.Ratings`` -> ``mfjax.data``)."""
    parts = name.split(".")
    while parts and ".".join(parts) not in MODULES:
        parts.pop()
    return ".".join(parts) or name


def _imports(path: pathlib.Path, module: str):
    """``(line, text, imported module)`` for every mfjax import in the file (lazy ones included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "mfjax" or a.name.startswith("mfjax."):
                    out.append((node.lineno, f"import {a.name}", _resolve(a.name)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                src = ".".join(base + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            if not (src == "mfjax" or src.startswith("mfjax.")):
                continue
            for a in node.names:
                target = f"{src}.{a.name}"
                # ``from mfjax.data import loaders`` imports the submodule; ``... import Ratings`` the package
                mod = target if target in MODULES else _resolve(src)
                out.append((node.lineno, f"from {'.' * node.level}{node.module or ''} import {a.name}", mod))
        elif isinstance(node, ast.Call) and _is_import_module(node):
            name = node.args[0].value
            if name == "mfjax" or name.startswith("mfjax."):
                out.append((node.lineno, f"importlib.import_module({name!r})", _resolve(name)))
    return out


def _is_import_module(node: ast.Call) -> bool:
    f = node.func
    named = (isinstance(f, ast.Attribute) and f.attr == "import_module") or (
        isinstance(f, ast.Name) and f.id == "import_module")
    return named and bool(node.args) and isinstance(node.args[0], ast.Constant) and isinstance(
        node.args[0].value, str)


def _package(module: str) -> str:
    """The top-level package of a module (``mfjax.data.ratings`` -> ``data``; the root -> ``""``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _rel(path: pathlib.Path) -> str:
    return str(path.relative_to(ROOT))


# ------------------------------------------------------------------ tests
def test_every_package_has_a_layer():
    missing = sorted({_package(m) for m in MODULES} - set(LAYERS))
    assert not missing, f"packages without a layer in tests/test_layers.py LAYERS: {missing} (add them)"


def _layer_violations():
    bad = []
    for module, path in MODULES.items():
        src = _package(module)
        for line, text, target in _imports(path, module):
            dst = _package(target)
            if dst == src or src not in LAYERS or dst not in LAYERS:
                continue
            if dst == "":
                bad.append(f"{_rel(path)}:{line}: `{text}` imports the package root `mfjax` (it re-exports "
                           f"every layer); import the submodule that owns the name")
            elif LAYERS[dst] > LAYERS[src]:
                bad.append(f"{_rel(path)}:{line}: `{text}` points up: {src} (layer {LAYERS[src]}) imports "
                           f"{dst} (layer {LAYERS[dst]})")
            elif LAYERS[dst] == LAYERS[src] and (src, dst) not in PEERS:
                bad.append(f"{_rel(path)}:{line}: `{text}`: peers {src} and {dst} (layer {LAYERS[src]}) may "
                           f"only import in the direction(s) {sorted(p for p in PEERS if src in p or dst in p)}")
    return bad


def test_imports_point_down_the_layers():
    bad = _layer_violations()
    assert not bad, "upward / sideways imports:\n" + "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_circular_imports_inside_a_package():
    """Modules of one package form a DAG (a package's ``__init__`` re-exporting its modules is the root of it)."""
    graph, where = defaultdict(set), {}
    for module, path in MODULES.items():
        for line, text, target in _imports(path, module):
            if target != module and _package(target) == _package(module) and _package(module):
                # a submodule importing names from its own package's __init__ closes a cycle with it
                graph[module].add(target)
                where.setdefault((module, target), f"{_rel(path)}:{line}: `{text}`")
    bad = []
    for comp in _cycles(graph):
        edges = [where[(a, b)] for a in comp for b in comp if (a, b) in where]
        bad.append("cycle " + " <-> ".join(comp) + ":\n    " + "\n    ".join(edges))
    assert not bad, "circular imports (move the shared part down into one module):\n" + "\n".join(bad)


def _all_names(path: pathlib.Path) -> set[str]:
    """The literal ``__all__`` of a module (empty when it has none)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            try:
                return set(ast.literal_eval(node.value))
            except ValueError:
                return set()
    return set()


def test_no_package_export_hides_its_submodule():
    """``mfjax.solvers.vector_descent`` must be one thing.

    A package may re-export a function under the name of its own submodule
    (``from mfjax.solvers.als import als``: ``mfjax.solvers.als`` is then
    the function) only when every public name of that submodule is also
    exported by the package, so that nobody needs the hidden module
    (``importlib.import_module("mfjax.solvers.vector_descent")``).
    """
    bad = []
    for module, path in MODULES.items():
        if path.name != "__init__.py":
            continue
        exported = _all_names(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            for a in node.names:
                bound = a.asname or a.name
                sub = f"{module}.{bound}"
                src = node.module or ""
                if sub not in MODULES or f"{src}.{a.name}" in MODULES or (node.level and not node.module):
                    continue  # not a submodule's name, or it binds the submodule itself
                hidden = sorted(_all_names(MODULES[sub]) - exported - {bound})
                if hidden:
                    bad.append(f"{_rel(path)}:{node.lineno}: `{bound}` replaces the submodule {sub} by an object, "
                               f"hiding its public names {hidden} (export them from {module}, or rename the "
                               f"function or the module)")
    assert not bad, "\n".join(bad)


# ------------------------------------------------------------- experiments / benchmarks
SCRIPTS = sorted([*(ROOT / "experiments").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")])


def _private(parts) -> str | None:
    for p in parts:
        if p.startswith("_") and not (p.startswith("__") and p.endswith("__")):
            return p
    return None


def _private_uses(path: pathlib.Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    bound: dict[str, str] = {}  # local name -> mfjax module it is bound to
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "mfjax" or a.name.startswith("mfjax."):
                    if _private(a.name.split(".")):
                        out.append((node.lineno, f"import {a.name}"))
                    bound[a.asname or a.name.split(".")[0]] = a.asname and a.name or "mfjax"
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module and (
                node.module == "mfjax" or node.module.startswith("mfjax.")):
            for a in node.names:
                if _private(node.module.split(".")) or _private([a.name]):
                    out.append((node.lineno, f"from {node.module} import {a.name}"))
                bound[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Call) and _is_import_module(node):
            name = node.args[0].value
            if (name == "mfjax" or name.startswith("mfjax.")) and _private(name.split(".")):
                out.append((node.lineno, f"importlib.import_module({name!r})"))
    for node in ast.walk(tree):  # attribute access through an mfjax name: ``loaders._slow_parse``
        if isinstance(node, ast.Attribute) and _private([node.attr]):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in bound:
                out.append((node.lineno, f"{ast.unparse(node)} (via {bound[root.id]})"))
    return out


@pytest.mark.parametrize("path", SCRIPTS, ids=[_rel(p) for p in SCRIPTS])
def test_scripts_use_public_names_only(path):
    bad = _private_uses(path)
    assert not bad, "\n".join(f"{_rel(path)}:{line}: `{text}` uses a private mfjax name (a module or name "
                              f"starting with '_'); use or request a public one" for line, text in bad)


def test_the_checker_sees_violations(tmp_path):
    """The parsers catch what they are meant to (a guard against a test that passes vacuously)."""
    f = tmp_path / "x.py"
    f.write_text("from mfjax._io import to_jsonable\nfrom mfjax.data import loaders\n"
                 "def g():\n    import mfjax.solvers._rows\n    return loaders._slow_parse\n")
    texts = [t for _, t in _private_uses(f)]
    assert len(texts) == 3 and any("_slow_parse" in t for t in texts), texts
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    imports = _imports(MODULES["mfjax.cli"], "mfjax.cli")
    assert any(t == "mfjax.compare" for _, _, t in imports)  # lazy imports inside functions are seen
