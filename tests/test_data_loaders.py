"""Loaders: every MovieLens layout on small files, triplet files, lookup, download, zip safety."""

import gzip
import hashlib
import http.server
import os
import pathlib
import threading
import zipfile

import numpy as np
import pytest

from mfjax.data import (
    MOVIELENS,
    ChecksumError,
    DataNotFoundError,
    MalformedFileError,
    RatingsError,
    data_checksum,
    download_file,
    download_movielens,
    file_sha256,
    find_movielens,
    load_movielens,
    load_triplets,
    safe_extract,
)
from mfjax.data import loaders

# (user, item, rating, timestamp); ids deliberately sparse and unsorted
TRIPLETS = [
    (10, 7, 5.0, 978300760),
    (3, 7, 3.0, 978302109),
    (10, 2, 4.0, 978301968),
    (42, 99, 1.0, 978300275),
    (3, 99, 2.0, 978824291),
    (7, 2, 4.0, 978302268),
]
HALF = [(1, 31, 2.5, 1260759144), (1, 1029, 3.0, 1260759179), (2, 10, 4.0, 835355493),
        (2, 31, 0.5, 835355681), (7, 1029, 5.0, 851866703)]


def _text(rows, sep, header=None):
    lines = [header] if header else []
    for u, i, r, t in rows:
        rv = f"{r:g}"
        lines.append(sep.join([str(u), str(i), rv, str(t)]))
    return ("\n".join(lines) + "\n").encode()


def _reference(rows):
    """Brute-force expectation: dense ids in sorted original-id order."""
    us = sorted({u for u, *_ in rows})
    its = sorted({i for _, i, *_ in rows})
    dense = {(us.index(u), its.index(i)): r for u, i, r, _ in rows}
    return us, its, dense


def _check(r, rows):
    us, its, dense = _reference(rows)
    assert r.shape == (len(us), len(its))
    assert r.nnz == len(rows)
    got = {(int(a), int(b)): float(v) for a, b, v in zip(r.rows, r.cols, r.values)}
    assert got == dense
    np.testing.assert_array_equal(r.row_ids.original, us)
    np.testing.assert_array_equal(r.col_ids.original, its)


