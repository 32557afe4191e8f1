"""skops archives: the schema's types and callables judged by the allow/deny rules, never loaded."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bastion.core.scanning import Verdict
from bastion.scan import scan_file


def _node(loader: str, module: str, cls: str, **extra: Any) -> dict[str, Any]:
    return {"__loader__": loader, "__module__": module, "__class__": cls, "__id__": id(extra), **extra}


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
