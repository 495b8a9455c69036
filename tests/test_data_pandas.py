"""pandas in / out: from_pandas (any hashable ids, validation) and to_pandas, round trips."""

import subprocess
import sys

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from mfjax.data import Ratings, RatingsError, from_pandas, leave_last_out, synthetic, to_pandas  # noqa: E402


def frame():
    return pd.DataFrame({
        "uid": ["carol", "ann", "bob", "ann", "carol"],
        "movie": ["m3", "m1", "m1", "m2", "m1"],
        "stars": [4.0, 5.0, 3.0, 2.5, 1.0],
        "when": [30, 10, 20, 40, 5],
    })


def test_string_ids_are_mapped_and_round_trip():
    df = frame()
    r = from_pandas(df, user="uid", item="movie", rating="stars", timestamp="when")
    assert r.shape == (3, 3)
    assert r.row_ids.original.tolist() == ["ann", "bob", "carol"]  # sorted ids
    assert r.col_ids.original.tolist() == ["m1", "m2", "m3"]
    assert r.rows.tolist() == [2, 0, 1, 0, 2] and r.cols.tolist() == [2, 0, 0, 1, 0]
    assert r.values.tolist() == [4.0, 5.0, 3.0, 2.5, 1.0] and r.timestamps.tolist() == [30, 10, 20, 40, 5]
    back = to_pandas(r, user="uid", item="movie", rating="stars", timestamp="when")
    assert list(back.columns) == ["uid", "movie", "stars", "when"]
    assert back["uid"].tolist() == df["uid"].tolist() and back["movie"].tolist() == df["movie"].tolist()
    np.testing.assert_array_equal(back["stars"].to_numpy(), df["stars"].to_numpy())
    np.testing.assert_array_equal(back["when"].to_numpy(), df["when"].to_numpy())
    again = from_pandas(back, user="uid", item="movie", rating="stars", timestamp="when")
    for f in ("rows", "cols", "values", "timestamps"):
        np.testing.assert_array_equal(getattr(again, f), getattr(r, f))
    # the id maps work as the loaders' do: a raw id -> its index
    assert r.row_ids.to_index(["bob"]).tolist() == [1]
    # and the time splits see the timestamps: ann's latest (m2 at t=40), carol's (m3 at t=30)
    _, test = leave_last_out(r)
    assert sorted(zip(r.row_ids.to_original(test.rows), r.col_ids.to_original(test.cols))) == [
        ("ann", "m2"), ("carol", "m3")]


def test_integer_tuple_and_mixed_ids():
    df = pd.DataFrame({"user": [(1, "a"), (0, "b"), (1, "a")], "item": [10, 7, 7], "rating": [1, 2, 3]})
    r = from_pandas(df)
    assert r.row_ids.original.tolist() == [(0, "b"), (1, "a")] and r.col_ids.original.tolist() == [7, 10]
    assert to_pandas(r)["user"].tolist() == df["user"].tolist()
    mixed = pd.DataFrame({"user": ["x", 3, "x"], "item": [1, 1, 2], "rating": [1.0, 2.0, 3.0]})
    m = from_pandas(mixed)  # mixed types: pandas' order (numbers first), raw ids kept
    assert m.row_ids.original.tolist() == [3, "x"] and m.rows.tolist() == [1, 0, 1]
    assert to_pandas(m)["user"].tolist() == ["x", 3, "x"]


def test_id_maps_map_a_test_frame_into_training_indices():
    train = from_pandas(frame(), "uid", "movie", "stars")
    test_df = pd.DataFrame({"uid": ["bob", "zed", "carol"], "movie": ["m2", "m1", "m2"], "stars": [1, 2, 3]})
    with pytest.raises(RatingsError, match="1 of 3 ratings have ids not in the given id maps.*row 1"):
        from_pandas(test_df, "uid", "movie", "stars", id_maps=(train.row_ids, train.col_ids))
    with pytest.warns(UserWarning, match="dropped"):
        t = from_pandas(test_df, "uid", "movie", "stars", id_maps=(train.row_ids, train.col_ids), unknown="drop")
    assert t.shape == train.shape and t.rows.tolist() == [1, 2] and t.cols.tolist() == [1, 1]


def test_datetime_timestamps_are_seconds():
    df = pd.DataFrame({"user": [1, 2], "item": [1, 1], "rating": [3, 4],
                       "t": pd.to_datetime(["2000-01-01 00:00:00", "2000-01-02 00:00:01"])})
    assert from_pandas(df, timestamp="t").timestamps.tolist() == [946684800, 946771201]
    tz = df.assign(t=df["t"].dt.tz_localize("Europe/Brussels"))
    assert from_pandas(tz, timestamp="t").timestamps.tolist() == [946684800 - 3600, 946771201 - 3600]


@pytest.mark.parametrize("change,kwargs,match", [
    (lambda d: d.drop(columns="stars"), {}, r"no column rating='stars'; its columns are \['uid', 'movie', 'when'\]"),
    (lambda d: d.assign(stars=[4.0, np.nan, 3.0, 2.5, 1.0]), {}, "non-finite rating nan at row 1 .user 'ann', item 'm1'"),
    (lambda d: d.assign(stars=["a", "b", "c", "d", "e"]), {}, "must hold real numbers"),
    (lambda d: d.assign(uid=["carol", None, "bob", "ann", "carol"]), {}, "missing id .* at row 1"),
    (lambda d: d.assign(movie=["m3", "m1", "m1", "m2", "m3"]), {}, r"duplicate \(user, item\) pair \('carol', 'm3'\) at row 0 and row 4"),
    (lambda d: d.iloc[:0], {}, "empty"),
    (lambda d: d.assign(stars=[4.0, 5.0, 3.0, 2.5, 9.0]), {"rating_scale": (1, 5)}, "rating 9.0 at row 4 is outside"),
    (lambda d: d.assign(when=[1.0, np.nan, 2, 3, 4]), {"timestamp": "when"}, "missing timestamp at row 1"),
    (lambda d: d.assign(when=list("abcde")), {"timestamp": "when"}, "numbers or datetimes"),
])
def test_bad_frames_are_named(change, kwargs, match):
    with pytest.raises(RatingsError, match=match):
        from_pandas(change(frame()), user="uid", item="movie", rating="stars", **kwargs)


def test_duplicates_can_be_aggregated_and_non_frames_refused():
    df = frame().assign(movie=["m3", "m1", "m1", "m2", "m3"])
    r = from_pandas(df, "uid", "movie", "stars", "when", duplicates="mean")
    k = int(np.flatnonzero((r.rows == 2) & (r.cols == 2))[0])
    assert r.values[k] == pytest.approx(2.5) and r.timestamps[k] == 30 and r.nnz == 4
    with pytest.raises(TypeError, match="DataFrame"):
        from_pandas({"user": [1], "item": [1], "rating": [1.0]})


def test_to_pandas_without_id_maps_or_timestamps():
    r = synthetic(5, 4, rank=1, density=0.5, seed=0)
    df = to_pandas(r)
    assert list(df.columns) == ["user", "item", "rating"] and len(df) == r.nnz
    assert df["user"].tolist() == np.asarray(r.rows).tolist()
    with pytest.raises(ValueError, match="must differ"):
        to_pandas(Ratings.create([0], [0], [1.0]), user="a", item="a")


def test_import_mfjax_does_not_import_pandas():
    code = "import sys, mfjax, mfjax.data, mfjax.eval; assert 'pandas' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