def _write(path: pathlib.Path, data: bytes, how: str, member: str | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "plain":
        path.write_bytes(data)
    elif how == "gz":
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    elif how == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(member, data)
    return path


ML_LAYOUTS = {
    # name: (rows, sep, header, folder in zip)
    "ml-100k": (TRIPLETS, "\t", None, "ml-100k"),
    "ml-1m": (TRIPLETS, "::", None, "ml-1m"),
    "ml-10m": (HALF, "::", None, "ml-10M100K"),
    "ml-20m": (HALF, ",", "userId,movieId,rating,timestamp", "ml-20m"),
    "ml-25m": (HALF, ",", "userId,movieId,rating,timestamp", "ml-25m"),
    "ml-latest-small": (HALF, ",", "userId,movieId,rating,timestamp", "ml-latest-small"),
}


@pytest.mark.parametrize("name", sorted(ML_LAYOUTS))
@pytest.mark.parametrize("how", ["plain", "gz", "zip", "folder"])
def test_movielens_formats(tmp_path, monkeypatch, name, how):
    monkeypatch.delenv("MFJAX_DATA_DIR", raising=False)
    rows, sep, header, folder = ML_LAYOUTS[name]
    spec = MOVIELENS[name]
    data = _text(rows, sep, header)
    if how == "zip":
        _write(tmp_path / spec.archive, data, "zip", f"{folder}/{spec.file}")
    elif how == "folder":
        _write(tmp_path / folder / spec.file, data, "plain")
    else:
        _write(tmp_path / spec.file, data, how)
    r = load_movielens(name, tmp_path, cache_dir=tmp_path / "nocache")
    _check(r, rows)


def test_movielens_zip_path_given_directly(tmp_path):
    z = _write(tmp_path / "x.zip", _text(TRIPLETS, "::"), "zip", "ml-1m/ratings.dat")
    _check(load_movielens("ml-1m", z, cache_dir=tmp_path / "c"), TRIPLETS)


def test_unknown_release():
    with pytest.raises(ValueError, match="unknown MovieLens release 'ml-2m'"):
        load_movielens("ml-2m")


def test_lookup_order_env_then_cache(tmp_path, monkeypatch):
    env_dir, cache = tmp_path / "env", tmp_path / "cache"
    _write(env_dir / "ratings.dat", _text(TRIPLETS, "::"), "plain")
    _write(cache / "ratings.dat", _text(TRIPLETS[:3], "::"), "plain")
    monkeypatch.setenv("MFJAX_DATA_DIR", str(env_dir))
    assert load_movielens("ml-1m", cache_dir=cache).nnz == len(TRIPLETS)
    # data_dir wins over the environment
    d = tmp_path / "given"
    _write(d / "ratings.dat", _text(TRIPLETS[:2], "::"), "plain")
    assert load_movielens("ml-1m", d, cache_dir=cache).nnz == 2
    # without the env variable, the cache (here via XDG_CACHE_HOME) is used
    monkeypatch.delenv("MFJAX_DATA_DIR")
    monkeypatch.delenv("MFJAX_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    _write(tmp_path / "xdg" / "mfjax" / "ratings.dat", _text(TRIPLETS[:4], "::"), "plain")
    assert load_movielens("ml-1m").nnz == 4


def test_missing_data_message(tmp_path, monkeypatch):
    monkeypatch.setenv("MFJAX_DATA_DIR", str(tmp_path / "envdir"))
    with pytest.raises(DataNotFoundError) as e:
        load_movielens("ml-1m", tmp_path / "nowhere", cache_dir=tmp_path / "cache")
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, ValueError)
    for part in ["data_dir", str(tmp_path / "nowhere"), "$MFJAX_DATA_DIR", str(tmp_path / "envdir"),
                 "cache", str(tmp_path / "cache"), "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
                 "download=True", "ratings.dat.gz", "ml-1m.zip"]:
        assert part in msg, part
    monkeypatch.delenv("MFJAX_DATA_DIR")
    with pytest.raises(DataNotFoundError, match=r"\$MFJAX_DATA_DIR: \(not set\)"):
        find_movielens("ml-100k", cache_dir=tmp_path / "cache")


# ------------------------------------------------------------- triplets
@pytest.mark.parametrize("sep,header", [(",", "user,item,rating,ts"), ("\t", None), (";", "u;i;r;t"),
                                        ("::", None), (" ", None)])
def test_load_triplets_auto(tmp_path, sep, header):
    p = _write(tmp_path / "r.txt", _text(HALF, sep, header), "gz")
    _check(load_triplets(p), HALF)
    _check(load_triplets(p, sep=sep, header=header is not None), HALF)


def test_triplets_three_columns_crlf_blank_lines(tmp_path):
    p = tmp_path / "r.csv"
    p.write_bytes(b"1,2,3\r\n\r\n2,2,4.5\r\n  3 , 1 , 1\r\n")
    r = load_triplets(p)
    _check(r, [(1, 2, 3.0, 0), (2, 2, 4.5, 0), (3, 1, 1.0, 0)])


def test_fast_and_slow_parse_agree():
    rng = np.random.default_rng(3)
    u = rng.integers(0, 10**9, 500)
    i = rng.integers(0, 50, 500)
    v = rng.integers(1, 11, 500) / 2
    data = "".join(f"{a}::{b}::{c}::{k}\n" for k, (a, b, c) in enumerate(zip(u, i, v))).encode()
    fast = loaders.parse_triplets_fast(data, "::", False)
    slow = loaders.parse_triplets_precise(data, "::", False, "x")
    assert fast is not None
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fast.values, v)


