"""ONNX: standard graphs are safe; custom domains are suspicious; escaping external data is malicious."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bastion.core.scanning import Verdict
from bastion.core.severity import Severity
from bastion.scan import scan_file
from bastion.scan.onnx_scanner import location_escapes

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


def _model(nodes: list, initializers: list | None = None, opsets: list | None = None):  # type: ignore[no-untyped-def]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=initializers or [],
    )
    return helper.make_model(graph, opset_imports=opsets or [helper.make_opsetid("", 17)])


def _save(model, path: Path) -> Path:  # type: ignore[no-untyped-def]
    path.write_bytes(model.SerializeToString())
    return path


def test_standard_onnx_is_safe(tmp_path: Path) -> None:
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 4], [1.0, 2.0, 3.0, 4.0])
    model = _model([helper.make_node("Add", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], [w])
    onnx.checker.check_model(model)
    fr = scan_file(_save(model, tmp_path / "m.onnx"))
    assert fr.verdict is Verdict.SAFE
    assert fr.format == "onnx"
    assert fr.findings == []


def test_onnx_found_by_magic_without_extension(tmp_path: Path) -> None:
    model = _model([helper.make_node("Relu", ["x"], ["y"], domain="evil.custom")])
    fr = scan_file(_save(model, tmp_path / "model_file"))
    assert fr.format == "onnx"
    assert fr.verdict is Verdict.SUSPICIOUS


def test_custom_domain_is_suspicious(tmp_path: Path) -> None:
    model = _model(
        [
            helper.make_node("Relu", ["x"], ["h"]),
            helper.make_node("DoEvil", ["h"], ["y"], domain="evil.custom"),
        ],
        opsets=[helper.make_opsetid("", 17), helper.make_opsetid("evil.custom", 1)],
    )
    fr = scan_file(_save(model, tmp_path / "c.onnx"))
    assert fr.verdict is Verdict.SUSPICIOUS
    [f] = fr.findings
    assert f.rule_id == "scan.onnx.custom-domain"
    assert f.severity is Severity.MEDIUM
    assert "evil.custom" in f.title
    assert f.evidence["op_types"] == ["DoEvil"]


def test_com_microsoft_counts_as_non_standard(tmp_path: Path) -> None:
    model = _model([helper.make_node("FusedGemm", ["x"], ["y"], domain="com.microsoft")])
    fr = scan_file(_save(model, tmp_path / "ms.onnx"))
    assert fr.verdict is Verdict.SUSPICIOUS
    assert fr.findings[0].evidence["domain"] == "com.microsoft"


def test_custom_domain_inside_a_subgraph(tmp_path: Path) -> None:
    body = helper.make_graph(
        [helper.make_node("Hidden", ["x"], ["z"], domain="evil.sub")],
        "then",
        [],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])],
    )
    cond = helper.make_tensor("c", TensorProto.BOOL, [], [True])
    node = helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body)
    fr = scan_file(_save(_model([node], [cond]), tmp_path / "sub.onnx"))
    assert fr.verdict is Verdict.SUSPICIOUS
    assert fr.findings[0].evidence["domain"] == "evil.sub"


def _external(name: str, location: str) -> TensorProto:
    t = TensorProto()
    t.name = name
    t.data_type = TensorProto.FLOAT
    t.dims.extend([1, 4])
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key = "location"
    entry.value = location
    return t


@pytest.mark.parametrize(
    "location", ["../../etc/passwd", "/etc/passwd", "weights/../../x.bin", "C:\\Windows\\x"]
)
def test_external_data_escape_is_malicious(tmp_path: Path, location: str) -> None:
    model = _model([helper.make_node("Add", ["x", "w"], ["y"])], [_external("w", location)])
    fr = scan_file(_save(model, tmp_path / "ext.onnx"))
    assert fr.verdict is Verdict.MALICIOUS
    [f] = fr.findings
    assert f.rule_id == "scan.onnx.external-data-escape"
    assert f.severity is Severity.HIGH
    assert f.evidence["location"] == location


def test_external_data_inside_the_folder_is_safe(tmp_path: Path) -> None:
    model = _model([helper.make_node("Add", ["x", "w"], ["y"])], [_external("w", "weights/w.bin")])
    assert scan_file(_save(model, tmp_path / "ok.onnx")).verdict is Verdict.SAFE


def test_location_escapes_unit() -> None:
    assert location_escapes("a/b.bin") is None
    assert location_escapes("./a.bin") is None
    assert location_escapes("../a.bin")
    assert location_escapes("/abs")
    assert location_escapes("\\\\server\\share")
    assert location_escapes("")


def test_corrupt_onnx_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\xff\xff\xff\xff not protobuf")
    assert scan_file(path).verdict is Verdict.ERROR


def test_missing_onnx_extra_gives_error_with_install_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model([helper.make_node("Relu", ["x"], ["y"])])
    path = _save(model, tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    fr = scan_file(path)
    assert fr.verdict is Verdict.ERROR
    assert fr.reason and "pip install 'bastion-ml[onnx]'" in fr.reason


def test_pickle_renamed_onnx_is_still_scanned_as_pickle(tmp_path: Path) -> None:
    import os
    import pickle

    from tests.scan._factories import Reduce

    path = tmp_path / "model.onnx"
    path.write_bytes(pickle.dumps(Reduce(os.system, "true")))
    fr = scan_file(path)
    assert fr.format == "pickle"
    assert fr.verdict is Verdict.MALICIOUS
