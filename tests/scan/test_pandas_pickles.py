"""pandas objects in pickles: real ones are ``safe``; the helpers that call what they are given and
the sizes constructors broadcast to are still checked (allow rules 1.5.0)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from tests.scan._pickles import CALL, G, I, S, T

from bastion.scan import scan_file

pd = pytest.importorskip("pandas")


def _objects() -> dict[str, object]:
    return {
        "frame": pd.DataFrame({"a": [1, 2, 3], "b": [1.5, 2.5, 3.5], "s": ["x", "y", None]}),
        "strings": pd.DataFrame({"s": pd.array(["x", "y", None], dtype="string")}),
        "category": pd.DataFrame({"c": pd.Categorical(["a", "b", "a"])}),
        "datetimes": pd.DataFrame({"t": pd.date_range("2024-01-01", periods=3, tz="UTC")}),
        "paris": pd.Timestamp("2024-01-01", tz="Europe/Paris"),
        "nullable": pd.DataFrame(
            {"i": pd.array([1, None], dtype="Int64"), "b": pd.array([True, None], dtype="boolean")}
        ),
        "series": pd.Series([1, 2, 3], index=["a", "b", "c"], name="x"),
        "multiindex": pd.DataFrame({"v": [1, 2]}, index=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)])),
        "periods": pd.Series(pd.period_range("2024-01", periods=3, freq="M")),
        "intervals": pd.Series(pd.interval_range(0, 3)),
        "timedelta": pd.Timedelta("1 day"),
        "sparse": pd.Series(pd.arrays.SparseArray([0, 0, 1])),
        "nat": pd.NaT,
        "offset": pd.offsets.MonthEnd(2),
        "numbers": pd.DataFrame(np.random.default_rng(0).standard_normal((4, 3))),
    }


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pandas_objects_are_safe(tmp_path: Path, protocol: int) -> None:
    for name, obj in _objects().items():
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
        res = scan_file(path)
        assert res.verdict.value == "safe", (name, [(f.rule_id, f.evidence) for f in res.findings])


def D(*pairs: tuple[str, bytes]) -> bytes:
    return b"}(" + b"".join(S(k) + v for k, v in pairs) + b"u"


RANGE = G("builtins", "range")


def _rules(tmp_path: Path, body: bytes) -> tuple[str, set[str]]:
    path = tmp_path / "model.pkl"
    path.write_bytes(b"\x80\x02" + body + b".")
    res = scan_file(path)
    return res.verdict.value, {f.rule_id for f in res.findings}


def test_new_index_calls_the_class_it_is_given(tmp_path: Path) -> None:
    # _new_Index(cls, d) runs cls.__new__(cls, **d): numpy.memmap(filename=..., mode='w+') writes a file
    d = D(("filename", S("/tmp/victim")), ("mode", S("w+")), ("shape", T(I(4))))
    verdict, rules = _rules(
        tmp_path, CALL(G("pandas.core.indexes.base", "_new_Index"), G("numpy", "memmap"), d)
    )
    assert verdict == "malicious" and "scan.pickle.reference-only-called" in rules


def test_dateutil_tzfile_is_only_a_class_argument(tmp_path: Path) -> None:
    verdict, rules = _rules(tmp_path, CALL(G("dateutil.tz._tzfile", "tzfile"), S("/etc/passwd")))
    assert verdict == "malicious" and "scan.pickle.reference-only-called" in rules


@pytest.mark.parametrize(
    "body",
    [
        # Series(0, index=RangeIndex(0, 10**12)): 10**12 values broadcast from one
        CALL(G("pandas", "Series"), I(0), CALL(G("pandas", "RangeIndex"), I(0), I(10**12))),
        # DataFrame(0, range(10**5), range(10**5)): 10**10 cells
        CALL(
            G("pandas", "DataFrame"),
            I(0),
            CALL(G("builtins", "range"), I(10**5)),
            CALL(G("builtins", "range"), I(10**5)),
        ),
        # an index rebuilt as pandas pickles a RangeIndex, sized past 1 GiB of values
        CALL(
            G("pandas", "Series"),
            I(0),
            CALL(
                G("pandas.core.indexes.base", "_new_Index"),
                G("pandas", "RangeIndex"),
                D(("start", I(0)), ("stop", I(10**12)), ("step", I(1))),
            ),
        ),
    ],
    ids=["series-range-index", "frame-ranges", "new-index"],
)
def test_sizes_pandas_broadcasts_to_are_allocation_bombs(tmp_path: Path, body: bytes) -> None:
    verdict, rules = _rules(tmp_path, body)
    assert verdict != "safe" and "scan.pickle.allocation-bomb" in rules


def test_read_pickle_is_still_denied(tmp_path: Path) -> None:
    verdict, rules = _rules(tmp_path, CALL(G("pandas", "read_pickle"), S("/tmp/other.pkl")))
    assert verdict == "malicious" and "scan.pickle.denied-global" in rules


# -- red-team round 17 ------------------------------------------------------------------------


def test_p1_a_protocol_attribute_in_an_objects_state_is_high(tmp_path: Path) -> None:
    # numpy reads __array_interface__ from the instance: a chosen address becomes an array
    iface = D(
        ("data", T(I(0x41414140), b"\x89")), ("shape", T(I(1))), ("typestr", S("|O")), ("version", I(3))
    )
    ns = G("argparse", "Namespace") + T() + b"R" + D(("__array_interface__", iface)) + b"b"
    verdict, rules = _rules(tmp_path, CALL(G("numpy", "negative"), ns))
    assert verdict == "malicious" and "scan.pickle.dunder-state" in rules


@pytest.mark.parametrize("tz", ["dateutil//etc/passwd", "dateutil/../../../etc/passwd"])
def test_p2_a_time_zone_named_by_a_file_path_is_high(tmp_path: Path, tz: str) -> None:
    verdict, rules = _rules(tmp_path, CALL(G("pandas", "DatetimeTZDtype"), S("ns"), S(tz)))
    assert verdict == "malicious" and "scan.pickle.file-path-argument" in rules
    assert (
        _rules(tmp_path, CALL(G("pandas", "DatetimeTZDtype"), S("ns"), S("dateutil/Europe/London")))[0]
        == "safe"
    )


def test_p3_time_zone_data_built_at_load_or_too_long(tmp_path: Path) -> None:
    unpickle, tzfile = G("dateutil.tz._tzfile", "_unpickle"), G("dateutil.tz._tzfile", "tzfile")
    built = CALL(unpickle, tzfile, S("x"), S("x"), T(CALL(RANGE, I(2**27))))
    assert "scan.pickle.allocation-bomb" in _rules(tmp_path, built)[1]
    long_list = b"(" + b"K\x01" * 5000 + b"t"
    assert (
        "scan.pickle.compute-bomb"
        in _rules(tmp_path, CALL(unpickle, tzfile, S("x"), S("x"), T(long_list)))[1]
    )


def test_p4_a_pandas_objects_state_is_sized(tmp_path: Path) -> None:
    state = T(b"N", b"N", b"N", D(("0.14.1", D(("axes", b"]" + CALL(RANGE, I(2**27)) + b"a")))))
    body = G("pandas.core.internals.managers", "BlockManager") + T() + b"\x81" + state + b"b"
    assert "scan.pickle.allocation-bomb" in _rules(tmp_path, body)[1]


def test_p5_literal_lists_broadcast_to_their_product(tmp_path: Path) -> None:
    labels = b"(" + b"K\x00" * 2**15 + b"l"
    verdict, rules = _rules(tmp_path, CALL(G("pandas", "DataFrame"), I(1), labels, labels))
    assert verdict != "safe" and "scan.pickle.allocation-bomb" in rules


def test_p6_numpy_functions_materialise_ranges(tmp_path: Path) -> None:
    verdict, rules = _rules(tmp_path, CALL(G("numpy", "negative"), CALL(RANGE, I(2**28))))
    assert verdict != "safe" and "scan.pickle.allocation-bomb" in rules