@pytest.mark.parametrize("sep,header", [("::", False), (",", True)])
def test_fast_parse_of_mixed_field_lengths_equals_the_precise_pass(sep, header):
    """ML-10M ``::`` / ML-20M-25M CSV-with-header lines whose fields vary in length and form
    (the fast path parses each field length separately): values equal the precise pass."""
    rng = np.random.default_rng(7)
    n = 2000
    u = rng.integers(1, 10 ** rng.integers(1, 7, n))
    i = rng.integers(1, 10 ** rng.integers(1, 6, n))
    forms = ["{:g}", "{:.1f}", "{:.2f}", "{:.0f}"]
    v = [forms[k].format(x) for k, x in zip(rng.integers(0, 4, n), rng.integers(1, 11, n) / 2)]
    t = rng.integers(1, 10 ** rng.integers(1, 11, n))
    text = ("userId,movieId,rating,timestamp\n" if header else "") + "".join(
        f"{a}{sep}{b}{sep}{c}{sep}{d}\n" for a, b, c, d in zip(u, i, v, t))
    data = text.encode()
    fast = loaders.parse_triplets_fast(data, sep, header, timestamps=True)
    slow = loaders.parse_triplets_precise(data, sep, header, "x", timestamps=True)
    assert fast is not None
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fast.values, [float(x) for x in v])
    np.testing.assert_array_equal(fast.timestamps, t)


@pytest.mark.parametrize("sep", ["::", ","])
def test_fast_path_never_disagrees_with_precise_pass(sep):
    """Random byte mutations: the fast path either declines (None) or equals the slow pass."""
    rng = np.random.default_rng(0)
    base = _text(HALF + [(3, 4, 1.0, 5), (12, 7, 3.5, 6)], sep)
    alphabet = np.frombuffer(b"0123456789.-:,\n x", np.uint8)
    for _ in range(300):
        buf = np.frombuffer(base, np.uint8).copy()
        for pos in rng.integers(0, buf.size, rng.integers(1, 3)):
            buf[pos] = rng.choice(alphabet)
        data = buf.tobytes()
        fast = loaders.parse_triplets_fast(data, sep, False)
        try:
            slow = loaders.parse_triplets_precise(data, sep, False, "x")
        except RatingsError:
            assert fast is None, data
            continue
        if fast is not None:
            for a, b in zip(fast, slow):
                np.testing.assert_array_equal(a, b, err_msg=repr(data))


# ------------------------------------------------------------- the pyarrow engine
_ENGINE_SEPS = ["::", ",", "\t", ";"]


def _arrow_or_skip():
    pytest.importorskip("pyarrow", reason="pyarrow not installed (fast-io / test extra)")
    from mfjax.data import parsing
    return parsing


