"""skops archives: the schema's types and callables judged by the allow/deny rules, never loaded."""

from __future__ import annotations

import io
import itertools
import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bastion.core.scanning import Verdict
from bastion.scan import scan_file

from ._factories import Reduce

_IDS = itertools.count(1000)


def _node(loader: str, module: str, cls: str, **extra: Any) -> dict[str, Any]:
    # a fresh __id__ per node, as skops writes (it resolves a repeated id to the first node)
    return {"__loader__": loader, "__module__": module, "__class__": cls, "__id__": next(_IDS), **extra}


def _skops(path: Path, schema: Any, members: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("schema.json", schema if isinstance(schema, str) else json.dumps(schema))
        for name, data in (members or {}).items():
            z.writestr(name, data)
    return path


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=a.dtype == object)
    return buf.getvalue()


def _estimator(content: dict[str, Any]) -> dict[str, Any]:
    return _node(
        "ObjectNode",
        "sklearn.linear_model._logistic",
        "LogisticRegression",
        content=_node("DictNode", "builtins", "dict", content=content),
        _skops_version="0.16.0",
    )


def test_a_real_skops_file_is_safe_and_its_arrays_are_scanned(tmp_path: Path) -> None:
    skops = pytest.importorskip("skops.io")
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(x, y)
    f = tmp_path / "model.skops"
    skops.dump(model, f)
    before = set(sys.modules)
    fr = scan_file(f)
    assert fr.format == "skops" and fr.verdict is Verdict.SAFE, fr.findings
    assert "sklearn.pipeline.Pipeline" in fr.globals and "numpy.ndarray" in fr.globals
    assert not {m for m in set(sys.modules) - before if m.startswith("skops")}  # skops never imported


@pytest.mark.parametrize(
    ("node", "rule", "name"),
    [
        (_node("ObjectNode", "os", "system", content={}), "scan.skops.denied-type", "os.system"),
        (
            _node("FunctionNode", "subprocess", "Popen", content={}),
            "scan.skops.denied-type",
            "subprocess.Popen",
        ),
        (_node("TypeNode", "builtins", "eval", content={}), "scan.skops.denied-type", "builtins.eval"),
        (
            _node("OperatorFuncNode", "operator", "attrgetter", attrs=[]),
            "scan.skops.denied-type",
            "operator.attrgetter",
        ),
        (_node("ObjectNode", "mylib.layers", "Block"), "scan.skops.unknown-type", "mylib.layers.Block"),
    ],
)
def test_a_schema_naming_a_dangerous_or_unknown_type_is_flagged(
    tmp_path: Path, node: dict[str, Any], rule: str, name: str
) -> None:
    f = _skops(tmp_path / "evil.skops", _estimator({"payload": node}))
    fr = scan_file(f)
    hits = [x for x in fr.findings if x.rule_id == rule]
    assert hits and hits[0].evidence["type"] == name, [(x.rule_id, x.evidence) for x in fr.findings]
    assert hits[0].location.member == "schema.json" and hits[0].evidence["json_path"].startswith("/content")
    assert fr.verdict is (Verdict.MALICIOUS if rule.endswith("denied-type") else Verdict.SUSPICIOUS)


def test_a_method_reference_is_judged_with_its_method_name(tmp_path: Path) -> None:
    obj = _node("ObjectNode", "sklearn.linear_model._logistic", "LogisticRegression", content={})
    logistic = ("sklearn.linear_model._logistic", "LogisticRegression")
    meth = _node("MethodNode", *logistic, content={"obj": obj, "func": "fit"})
    fr = scan_file(_skops(tmp_path / "m.skops", _estimator({"m": meth})))
    assert "sklearn.linear_model._logistic.LogisticRegression.fit" in fr.globals


def test_a_pickled_object_array_member_is_scanned_as_a_pickle(tmp_path: Path) -> None:
    nd = _node("NdArrayNode", "numpy", "ndarray", type="numpy", file="a.npy")
    evil = np.array([print], dtype=object)  # an object array is a pickle of its items
    fr = scan_file(_skops(tmp_path / "a.skops", _estimator({"w": nd}), {"a.npy": _npy(evil)}))
    assert any(x.location.member and "a.npy" in x.location.member for x in fr.findings), fr.findings
    assert fr.verdict in (Verdict.SUSPICIOUS, Verdict.MALICIOUS)


@pytest.mark.parametrize(
    "schema",
    ["{not json", "[" * 100_000 + "]" * 100_000, json.dumps({"__loader__": "ObjectNode"})],
    ids=["malformed", "deep", "no-type"],
)
def test_a_broken_schema_is_an_error_or_names_nothing(tmp_path: Path, schema: str) -> None:
    fr = scan_file(_skops(tmp_path / "b.skops", schema))
    assert fr.format == "skops"
    if schema.startswith("{not") or schema.startswith("[["):
        assert fr.verdict is Verdict.ERROR and "schema.json" in (fr.reason or "")
    else:
        assert fr.verdict is Verdict.SAFE and fr.globals == []


