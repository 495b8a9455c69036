"""What a comparison runs: the :class:`Problem` and the :class:`RunSpec` grid.

A run's name is its spec (``gd+armijo``, ``gd+inverse_lipschitz(growth=2.0)``,
``optax-lbfgs``, ``solver-als``) and :func:`parse_run` reads the name back.

>>> parse_run("gd+inverse_lipschitz(growth=2)").name
'gd+inverse_lipschitz(growth=2)'
>>> split_runs("gd+armijo,adam+constant(step_size=0.01,x=1),solver:als")
['gd+armijo', 'adam+constant(step_size=0.01,x=1)', 'solver:als']
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, Sequence

import numpy as np

from mfjax import data as mfdata

__all__ = ["Problem", "DataPart", "RunSpec", "make_problem", "parse_rating_scale", "data_rating_scale", "parse_run",
           "split_runs", "default_grid"]


class DataPart(NamedTuple):
    """This process's share of a problem whose data are split over the processes by rows.

    Attributes:
      index, count: this process and the number of processes (parts).
      row_range: ``(lo, hi)``: the process holds the entries of rows ``lo..hi-1`` only.
      row_ranges: every process's range, in process order (a partition of the rows).
      train_nnz, test_nnz: the global sizes of the train and test parts (sums over the processes).
    """

    index: int
    count: int
    row_range: tuple
    row_ranges: tuple
    train_nnz: int
    test_nnz: int


@dataclasses.dataclass(frozen=True)
class Problem:
    """One masked MF problem: data, split, rank and regularisation (slides' scaling by default).

    Attributes:
      name: the data set (``"synthetic"``, ``"ml-1m"``, a file path).
      train, test: the split's :class:`mfjax.data.Ratings`.
      rank: factorization rank ``r``.
      l2: regularisation ``lambda``.
      scale: ``"sum"`` (``||W o (X - U V^T)||^2 + lambda (||U||^2 + ||V||^2)``) or ``"mean"``.
      seed: seed of the split and of the initialisation.
      split: the split's fractions.
      checksum: :func:`mfjax.data.data_checksum` of the whole ratings.
      rating_scale: ``(lo, hi)``: the "clipped" RMSE clips predictions to it
        (:func:`data_rating_scale` unless given).
      mesh: ``None`` (one device), or a :class:`jax.sharding.Mesh`: optimizer
        runs use the sharded objective (:func:`mfjax.objective.shard_objective`),
        ALS splits its rows and DSGD its blocks over it (:func:`with_mesh`).
      split_method: ``"random"`` (:func:`mfjax.data.split`'s permutation) or
        ``"hash"`` (:func:`mfjax.data.hash_split`).
      part: ``None`` (``train`` / ``test`` hold the whole split), or the
        :class:`DataPart` of this process: ``train`` / ``test`` hold only its
        rows (the other processes hold the rest) and ``checksum`` combines the
        parts' checksums (:func:`mfjax.data.combine_checksums`).
    """

    name: str
    train: Any
    test: Any
    rank: int
    l2: float
    scale: str
    seed: int
    split: tuple
    checksum: str
    rating_scale: tuple | None = None
    mesh: Any = None
    split_method: str = "random"
    part: DataPart | None = None

    def describe(self) -> dict:
        """The JSON description written next to every result (and hashed into its configuration).

        With per-process data (``part``) the counts are the global ones and
        ``data_layout`` says how the data are held."""
        extra = {}
        if self.split_method != "random":
            extra["split_method"] = self.split_method
        if self.part is not None:
            extra["data_layout"] = (f"per-process rows: each of {self.part.count} processes holds only its row "
                                    "range; data_checksum combines the parts' checksums in process order")
            extra["row_ranges"] = [list(r) for r in self.part.row_ranges]
        return {
            "data": self.name,
            "shape": list(self.train.shape),
            "train_nnz": self.train.nnz if self.part is None else self.part.train_nnz,
            "test_nnz": self.test.nnz if self.part is None else self.part.test_nnz,
            "rank": self.rank,
            "l2": self.l2,
            "scale": self.scale,
            "seed": self.seed,
            "split": list(self.split),
            "data_checksum": self.checksum,
            "rating_scale": None if self.rating_scale is None else [float(v) for v in self.rating_scale],
            **({} if self.mesh is None else {"devices": int(self.mesh.devices.size)}),
            **extra,
        }

    def with_mesh(self, mesh) -> "Problem":
        """The same problem run on ``mesh`` (``None``: one device)."""
        return dataclasses.replace(self, mesh=mesh)


def parse_rating_scale(text) -> tuple[float, float]:
    """``"LO,HI"`` (or a pair) -> ``(lo, hi)``, finite with ``lo < hi``.

    >>> parse_rating_scale("0.5,5")
    (0.5, 5.0)

    Raises:
      ValueError: not two finite numbers in increasing order (the message says which).
    """
    parts = text.split(",") if isinstance(text, str) else list(text)
    if len(parts) != 2:
        raise ValueError(f"rating scale {text!r}: expected LO,HI (e.g. 1,5 or 0.5,5)")
    try:
        lo, hi = (float(v) for v in parts)
    except (TypeError, ValueError):
        raise ValueError(f"rating scale {text!r}: LO and HI must be numbers (e.g. 1,5)") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise ValueError(f"rating scale {text!r}: need finite LO < HI, got ({lo}, {hi})")
    return lo, hi


def data_rating_scale(name: str, train) -> tuple[float, float]:
    """The rating scale of a data set: a MovieLens set's documented scale (ML-10M: 0.5..5),
    else the training ratings' ``(min, max)``."""
    spec = getattr(mfdata, "MOVIELENS", {}).get(name)
    if spec is not None and getattr(spec, "rating_scale", None) is not None:
        return tuple(float(v) for v in spec.rating_scale)
    values = np.asarray(train.values, dtype=float)
    return float(values.min()), float(values.max())


def _check_inside(data: str, values: np.ndarray, scale) -> None:
    out = (values < scale[0]) | (values > scale[1])
    if out.any():
        k = int(np.argmax(out))
        raise mfdata.RatingsError(f"{data}: rating #{k} = {values[k]} is outside the rating scale "
                                  f"[{scale[0]}, {scale[1]}] (--rating-scale); {int(out.sum())} ratings are")


def _load(data: str, data_dir, synthetic_kwargs, rating_scale):
    if data == "synthetic":
        return mfdata.synthetic(**(synthetic_kwargs or {}))
    if data.startswith("ml-"):
        return mfdata.load_movielens(data, data_dir=data_dir)
    return mfdata.load_triplets(data, rating_scale=rating_scale)


def make_problem(data: str = "synthetic", *, rank: int = 10, l2: float = 2.0,
                 scale: str = "sum", seed: int = 0, test_fraction: float = 0.1,
                 data_dir=None, synthetic_kwargs: dict | None = None, rating_scale=None,
                 split_method: str | None = None, part: tuple[int, int] | None = None,
                 row_ranges=None, gather=None) -> Problem:
    """Build the problem: ``data`` is ``"synthetic"``, a MovieLens name (``"ml-1m"``) or a triplet file path.

    ``rating_scale``: ``(lo, hi)`` or ``"LO,HI"`` for the clipped RMSE; every
    rating must lie inside it (:class:`mfjax.data.RatingsError` names the
    first one outside).  ``None``: :func:`data_rating_scale` of the split's
    training ratings.  ``split_method``: ``"random"`` (the default for the
    whole data) or ``"hash"`` (the default, and the only method, for
    per-process data; :func:`mfjax.data.split`).

    Per-process data: ``part=(k, N)`` builds only part ``k`` of ``N`` (one
    per process of a multi-process run) -- the synthetic rows
    ``row_ranges[k]`` (``sampler="blocks"``, default ranges
    :func:`mfjax.data.row_ranges`: equal row counts), or a triplet file's
    or MovieLens release's part ``k`` (:func:`mfjax.data.load_triplets_part`,
    :func:`mfjax.data.load_movielens_part`: rows cut by rating counts,
    streamed), split by :func:`mfjax.data.hash_split` -- so that the parts of
    ``k = 0..N-1`` together hold exactly the entries of the 1-process
    problem with ``synthetic_kwargs["sampler"] = "blocks"`` (synthetic) and
    ``split_method="hash"``.
    The global numbers (train / test sizes, rating scale, checksum) come from
    one exchange between the processes, ``gather`` (default
    :func:`mfjax.core.distributed.allgather_host`: every process must call
    this function); see :class:`DataPart`.

    Raises:
      ValueError: per-process data with another sampler or a random split; ``row_ranges`` that do not
        partition the rows into ``N`` ranges (or given for a file).
    """
    explicit = None if rating_scale is None else parse_rating_scale(rating_scale)
    fractions = (1.0 - test_fraction, test_fraction)
    if part is not None:
        return _make_part_problem(data, part, row_ranges, gather, rank=rank, l2=l2, scale=scale, seed=seed,
                                  fractions=fractions, synthetic_kwargs=synthetic_kwargs, explicit=explicit,
                                  data_dir=data_dir,
                                  split_method="hash" if split_method is None else split_method)
    split_method = "random" if split_method is None else split_method
    ratings = _load(data, data_dir, synthetic_kwargs, explicit)
    if explicit is not None:
        _check_inside(data, np.asarray(ratings.values), explicit)
    train, test = mfdata.split(ratings, fractions=fractions, seed=seed, method=split_method)
    used = explicit if explicit is not None else data_rating_scale(data, train)
    return Problem(data, train, test, rank, float(l2), scale, seed, fractions,
                   mfdata.data_checksum(ratings), used, split_method=split_method)


def _synthetic_rows(synthetic_kwargs) -> int:
    import inspect

    kw = synthetic_kwargs or {}
    return int(kw.get("m", inspect.signature(mfdata.synthetic).parameters["m"].default))


def _local_rows(data, k, count, row_ranges, synthetic_kwargs, explicit, data_dir=None):
    """This process's ratings, its row range and every process's ranges (a file's: ``None``, known from the
    exchange; its own range ``None`` when the part is empty)."""
    if data == "synthetic":
        kw = dict(synthetic_kwargs or {})
        sampler = kw.pop("sampler", "blocks")
        if sampler != "blocks":
            raise ValueError(f"per-process synthetic data need sampler='blocks' (row-local), got {sampler!r}: "
                             "the other samplers draw the whole pattern at once")
        m = _synthetic_rows(kw)
        ranges = mfdata.check_row_ranges(mfdata.row_ranges(m, count) if row_ranges is None else row_ranges, m)
        if len(ranges) != count:
            raise ValueError(f"{len(ranges)} row ranges for {count} processes: give one range per process")
        return mfdata.synthetic(**kw, sampler="blocks", row_range=ranges[k]), ranges[k], ranges
    if row_ranges is not None:
        raise ValueError("row_ranges apply to synthetic data; a file's parts are cut by rating counts "
                         "(mfjax.data.load_triplets_part, load_movielens_part)")
    if data.startswith("ml-"):  # the release's ratings file streamed, this part's users kept
        local = mfdata.load_movielens_part(data, k, count, data_dir)
    else:
        local = mfdata.load_triplets_part(data, k, count, rating_scale=explicit)
    rows = np.asarray(local.rows)
    return local, ((int(rows.min()), int(rows.max()) + 1) if rows.size else None), None


def _make_part_problem(data, part, row_ranges, gather, *, rank, l2, scale, seed, fractions, synthetic_kwargs,
                       explicit, split_method, data_dir=None) -> Problem:
    """:func:`make_problem` with ``part=(k, N)``: only this process's rows, global numbers from ``gather``."""
    k, count = (int(v) for v in part)
    if not 0 <= k < count:
        raise ValueError(f"part must be (k, N) with 0 <= k < N, got {part!r}")
    if split_method != "hash":
        raise ValueError(f"per-process data need split_method='hash' (row-local), got {split_method!r}: "
                         "a random permutation split needs every entry in one place")
    local, mine, ranges = _local_rows(data, k, count, row_ranges, synthetic_kwargs, explicit, data_dir)
    if explicit is not None:
        _check_inside(data, np.asarray(local.values), explicit)
    train, test = mfdata.hash_split(local, fractions, seed)
    if gather is None:
        from mfjax.core.distributed import allgather_host as gather
    v = np.asarray(train.values, dtype=np.float64)
    lo, hi = (-1, -1) if mine is None else mine
    stats = np.array([train.nnz, test.nnz, v.min() if v.size else np.inf, v.max() if v.size else -np.inf, lo, hi])
    digest = np.frombuffer(bytes.fromhex(mfdata.data_checksum(local).removeprefix("sha256:")), dtype=np.float64)
    every = np.asarray(gather(np.concatenate([stats, digest])))  # one exchange; the digest's bytes kept exactly
    if every.shape != (count, stats.size + digest.size):
        raise ValueError(f"part {part!r}: the exchange returned numbers of shape {every.shape}, expected "
                         f"{(count, stats.size + digest.size)}")
    digests = np.ascontiguousarray(every[:, stats.size:])
    if ranges is None:  # a file's parts: the ranges the processes found (an empty part: where the previous ends)
        ranges, end = [], 0
        for a, b in every[:, 4:6].astype(np.int64):
            ranges.append((end, end) if a < 0 else (int(a), int(b)))
            end = ranges[-1][1]
        ranges = mfdata.check_row_ranges(ranges, local.shape[0])
    checksum = mfdata.combine_checksums("sha256:" + d.tobytes().hex() for d in digests)
    used = explicit
    if used is None:  # a MovieLens set's documented scale, else the training ratings' range
        used = (data_rating_scale(data, train) if data in getattr(mfdata, "MOVIELENS", {}) else
                (float(every[:, 2].min()), float(every[:, 3].max())))
    info = DataPart(k, count, ranges[k], tuple(ranges), int(every[:, 0].sum()), int(every[:, 1].sum()))
    return Problem(data, train, test, rank, float(l2), scale, seed, fractions, checksum, used,
                   split_method="hash", part=info)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of the grid.

    ``kind="opt"``: ``direction`` (name in :data:`mfjax.optim.REGISTRY`, in
    :data:`mfjax.compare.DATA_DIRECTIONS`, or ``"optax:<name>"``) and
    ``step`` (name in :data:`mfjax.linesearch.REGISTRY`).
    ``kind="solver"``: ``solver`` names a classical solver.
    """

    kind: str
    direction: str | None = None
    step: str | None = None
    solver: str | None = None
    step_options: tuple = ()  # ((key, value), ...) passed to the step rule's factory

    @property
    def name(self) -> str:
        """The run's name (its file name in ``runs/``; :func:`parse_run` reads it back)."""
        if self.kind == "solver":
            return f"solver-{self.solver}"
        if self.direction.startswith("optax:"):
            return self.direction.replace(":", "-")
        opts = ",".join(f"{k}={v}" for k, v in self.step_options)
        return f"{self.direction}+{self.step}" + (f"({opts})" if opts else "")


def _literal(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def parse_run(text: str) -> RunSpec:
    """``"gd+armijo"``, ``"gd+inverse_lipschitz(growth=2)"``, ``"optax:lbfgs"`` or ``"solver:als"`` -> :class:`RunSpec`.

    Keyword options in parentheses go to the step rule's constructor
    (e.g. ``constant(step_size=1e-5)``, ``armijo(initial_step=1e-3)``).

    Raises:
      ValueError: not of one of these forms.
    """
    text = text.strip()
    if text.startswith("solver:"):
        return RunSpec("solver", solver=text.split(":", 1)[1])
    if text.startswith("optax:"):
        return RunSpec("opt", direction=text)
    if "+" not in text:
        raise ValueError(f"run {text!r}: expected 'direction+step', 'optax:NAME' or 'solver:NAME'")
    d, s = text.split("+", 1)
    options = ()
    if "(" in s:
        if not s.endswith(")"):
            raise ValueError(f"run {text!r}: unbalanced parentheses in the step options")
        s, inner = s[:-1].split("(", 1)
        pairs = []
        for item in filter(None, (t.strip() for t in inner.split(","))):
            if "=" not in item:
                raise ValueError(f"run {text!r}: step option {item!r} is not key=value")
            k, v = item.split("=", 1)
            pairs.append((k.strip(), _literal(v.strip())))
        options = tuple(pairs)
    return RunSpec("opt", direction=d, step=s, step_options=options)


def split_runs(text: str) -> list[str]:
    """Split a comma-separated run list, keeping commas inside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [t.strip() for t in out if t.strip()]


def default_grid(directions: Sequence[str] | None = None, steps: Sequence[str] | None = None,
                 solvers: Sequence[str] = ("als",), optax_baselines: Sequence[str] = ("lbfgs",),
                 *, full: bool = False, default_step: str = "armijo") -> list[RunSpec]:
    """The comparison grid, plus optax baselines and classical solvers.

    ``full=True``: every direction rule x every step rule.  Default (the
    main job's size): every direction rule with ``default_step``, GD with
    every step rule (every rule once at a fraction of the cost), nonlinear
    CG with the exact step, and the Gauss-Newton block direction with the
    exact step (the fastest combination in ``BENCHMARKS.md``'s race against
    ``optax.lbfgs``).
    """
    from mfjax import linesearch, optim

    directions = list(directions) if directions is not None else list(optim.REGISTRY)
    steps = list(steps) if steps is not None else list(linesearch.REGISTRY)
    if full:
        pairs = [(d, s) for d in directions for s in steps]
    else:
        pairs = [(d, default_step if default_step in steps else steps[0]) for d in directions]
        pairs += [("gd" if "gd" in directions else directions[0], s) for s in steps]
        if "cg" in directions and "exact_mf" in steps:
            pairs.append(("cg", "exact_mf"))
        if "exact_mf" in steps:
            pairs.append(("gn_block", "exact_mf"))
    seen, specs = set(), []
    for d, s in pairs:
        if (d, s) not in seen:
            seen.add((d, s))
            specs.append(RunSpec("opt", direction=d, step=s))
    specs += [RunSpec("opt", direction=f"optax:{o}") for o in optax_baselines]
    specs += [RunSpec("solver", solver=s) for s in solvers]
    return specs