@pytest.mark.parametrize("sep,header", [("::", False), (",", True), ("\t", False), (";", True)])
def test_arrow_parse_of_mixed_field_lengths_equals_the_precise_pass(sep, header):
    parsing = _arrow_or_skip()
    rng = np.random.default_rng(11)
    n = 3000
    u = rng.integers(1, 10 ** rng.integers(1, 7, n))
    i = rng.integers(1, 10 ** rng.integers(1, 6, n))
    forms = ["{:g}", "{:.1f}", "{:.2f}", "{:.0f}", "{:.3e}"]
    v = [forms[k].format(x) for k, x in zip(rng.integers(0, 5, n), rng.integers(1, 11, n) / 2)]
    t = rng.integers(1, 10 ** rng.integers(1, 11, n))
    text = ("userId,movieId,rating,timestamp\n".replace(",", sep) if header else "") + "".join(
        f"{a}{sep}{b}{sep}{c}{sep}{d}\n" for a, b, c, d in zip(u, i, v, t))
    data = text.encode()
    for ts in (True, False):
        arrow = parsing.parse_triplets_arrow(data, sep, header, timestamps=ts)
        slow = parsing.parse_triplets_precise(data, sep, header, "x", timestamps=ts)
        assert arrow is not None
        for a, b in zip(arrow, slow):
            if b is None:
                assert a is None
            else:
                assert a.dtype == b.dtype
                np.testing.assert_array_equal(a, b)
    # the public entry point gives the same arrays with every engine
    ref = parsing.parse_triplets(data, sep, header=header, timestamps=True, engine="numpy")
    for engine in ("pyarrow", "auto"):
        got = parsing.parse_triplets(data, sep, header=header, timestamps=True, engine=engine)
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("sep", ["::", ","])
def test_arrow_path_never_disagrees_with_precise_pass(sep):
    """Random byte mutations: the pyarrow path either declines (None) or equals the precise pass."""
    parsing = _arrow_or_skip()
    rng = np.random.default_rng(1)
    base = _text(HALF + [(3, 4, 1.0, 5), (12, 7, 3.5, 6)], sep)
    alphabet = np.frombuffer(b"0123456789.-:,\n xe\r\"N", np.uint8)
    accepted = 0
    for _ in range(400):
        buf = np.frombuffer(base, np.uint8).copy()
        for pos in rng.integers(0, buf.size, rng.integers(1, 3)):
            buf[pos] = rng.choice(alphabet)
        data = buf.tobytes()
        arrow = parsing.parse_triplets_arrow(data, sep, False, timestamps=bool(rng.integers(2)))
        ts = arrow is not None and arrow.timestamps is not None
        try:
            slow = parsing.parse_triplets_precise(data, sep, False, "x", timestamps=ts)
        except RatingsError:
            assert arrow is None, data
            continue
        if arrow is not None:
            accepted += 1
            for a, b in zip(arrow, slow):
                if b is not None:
                    np.testing.assert_array_equal(a, b, err_msg=repr(data))
    assert accepted > 50  # the check is not vacuous


def test_arrow_engine_choice_and_errors(monkeypatch):
    parsing = _arrow_or_skip()
    data = b"1::10::5\n2::11::3.5\n"
    with pytest.raises(ValueError, match="engine must be one of"):
        parsing.parse_triplets(data, "::", engine="fastest")
    calls = []
    real = parsing.parse_triplets_arrow
    monkeypatch.setattr(parsing, "parse_triplets_arrow", lambda *a, **k: calls.append(1) or real(*a, **k))
    parsing.parse_triplets(data, "::", engine="auto")          # small data: numpy
    assert not calls
    monkeypatch.setattr(parsing, "ARROW_MIN_BYTES", 0)
    assert parsing.parse_triplets(data, "::", engine="auto").values.tolist() == [5.0, 3.5]
    assert calls == [1]
    # separators pyarrow cannot take: declined, the numpy / precise passes parse them
    assert parsing.parse_triplets_arrow(b"1 10 5\n2 11 3\n", " ", False) is None
    assert parsing.parse_triplets_arrow(b"1:;10:;5\n", ":;", False) is None
    assert parsing.parse_triplets_arrow(b"1,10,5\r2,11,3\r", ",", False) is None  # lone CR
    monkeypatch.setattr(parsing, "_arrow", lambda: None)
    with pytest.raises(ImportError, match="fast-io"):
        parsing.parse_triplets(data, "::", engine="pyarrow")
    assert parsing.parse_triplets(data, "::", engine="auto").users.tolist() == [1, 2]  # falls back to numpy


@pytest.mark.parametrize("content,match", [
    (b"1::2::3::4\n5::6::7\n", "line 2: expected 4 fields"),
    (b"1::2::3::4\nx::3::4::5\n", "line 2: user id 'x' is not an integer"),
    (b"1::2::3::4\n2::3::nan::5\n", "line 2: non-finite rating nan"),
    (b"1::2::3::4\n2:::3::4::5\n", "line 2: item id ':3' is not an integer"),
    (b"1::2::3::4\n\n2::3::4::5\n1::2::5::6\n", r"duplicate \(user, item\) pair \(1, 2\) on lines 1 and 4"),
    (b"1::2::3::4\n2::3::NA::5\n", "line 2: rating 'NA' is not a number"),
])
def test_bad_files_through_the_arrow_engine(tmp_path, monkeypatch, content, match):
    """With the pyarrow engine on (any size), bad files get the same errors with the same line numbers."""
    parsing = _arrow_or_skip()
    monkeypatch.setattr(parsing, "ARROW_MIN_BYTES", 0)
    p = tmp_path / "bad.dat"
    p.write_bytes(content)
    with pytest.raises(RatingsError, match=match):
        load_triplets(p, sep="::", header=False)