def test_a_zip_with_a_schema_json_but_nothing_skops_like_is_not_claimed(tmp_path: Path) -> None:
    f = tmp_path / "bundle.zip"
    with zipfile.ZipFile(f, "w") as z:
        z.writestr("schema.json", json.dumps({"type": "object"}))
        z.writestr("readme.txt", "hello")
    assert scan_file(f).format != "skops"


def test_a_reference_only_type_the_loader_calls_is_flagged(tmp_path: Path) -> None:
    # red-team round 19: ConstructorFromReduceNode called numpy.memmap(path, 'w+') (allowed only
    # as a class reference in pickles) and truncated a chosen file
    node = _node("ConstructorFromReduceNode", "numpy", "memmap", content={"args": []})
    res = scan_file(_skops(tmp_path / "model.skops", _estimator({"w": node})))
    assert res.verdict == Verdict.MALICIOUS
    assert "scan.skops.reference-only-called" in {f.rule_id for f in res.findings}


def _json(v: Any) -> dict[str, Any]:
    return _node("JsonNode", "builtins", type(v).__name__, content=json.dumps(v), is_json=True)


def _tuple(*items: Any) -> dict[str, Any]:
    return _node("TupleNode", "builtins", "tuple", content=list(items))


def _dict(d: dict[str, Any]) -> dict[str, Any]:
    keys = _node("ListNode", "builtins", "list", content=[_node("TypeNode", "builtins", "str") for _ in d])
    return _node("DictNode", "builtins", "dict", content=d, key_types=keys)


def test_a_protocol_attribute_in_an_objects_state_is_flagged(tmp_path: Path) -> None:
    # red-team round 20, S1: an ObjectNode's state set __array_interface__, and numpy.negative(ns)
    # then read the address the file chose (SIGSEGV, or bytes of the process)
    iface = _dict({"data": _tuple(_json(0x4141414140), _json(True)), "shape": _tuple(_json(16))})
    ns = _node(
        "ObjectNode", "argparse", "Namespace", content=_dict({"lr": _json(0.1), "__array_interface__": iface})
    )
    call = _node("ConstructorFromReduceNode", "numpy", "negative", content=_tuple(ns))
    res = scan_file(_skops(tmp_path / "model.skops", _estimator({"w": call})))
    hits = [f for f in res.findings if f.rule_id == "scan.skops.dunder-state"]
    assert res.verdict == Verdict.MALICIOUS and hits, res.findings
    assert hits[0].location.member == "schema.json"
    assert hits[0].evidence["json_path"] == "/content/content/w/content/content/0"  # the ObjectNode


@pytest.mark.parametrize(
    ("call", "rule"),
    [
        # red-team round 20, S2: the pickle emulator's checks on call arguments apply to skops calls
        (("pandas", "DatetimeTZDtype", "ns", "dateutil//etc/passwd"), "scan.skops.file-path-argument"),
        # red-team round 29, X1b: so does the zone of a dtype alias
        (
            ("pandas", "DatetimeTZDtype", "datetime64[ns, dateutil//etc/passwd]"),
            "scan.skops.file-path-argument",
        ),
        (("builtins", "bytearray", 3 << 30), "scan.skops.allocation-bomb"),
        (("builtins", "bytes", "\u4e00" * 100, "punycode"), "scan.skops.codec-call"),
    ],
)
def test_call_arguments_get_the_pickle_value_checks(tmp_path: Path, call: tuple[Any, ...], rule: str) -> None:
    module, name, *args = call
    node = _node("ConstructorFromReduceNode", module, name, content=_tuple(*map(_json, args)))
    res = scan_file(_skops(tmp_path / "model.skops", _estimator({"w": node})))
    assert rule in {f.rule_id for f in res.findings}, res.findings
    assert res.verdict in (Verdict.SUSPICIOUS, Verdict.MALICIOUS)


def test_a_key_type_is_called_with_the_key(tmp_path: Path) -> None:
    # DictNode keys are rebuilt as k_type(key): a reference-only type there is called
    keys = _node("ListNode", "builtins", "list", content=[_node("TypeNode", "numpy", "memmap")])
    d = _node("DictNode", "builtins", "dict", content={"/etc/passwd": _json(1)}, key_types=keys)
    res = scan_file(_skops(tmp_path / "model.skops", _estimator({"w": d})))
    assert "scan.skops.reference-only-called" in {f.rule_id for f in res.findings}, res.findings


