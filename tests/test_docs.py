"""Documentation: every public name has a docstring, and the ``>>>`` examples in the package run.

Public names.  For ``mfjax`` and each public subpackage / module listed in
:data:`PUBLIC_MODULES` (a module that does not exist yet is skipped), every
name in its ``__all__`` must be documented:

- a module: a non-empty module docstring;
- a class or a function (also a jitted or ``functools.partial`` function): its
  own non-empty docstring (the ``Name(field, ...)`` signature that
  ``NamedTuple`` / ``dataclass`` generate does not count);
- anything else (a constant, a registry dict, a type alias): a ``#:`` comment
  on the line just above its assignment in some ``mfjax`` source file
  (Sphinx's convention), or a mention of the name in the module docstring;
- dunder names (``__version__``) are exempt.

Doctests.  Every module under ``mfjax/`` is imported and the examples in the
docstrings it defines (module, classes, functions, methods) run through
:mod:`doctest`, one test per docstring, with ``ELLIPSIS`` and
``NORMALIZE_WHITESPACE``; the globals are the module's own namespace.  This is
done here rather than with ``--doctest-modules`` so that a plain ``pytest`` does
not import every file of ``tests/`` as a module, and so that a module that fails
to import is reported as one failing test, not a collection error.
"""

from __future__ import annotations

import doctest
import functools
import importlib
import inspect
import pathlib
import pkgutil
import re
import warnings

import pytest

import mfjax

ROOT = pathlib.Path(mfjax.__file__).resolve().parent

#: The modules whose ``__all__`` is the public API.
PUBLIC_MODULES = (
    "mfjax",
    "mfjax.data",
    "mfjax.core",
    "mfjax.objective",
    "mfjax.losses",
    "mfjax.metrics",
    "mfjax.eval",
    "mfjax.linesearch",
    "mfjax.optim",
    "mfjax.loop",
    "mfjax.solvers",
    "mfjax.models",
    "mfjax.compare",
    "mfjax.store",
)

DOCTEST_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


# --------------------------------------------------------------- public names
def _import_or_skip(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == name or name.startswith(f"{e.name}."):
            pytest.skip(f"{name} does not exist (yet)")
        raise


@functools.lru_cache(maxsize=None)
def _doc_comment_names() -> frozenset:
    """Names assigned right below a ``#:`` comment anywhere in the package sources."""
    names = set()
    assign = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?::[^=]*)?=")
    for path in ROOT.rglob("*.py"):
        lines = path.read_text().splitlines()
        for prev, line in zip(lines, lines[1:]):
            m = assign.match(line)
            if m and prev.strip().startswith("#:"):
                names.add(m.group(1))
    return frozenset(names)


def _is_generated(doc: str, name: str) -> bool:
    """The ``Name(a, b)`` docstring that ``NamedTuple`` / ``dataclass`` write when there is none."""
    doc = doc.strip()
    return "\n" not in doc and doc.startswith(f"{name}(") and doc.endswith(")")


def _own_doc(obj) -> str | None:
    if isinstance(obj, functools.partial):
        obj = obj.func
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__")  # not inherited
        return None if doc is None or _is_generated(doc, obj.__name__) else doc
    return getattr(obj, "__doc__", None)


def _undocumented(module) -> list[str]:
    """The names of ``module.__all__`` without documentation (see the module docstring)."""
    missing = []
    mod_doc = module.__doc__ or ""
    for name in getattr(module, "__all__", ()):
        if name.startswith("__") and name.endswith("__"):  # ``__version__``: self-describing
            continue
        with warnings.catch_warnings():  # deprecated aliases warn on access
            warnings.simplefilter("ignore")
            obj = getattr(module, name)
        if inspect.ismodule(obj):
            ok = bool((obj.__doc__ or "").strip())
        elif inspect.isclass(obj) or inspect.isroutine(obj) or isinstance(obj, functools.partial) or (
                callable(obj) and hasattr(obj, "__wrapped__")):
            ok = bool((_own_doc(obj) or "").strip())
        else:
            ok = name in _doc_comment_names() or re.search(rf"\b{re.escape(name)}\b", mod_doc) is not None
        if not ok:
            missing.append(name)
    return missing


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_public_names_are_documented(module_name):
    module = _import_or_skip(module_name)
    assert (module.__doc__ or "").strip(), f"{module_name} has no module docstring"
    assert hasattr(module, "__all__"), f"{module_name} has no __all__"
    missing = _undocumented(module)
    assert not missing, (
        f"{module_name}: public names without a docstring (or, for a constant, a `#:` comment "
        f"above its assignment): {missing}")


def test_the_documentation_check_itself():
    """The rules of :func:`_undocumented` on a made-up module."""
    import types
    from typing import NamedTuple

    class Bare(NamedTuple):
        x: int

    class Documented(NamedTuple):
        """A point."""

        x: int

    def f():
        """Do nothing."""

    def g():
        pass

    mod = types.ModuleType("fake", "Mentions LIMIT in the text.")
    mod.Bare, mod.Documented, mod.f, mod.g = Bare, Documented, f, g
    mod.LIMIT, mod.OTHER_CONSTANT_NOBODY_DOCUMENTS = 3, 4
    mod.jitted = functools.wraps(f)(lambda: None)
    mod.__all__ = ["Bare", "Documented", "f", "g", "LIMIT", "OTHER_CONSTANT_NOBODY_DOCUMENTS", "jitted"]
    assert _undocumented(mod) == ["Bare", "g", "OTHER_CONSTANT_NOBODY_DOCUMENTS"]


# --------------------------------------------------------------- doctests
def _all_module_names() -> list[str]:
    names = ["mfjax"]
    for info in pkgutil.walk_packages([str(ROOT)], prefix="mfjax."):
        if info.name.rsplit(".", 1)[-1] != "__main__":
            names.append(info.name)
    return sorted(names)


def _doctest_cases():
    """``(id, module name, test name or None)``: one per docstring with examples (None: import failed)."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    cases = []
    for name in _all_module_names():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(name)
                tests = finder.find(module)
        except Exception:  # reported by the test, not at collection
            cases.append(pytest.param(name, None, id=f"{name}:import"))
            continue
        for t in tests:
            if t.examples:
                cases.append(pytest.param(name, t.name, id=t.name))
    return cases


@pytest.mark.parametrize("module_name, test_name", _doctest_cases())
def test_doctests(module_name, test_name):
    module = importlib.import_module(module_name)  # raises (and fails) when the module cannot be imported
    assert test_name is not None, f"{module_name} imported now but not at collection"
    (test,) = [t for t in doctest.DocTestFinder().find(module) if t.name == test_name]
    out = []
    runner = doctest.DocTestRunner(optionflags=DOCTEST_FLAGS)
    runner.run(test, out=out.append)
    failed, attempted = runner.summarize(verbose=False)
    assert failed == 0, f"{failed} of {attempted} examples failed in {test_name}:\n" + "".join(out)


def test_the_package_has_doctests():
    """Some public docstrings carry runnable examples (data, models, core at least)."""
    ids = {p.id for p in _doctest_cases()}
    for prefix in ("mfjax.data.", "mfjax.models.", "mfjax.core."):
        assert any(i.startswith(prefix) for i in ids), f"no doctest under {prefix}"