BAD_FILES = [
    (b"1::2::3::4\n5::6::7\n", "line 2: expected 4 fields"),
    (b"1::2::3::4\n1::2::3::4::5\n", "line 2: expected 4 fields"),
    (b"1::2::3::4\n2::3::4::5\nx::3::4::5\n", "line 3: user id 'x' is not an integer"),
    (b"1::2::3::4\n2::3.5::4::5\n", "line 2: item id '3.5' is not an integer"),
    (b"1::2::3::4\n2::3::four::5\n", "line 2: rating 'four' is not a number"),
    (b"1::2\n", "line 1: expected at least 3 fields"),
    (b"1::2::3::4\n2::3::nan::5\n", "line 2: non-finite rating nan"),
    (b"1::2::3::4\n2::3::inf::5\n", "line 2: non-finite rating inf"),
    (b"1::2::3::4\n-2::3::4::5\n", "line 2: negative user id -2"),
    (b"1::2::3::4\n2::-3::4::5\n", "line 2: negative item id -3"),
    (b"1::2::3::4\n2::3::4::5\n1::2::5::6\n", r"duplicate \(user, item\) pair \(1, 2\) on lines 1 and 3"),
    (b"1::2::3::4\n2:::3::4::5\n", "line 2: item id ':3' is not an integer"),
    (b"1::2::3::4\n2::3::4:5\n", "line 2: expected 4 fields"),
    (b"1::2::3::4\n2::3::4::5::\n", "line 2: expected 4 fields"),
    (b"1::2::3::4\n2::3::4.5.1::5\n", "line 2: rating '4.5.1' is not a number"),
    (b"1::2::3::4\n1_0::3::4::5\n", "line 2: '_' is not allowed"),
    (b"", "empty data"),
    (b"\n\n", "empty data"),
]


@pytest.mark.parametrize("content,match", BAD_FILES)
def test_bad_files(tmp_path, content, match):
    p = tmp_path / "bad.dat"
    p.write_bytes(content)
    with pytest.raises(RatingsError, match=match) as e:
        load_triplets(p, sep="::", header=False)
    if "line" in match:
        assert str(p) in str(e.value)


def test_malformed_is_specific_class(tmp_path):
    p = tmp_path / "bad.dat"
    p.write_bytes(b"1::2::3::4\n5::6::7\n")
    with pytest.raises(MalformedFileError):
        load_triplets(p)


def test_rating_scale_and_duplicates_option(tmp_path):
    p = tmp_path / "r.csv"
    p.write_bytes(b"1,2,3\n1,2,5\n2,1,6\n")
    with pytest.raises(RatingsError, match=r"line 3: rating 6.0 is outside the rating scale \[1, 5\]"):
        load_triplets(p, rating_scale=(1, 5), duplicates="mean")
    r = load_triplets(p, duplicates="mean")
    got = {(int(a), int(b)): float(v) for a, b, v in zip(r.rows, r.cols, r.values)}
    assert got == {(0, 1): 4.0, (1, 0): 6.0}
    assert load_triplets(p, duplicates="last").nnz == 2
    with pytest.raises(ValueError, match="duplicates must be"):
        load_triplets(p, duplicates="drop")


def test_malformed_movielens_names_member(tmp_path):
    d = tmp_path / "d"
    _write(d / "ml-1m.zip", b"1::2::3::4\n2::3::4\n", "zip", "ml-1m/ratings.dat")
    with pytest.raises(MalformedFileError, match=r"ml-1m\.zip:ml-1m/ratings\.dat, line 2"):
        load_movielens("ml-1m", d, cache_dir=tmp_path / "c")