def test_a_schema_nested_past_the_limit_is_an_error(tmp_path: Path) -> None:
    node: Any = _json(1)
    for _ in range(450):
        node = _tuple(node)
    res = scan_file(_skops(tmp_path / "model.skops", _estimator({"w": node})))
    assert res.verdict == Verdict.ERROR and "deeper than" in (res.reason or ""), res


def _with_id(node: dict[str, Any], ident: int) -> dict[str, Any]:
    return {**node, "__id__": ident}


def _root(content: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**_dict(content), "protocol": 2, "_skops_version": "0.16.0", **extra}


def test_a_protocol_0_function_node_is_judged_by_the_names_it_imports(tmp_path: Path) -> None:
    # red-team round 23, V1: with "protocol": 0 skops's old FunctionNode imports
    # content.module_path/content.function (os.system), and a key type calls it
    fn = _node("FunctionNode", "builtins", "str", content={"module_path": "os", "function": "system"})
    keys = _node("ListNode", "builtins", "list", content=[fn])
    schema = {**_dict({"touch /tmp/x": _json(1)}), "key_types": keys, "protocol": 0}
    res = scan_file(_skops(tmp_path / "model.skops", schema))
    assert res.verdict == Verdict.MALICIOUS and "scan.skops.denied-type" in {f.rule_id for f in res.findings}


@pytest.mark.parametrize("ref", ["cached", "bare"])
def test_a_reference_to_an_earlier_node_is_that_node(tmp_path: Path, ref: str) -> None:
    # red-team round 23, V2: skops answers any state whose __id__ it has seen with the earlier
    # node; a reference hid a call's arguments and a key type's class
    args = _with_id(_tuple(_json("ns"), _json("dateutil//etc/passwd")), 7)
    alias = _node("CachedNode", "builtins", "tuple", __id__=7) if ref == "cached" else {"__id__": 7}
    call = _node("ConstructorFromReduceNode", "pandas", "DatetimeTZDtype", content=alias)
    res = scan_file(_skops(tmp_path / "a.skops", _root({"a": args, "out": call})))
    assert "scan.skops.file-path-argument" in {f.rule_id for f in res.findings}, res.findings
    tz = _with_id(_node("TypeNode", "dateutil.tz.tz", "tzfile"), 9)
    keys = _node("ListNode", "builtins", "list", content=[_with_id(_node("TypeNode", "builtins", "str"), 9)])
    d = _node("DictNode", "builtins", "dict", content={"/etc/passwd": _json(1)}, key_types=keys)
    res = scan_file(_skops(tmp_path / "b.skops", _root({"a": tz, "b": d})))
    assert "scan.skops.reference-only-called" in {f.rule_id for f in res.findings}, res.findings


def test_a_node_referring_to_its_own_ancestor_is_an_error(tmp_path: Path) -> None:
    loop = _with_id(_tuple(_json(1)), 5)
    loop["content"].append({"__id__": 5})
    res = scan_file(_skops(tmp_path / "m.skops", _root({"x": loop})))
    assert res.verdict == Verdict.ERROR and "encloses" in (res.reason or ""), res


@pytest.mark.parametrize(
    "node",
    [
        # red-team round 23, V3: node kinds whose call the compiler passed over
        lambda: _node("NdArrayNode", "builtins", "bytearray", type="numpy", file="a.npy"),
        lambda: _node(
            "MaskedArrayNode",
            "numpy.ma",
            "MaskedArray",
            content={
                "data": _node("ConstructorFromReduceNode", "builtins", "range", content=_tuple(_json(2**28))),
                "mask": _json(False),
            },
        ),
        lambda: _node(
            "NdArrayNode",
            "numpy",
            "ndarray",
            type="json",
            content=[_node("ConstructorFromReduceNode", "builtins", "range", content=_tuple(_json(2**28)))],
            shape=_tuple(_json(1), _json(1)),
        ),
        lambda: _node(
            "RandomGeneratorNode",
            "numpy.random",
            "Generator",
            content={
                "bit_generator": _dict({"bit_generator": _json("PCG64")}),
                "seed_seq": _dict({"entropy": _json(1), "pool_size": _json(2**28)}),
            },
        ),
    ],
)
def test_array_and_random_nodes_are_sized(tmp_path: Path, node: Any) -> None:
    members = {"a.npy": _npy(np.array(3 << 30))}
    res = scan_file(_skops(tmp_path / "m.skops", _root({"x": node()}), members))
    assert "scan.skops.allocation-bomb" in {f.rule_id for f in res.findings}, res.findings


