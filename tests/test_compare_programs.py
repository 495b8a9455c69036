"""Stored compiled programs (:class:`mfjax.core.programs.ProgramCache`): a second ``mfjax compare`` process loads
its optimizer runs' executables instead of tracing and compiling them, and computes exactly the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from mfjax import cli, compare
from mfjax.core.programs import ProgramCache

TINY = ["--synthetic-size", "60x40", "--synthetic-density", "0.2", "--synthetic-rank", "3", "--iters", "12",
        "--eval-every", "4", "--no-plots", "--no-progress"]
RUNS = "gd+armijo,gn_block+exact_mf"


def _fresh_program():
    """A jitted scan with a constant of its own: a program no cache (XLA's shared test cache included) has seen,
    so it is compiled here (executables that come from XLA's cache are not stored)."""
    c0 = float(np.random.default_rng().uniform(0.1, 0.2))

    @jax.jit
    def f(x, a):
        def body(c, _):
            c = jnp.sin(c) * a + c * c0
            return c, jnp.sum(c)

        return jax.lax.scan(body, x, None, length=5)

    return f


def test_a_stored_program_is_loaded_without_tracing_and_computes_the_same(tmp_path):
    _scan_fn = _fresh_program()
    x, a = jnp.linspace(0.0, 1.0, 7), jnp.float32(0.3)
    cache = ProgramCache(tmp_path)
    first = cache.compile(lambda: _scan_fn.lower(x, a), "k", (x, a))
    assert (cache.misses, cache.hits) == (1, 0) and len(list(tmp_path.glob("*.bin"))) == 1

    def no_tracing():
        raise AssertionError("a stored program was traced again")

    again = ProgramCache(tmp_path)
    loaded = again.compile(no_tracing, "k", (x, a))
    assert (again.misses, again.hits) == (0, 1)
    ref = _scan_fn(x, a)
    for got in (first(x, a), loaded(x, a)):
        for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(r))
    # another key, another shape, another dtype: never the stored program
    other = ProgramCache(tmp_path)
    other.compile(lambda: _scan_fn.lower(x, a), "k2", (x, a))
    y = jnp.linspace(0.0, 1.0, 8)
    other.compile(lambda: _scan_fn.lower(y, a), "k", (y, a))
    other.compile(lambda: _scan_fn.lower(x, jnp.int32(1)), "k", (x, jnp.int32(1)))
    assert (other.misses, other.hits) == (3, 0)


def test_an_unreadable_stored_program_is_recompiled_and_replaced(tmp_path):
    _scan_fn = _fresh_program()
    x, a = jnp.ones(3), jnp.float32(0.5)
    cache = ProgramCache(tmp_path)
    path = cache.path("k", (x, a))
    path.write_bytes(b"not a program")
    run = cache.compile(lambda: _scan_fn.lower(x, a), "k", (x, a))
    assert cache.misses == 1
    np.testing.assert_array_equal(np.asarray(run(x, a)[0]), np.asarray(_scan_fn(x, a)[0]))
    assert ProgramCache(tmp_path).compile(lambda: None, "k", (x, a)) is not None  # replaced by a good one


def test_a_changed_spec_or_problem_never_hits_a_stale_program(tmp_path):
    problem = compare.make_problem(rank=3, synthetic_kwargs=dict(m=60, n=40, density=0.2, rank=3, seed=0))
    cache = ProgramCache(tmp_path)
    kw = dict(num_steps=6, eval_every=3)
    compare.run_one(compare.parse_run("gd+armijo"), problem, program_cache=cache, **kw)
    assert (cache.misses, cache.hits) == (2, 0)  # the start and the chunk program
    for spec, prob in [(compare.parse_run("gd+armijo(initial_step=0.5)"), problem),  # step option
                       (compare.parse_run("gd+armijo"), compare.make_problem(  # l2 (a closure constant)
                           rank=3, l2=3.0, synthetic_kwargs=dict(m=60, n=40, density=0.2, rank=3, seed=0)))]:
        before = cache.hits
        got = compare.run_one(spec, prob, program_cache=cache, **kw)
        assert cache.hits == before
        ref = compare.run_one(spec, prob, **kw)
        assert got["final_loss"] == ref["final_loss"]
        np.testing.assert_array_equal(got["trace"]["loss"], ref["trace"]["loss"])


def _compare_in_fresh_process(tmp_path, out, *extra):
    env = {k: v for k, v in os.environ.items() if k != cli.NO_COMPILE_CACHE_ENV}
    env[cli.COMPILE_CACHE_ENV] = str(tmp_path / "xla")
    proc = subprocess.run([sys.executable, "-m", "mfjax", "compare", *TINY, "--runs", RUNS,
                           "--out", str(tmp_path / out), *extra],
                          capture_output=True, text=True, env=env, timeout=300, check=True)
    return json.loads((tmp_path / out / "results.json").read_text()), proc.stdout


def _same_results(a, b):
    assert [r["name"] for r in a] == [r["name"] for r in b]
    for ra, rb in zip(a, b):
        for k in ("final_loss", "test_rmse", "train_rmse", "fun_evals", "grad_evals", "status"):
            assert ra[k] == rb[k], (ra["name"], k)
        for k in ("loss", "eval_rmse", "step_size", "grad_norm"):
            np.testing.assert_array_equal(np.asarray(ra["trace"][k], float), np.asarray(rb["trace"][k], float))


def test_second_compare_process_loads_its_programs_and_matches_the_first_bit_for_bit(tmp_path, monkeypatch):
    first, out1 = _compare_in_fresh_process(tmp_path, "one")  # empty cache: compiled afresh, then stored
    assert "stored runs' programs: 0 loaded, 4 compiled" in out1
    assert len(list((tmp_path / "xla" / cli.PROGRAMS_SUBDIR).glob("*.bin"))) == 4
    second, out2 = _compare_in_fresh_process(tmp_path, "two")
    assert "stored runs' programs: 4 loaded, 0 compiled" in out2
    _same_results(first, second)
    # the opt-out (environment variable): nothing read or written, the same results
    monkeypatch.setenv(cli.NO_COMPILE_CACHE_ENV, "1")
    monkeypatch.setenv(cli.COMPILE_CACHE_ENV, str(tmp_path / "off"))
    assert cli.main(["compare", *TINY, "--runs", RUNS, "--out", str(tmp_path / "three")]) == 0
    assert not (tmp_path / "off").exists()
    _same_results(first, json.loads((tmp_path / "three" / "results.json").read_text()))


def test_the_flag_turns_the_program_cache_off():
    args = cli.build_parser().parse_args(["compare", "--no-compile-cache"])
    args.compile_cache = cli.enable_compile_cache(args.no_compile_cache)
    assert args.compile_cache is None and cli.program_cache(args) is None