# ------------------------------------------------------------- zip safety
@pytest.mark.parametrize("evil", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt", "C:/evil.txt",
                                  "..\\evil.txt"])
def test_zip_path_escape_rejected(tmp_path, evil):
    z = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", _text(TRIPLETS, "::"))
        zf.writestr(evil, b"pwned")
    out = tmp_path / "out"
    with pytest.raises(RatingsError, match="unsafe"):
        safe_extract(z, out)
    assert not (tmp_path / "evil.txt").exists()
    assert not out.exists() or not any(out.rglob("*.txt"))
    with pytest.raises(RatingsError, match="unsafe"):
        load_movielens("ml-1m", tmp_path, cache_dir=tmp_path / "c")


def test_safe_extract_ok(tmp_path):
    z = _write(tmp_path / "a.zip", b"x", "zip", "ml-1m/ratings.dat")
    files = safe_extract(z, tmp_path / "out")
    assert files == [(tmp_path / "out" / "ml-1m" / "ratings.dat").resolve()]
    assert files[0].read_bytes() == b"x"


# ---------------------------------------------------------------- download
def _no_partials(d: pathlib.Path):
    return [p.name for p in d.iterdir() if p.name.endswith(".part")] == []


def test_download_file_url_checksums(tmp_path):
    src = tmp_path / "src.bin"
    payload = os.urandom(3000)
    src.write_bytes(payload)
    md5 = hashlib.md5(payload).hexdigest()
    sha = hashlib.sha256(payload).hexdigest()
    dest_dir = tmp_path / "dl"
    out = download_file(src.as_uri(), dest_dir / "f.bin", md5=md5, sha256=sha, size=3000)
    assert out.read_bytes() == payload and file_sha256(out) == sha
    for kw, what in [({"md5": "0" * 32}, "MD5"), ({"sha256": "f" * 64}, "SHA-256"), ({"size": 1}, "size")]:
        with pytest.raises(ChecksumError, match=f"{what} mismatch"):
            download_file(src.as_uri(), dest_dir / "g.bin", **kw)
        assert not (dest_dir / "g.bin").exists()
        assert _no_partials(dest_dir)
    # a failed re-download leaves the previous good file untouched (atomic replace)
    with pytest.raises(ChecksumError):
        download_file(src.as_uri(), out, md5="0" * 32)
    assert out.read_bytes() == payload


def test_download_opener_injected_and_error_mid_stream(tmp_path):
    calls = []

    class Broken:
        def __init__(self):
            self.n = 0

        def read(self, k):
            self.n += 1
            if self.n > 2:
                raise OSError("connection reset")
            return b"abc"

        def close(self):
            pass

    def opener(url):
        calls.append(url)
        return Broken()

    with pytest.raises(OSError, match="connection reset"):
        download_file("https://example.invalid/x.zip", tmp_path / "x.zip", opener=opener)
    assert calls == ["https://example.invalid/x.zip"]
    assert not (tmp_path / "x.zip").exists() and _no_partials(tmp_path)


def _fake_release(tmp_path, name):
    rows, sep, header, folder = ML_LAYOUTS[name]
    spec = MOVIELENS[name]
    z = _write(tmp_path / "server" / spec.archive, _text(rows, sep, header), "zip", f"{folder}/{spec.file}")
    return z, hashlib.md5(z.read_bytes()).hexdigest(), rows