def test_a_rich_real_skops_file_is_safe_but_for_its_unknown_types(tmp_path: Path) -> None:
    # shared objects, random states and generators, masked, object and sparse arrays, dtypes,
    # slices, sets, bytes (raw members: never loaded, not scanned as model files)
    skops = pytest.importorskip("skops.io")
    import scipy.sparse as sp
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    x, y = load_iris(return_X_y=True)
    shared = np.arange(10.0)
    obj = {
        "rf": RandomForestClassifier(n_estimators=2, random_state=np.random.RandomState(0)).fit(x, y),
        "a": shared,
        "b": shared,
        "rng": np.random.default_rng(1),
        "masked": np.ma.MaskedArray([1, 2, 3], mask=[0, 1, 0]),
        "dtype": np.dtype("float32"),
        "sparse": sp.csr_matrix(np.eye(3)),
        "scalar": np.float64(3.5),
        "objarr": np.array([1, "a", None], dtype=object),
        "slice": slice(1, 5, 2),
        "set": {1, 2},
        "bytes": b"abc",
        "ba": bytearray(b"xyz"),
    }
    f = tmp_path / "rich.skops"
    skops.dump(obj, f)
    res = scan_file(f)
    assert res.verdict == Verdict.SAFE, [(x.rule_id, x.title) for x in res.findings]


def test_a_schema_member_with_a_bad_crc_is_an_error_not_a_crash(tmp_path: Path) -> None:
    # found by the atheris campaign: schema.json is read before the walk, outside its handler
    f = _skops(tmp_path / "model.skops", _root({"w": _json(1)}))
    data = bytearray(f.read_bytes())
    i = data.index(b'"protocol"')
    data[i + 1] ^= 0x01  # stored member: its bytes change, its CRC does not
    f.write_bytes(bytes(data))
    res = scan_file(f)
    assert res.verdict == Verdict.ERROR and "CRC" in (res.reason or ""), res


def test_skops_builds_a_defaultdicts_main_before_its_factory(tmp_path: Path) -> None:
    # red-team round 25, W1: children taken in JSON order made a decoy with the same __id__ the
    # node skops memoises
    bomb = _with_id(
        _node("ConstructorFromReduceNode", "builtins", "bytearray", content=_tuple(_json(3 << 30))), 7
    )
    decoy = _with_id(_dict({}), 7)
    dd = _node(
        "DefaultDictNode", "collections", "defaultdict", content={"default_factory": decoy, "main": bomb}
    )
    rules = {f.rule_id for f in scan_file(_skops(tmp_path / "m.skops", _root({"m": dd}))).findings}
    assert "scan.skops.allocation-bomb" in rules, rules


@pytest.mark.parametrize("how", ["bare", "cached", "call"])
def test_key_types_are_resolved_and_checked_whatever_they_are(tmp_path: Path, how: str) -> None:
    # red-team round 25, W2: key types given by reference, or as a call's result, were not checked
    tz_list = _with_id(
        _node("ListNode", "builtins", "list", content=[_node("TypeNode", "dateutil.tz.tz", "tzfile")]), 9
    )
    if how == "call":
        kt = _node("ConstructorFromReduceNode", "builtins", "bytearray", content=_tuple(_json(3 << 30)))
    else:
        kt = {"__id__": 9} if how == "bare" else _node("CachedNode", "builtins", "list", __id__=9)
    d = _node("DictNode", "builtins", "dict", content={"/etc/passwd": _json(1)}, key_types=kt)
    rules = {
        f.rule_id for f in scan_file(_skops(tmp_path / "m.skops", _root({"a": tz_list, "b": d}))).findings
    }
    want = "scan.skops.allocation-bomb" if how == "call" else "scan.skops.reference-only-called"
    assert want in rules, rules


def test_a_member_skops_reads_as_bytes_is_still_checked_for_other_loaders(tmp_path: Path) -> None:
    # red-team round 25, W3: a file that is both a skops archive and an .npz; np.load unpickles
    # the object-array member that the schema names only as raw bytes
    payload = io.BytesIO()
    np.save(payload, np.array([Reduce(os.system, "true")], dtype=object), allow_pickle=True)
    raw = _node("BytesNode", "builtins", "bytes", file="payload.npy")
    f = _skops(tmp_path / "model.npz", _root({"w": raw}), {"payload.npy": payload.getvalue()})
    res = scan_file(f)
    assert res.verdict == Verdict.MALICIOUS, res.findings
    # plain raw bytes stay quiet: no parse error of b"abc" as a pickle
    g = _skops(
        tmp_path / "ok.skops",
        _root({"w": _node("BytesNode", "builtins", "bytes", file="b.bin")}),
        {"b.bin": b"abc"},
    )
    assert scan_file(g).verdict == Verdict.SAFE