def test_load_movielens_download_file_url(tmp_path, monkeypatch):
    monkeypatch.delenv("MFJAX_DATA_DIR", raising=False)
    z, md5, rows = _fake_release(tmp_path, "ml-100k")
    cache = tmp_path / "cache"
    # official checksum against a fake archive: mismatch, nothing cached
    monkeypatch.setitem(MOVIELENS, "ml-100k", loaders.dataclasses.replace(MOVIELENS["ml-100k"], url=z.as_uri()))
    with pytest.raises(ChecksumError, match="MD5 mismatch"):
        load_movielens("ml-100k", download=True, cache_dir=cache)
    assert not (cache / "ml-100k.zip").exists() and _no_partials(cache)
    with pytest.raises(DataNotFoundError):
        load_movielens("ml-100k", cache_dir=cache)  # download=False never downloads
    monkeypatch.setitem(MOVIELENS, "ml-100k", loaders.dataclasses.replace(MOVIELENS["ml-100k"], md5=md5))
    _check(load_movielens("ml-100k", download=True, cache_dir=cache), rows)
    assert (cache / "ml-100k.zip").is_file()
    z.unlink()  # now served from the cache
    _check(load_movielens("ml-100k", cache_dir=cache), rows)


def test_download_movielens_local_http_server(tmp_path):
    z, md5, rows = _fake_release(tmp_path, "ml-latest-small")
    (z.parent / (z.name + ".md5")).write_text(f"{md5}  {z.name}\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(z.parent), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{z.name}"
        # ml-latest-small has no fixed checksum: the published .md5 next to it is used
        path = download_movielens("ml-latest-small", tmp_path / "cache", url=url, extract=True)
        assert path.read_bytes() == z.read_bytes()
        assert (tmp_path / "cache" / "ml-latest-small" / "ratings.csv").is_file()
        (z.parent / (z.name + ".md5")).write_text("0" * 32 + "\n")
        with pytest.raises(ChecksumError):
            download_movielens("ml-latest-small", tmp_path / "cache2", url=url)
        assert not (tmp_path / "cache2" / z.name).exists()
    finally:
        server.shutdown()
        server.server_close()
    _check(load_movielens("ml-latest-small", tmp_path / "cache"), rows)


def test_known_checksums_recorded():
    assert MOVIELENS["ml-1m"].md5 == "c4d9eecfca2ab87c1945afe126590906"
    assert MOVIELENS["ml-1m"].size == 5_917_549
    for spec in MOVIELENS.values():
        assert spec.url.startswith("https://files.grouplens.org/datasets/movielens/")
        assert spec.checksum_note


# ------------------------------------------------------------------ ML-1M
def test_movielens_1m_facts(ml1m_dir):
    r = load_movielens("ml-1m", ml1m_dir)
    assert r.nnz == 1_000_209
    assert r.shape == (6040, 3706)
    assert r.mean() == pytest.approx(3.5816, abs=5e-5)
    counts = np.bincount(np.asarray(r.values).astype(int), minlength=6)[1:]
    np.testing.assert_array_equal(counts, [56_174, 107_557, 261_197, 348_971, 226_310])
    assert r.row_ids.to_original(r.rows[0]) == 1 and r.col_ids.to_original(r.cols[0]) == 1193
    assert float(r.values[0]) == 5.0
    assert r.row_ids.original.tolist() == list(range(1, 6041))
    assert r.col_ids.original.max() == 3952
    assert r.values.dtype == np.float32 and r.rows.dtype == np.int32
    assert data_checksum(r) == (
        "sha256:e094bda550f1065a753275a57b0e0903466ef323cce353c6dde6977399cd994f"
    )
    gz = pathlib.Path(ml1m_dir) / "ratings.dat.gz"
    if gz.exists():
        assert file_sha256(gz) == "286bf74147e03c483e5eaef1480df636c39c538c05201ac024f3c9caddd92b58"


def test_download_failure_is_reported(tmp_path, monkeypatch):
    monkeypatch.delenv("MFJAX_DATA_DIR", raising=False)
    gone = (tmp_path / "missing" / "ml-100k.zip").as_uri()
    monkeypatch.setitem(MOVIELENS, "ml-100k", loaders.dataclasses.replace(MOVIELENS["ml-100k"], url=gone))
    with pytest.raises(DataNotFoundError, match=r"(?s)downloading file:.*failed.*not found"):
        load_movielens("ml-100k", download=True, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "ml-100k.zip").exists()


@pytest.mark.parametrize("parts,gz", [(2, False), (3, True)])
def test_load_triplets_part_streams_only_its_rows(tmp_path, parts, gz):
    """Streamed in pieces of 64 bytes (lines cut across pieces, a header): the parts have the whole file's
    shape and ids, and together are exactly load_triplets (process_row_block's cut of the rows)."""
    import gzip as _gzip

    from mfjax.data import load_triplets, load_triplets_part
    from mfjax.objective import process_row_block

    rng = np.random.default_rng(0)
    users, items = rng.integers(100, 140, 300), rng.integers(5, 30, 300)
    keys = np.unique(users * 1000 + items)
    text = "user,item,rating\n" + "".join(f"{k // 1000},{k % 1000},{1 + k % 5}\n" for k in keys)
    path = tmp_path / ("r.csv.gz" if gz else "r.csv")
    path.write_bytes(_gzip.compress(text.encode()) if gz else text.encode())
    whole = load_triplets(path)
    got = [load_triplets_part(path, k, parts, chunk_bytes=64) for k in range(parts)]
    for k, part in enumerate(got):
        ref = process_row_block(whole, k, parts)
        assert part.shape == whole.shape and 0 < part.nnz < whole.nnz
        for f in ("rows", "cols", "values"):
            np.testing.assert_array_equal(np.asarray(getattr(part, f)), np.asarray(getattr(ref, f)))
        np.testing.assert_array_equal(part.row_ids.original, whole.row_ids.original)
    assert sum(p.nnz for p in got) == whole.nnz
    with pytest.raises(ValueError, match="part < num_parts"):
        load_triplets_part(path, parts, parts)


@pytest.mark.parametrize("name,how", [("ml-1m", "zip"), ("ml-20m", "gz"), ("ml-10m", "plain")])
def test_load_movielens_part_streams_its_users_and_the_parts_are_the_release(tmp_path, monkeypatch, name, how):
    """A release (``::`` or a CSV with a header; the official zip's member, gzip or plain) streamed in pieces of
    40 bytes: each part has the release's shape and ids, holds only its users, and the parts together are
    exactly load_movielens (without timestamps)."""
    from mfjax.data import load_movielens_part

    monkeypatch.delenv("MFJAX_DATA_DIR", raising=False)
    rng = np.random.default_rng(3)
    keys = np.unique(rng.integers(1, 60, 200) * 10_000 + rng.integers(1, 500, 200))
    rows = [(int(k // 10_000), int(k % 10_000), float(1 + k % 5), 978300760 + i) for i, k in enumerate(keys)]
    _, sep, header, folder = ML_LAYOUTS[name]
    spec = MOVIELENS[name]
    data = _text(rows, sep, header)
    if how == "zip":
        _write(tmp_path / spec.archive, data, "zip", f"{folder}/{spec.file}")
    else:
        _write(tmp_path / spec.file, data, how)
    whole = load_movielens(name, tmp_path, cache_dir=tmp_path / "nocache")
    parts = [load_movielens_part(name, k, 3, tmp_path, cache_dir=tmp_path / "nocache", chunk_bytes=40)
             for k in range(3)]
    edges = []
    for p in parts:
        assert p.shape == whole.shape and p.nnz > 0
        np.testing.assert_array_equal(p.row_ids.original, whole.row_ids.original)
        np.testing.assert_array_equal(p.col_ids.original, whole.col_ids.original)
        edges.append((int(np.min(p.rows)), int(np.max(p.rows))))
    assert edges[0][1] < edges[1][0] and edges[1][1] < edges[2][0]  # contiguous blocks of users
    entries = lambda r: sorted(zip(np.asarray(r.rows).tolist(), np.asarray(r.cols).tolist(),  # noqa: E731
                                   np.asarray(r.values).tolist()))
    assert sorted(sum((entries(p) for p in parts), [])) == entries(whole)
    with pytest.raises(ValueError, match="part < num_parts"):
        load_movielens_part(name, 3, 3, tmp_path, cache_dir=tmp_path / "nocache")
