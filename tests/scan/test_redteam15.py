"""Regressions of red-team round 15 (PyTorch): each archive was ``safe`` before.

Q1/Q2 a ``torch.export`` archive whose graph JSON holds an expression ``sympify`` evaluates or a
guard ``ExportedProgram.module()`` runs with ``exec``; Q3 TorchScript reaching ``from_file``/
``save`` through a module alias or ``getattr``; Q4 a code member named ``.PY`` (torch finds
members whatever their case); Q5 a mobile archive's ``bytecode.pkl`` operator table. Built here,
never loaded.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest

from bastion.scan import scan_file
from bastion.scan._torch_export import analyse_export_json, is_export_archive
from bastion.scan._torchscript import analyse_torchscript

_SYMBOL = "Symbol('s77', positive=True, integer=True)"
RELU = "torch.ops.aten.relu.default"
EXEC_GUARD = "1, 'ok' #\n)\nimport os\ndef _g(*args):\n  torch._assert(1"


def _graph(
    expr: str = _SYMBOL, guards: list[str] | None = None, target: str = "torch.ops.aten.relu.default"
) -> bytes:
    doc = {
        "graph_module": {
            "graph": {
                "nodes": [{"target": target, "inputs": [], "outputs": []}],
                "sym_int_values": {"s77": {"as_expr": {"expr_str": expr, "hint": 8}}},
            },
            "guards_code": guards or [],
        }
    }
    return json.dumps(doc).encode()


def test_what_torch_writes_passes() -> None:
    data = _graph(guards=["L['x'].size()[0] <= 64", "2 <= L['x'].size()[0]"])
    assert analyse_export_json(data, "m/models/model.json") == []
    assert analyse_export_json(_graph("Max(1, Mul(Integer(2), " + _SYMBOL + "))"), "j") == []


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('id') + 1",
        "eval(chr(49))",
        "Symbol('x').__class__",
        "(lambda: 1)()",
        "Symbol('a; import os')",
    ],
)
def test_q1_expressions_beyond_sympy_are_high(expr: str) -> None:
    issues = analyse_export_json(_graph(expr), "m/models/model.json")
    assert [i.kind for i in issues] == ["export-expression"] and issues[0].severity.name == "HIGH"


@pytest.mark.parametrize(
    "guard",
    [
        "1, 'ok' #\n)\nimport os\ndef _g(*args):\n  torch._assert(1",
        "L['x'].size()[0] < 2 or open('/etc/x')",
        "__import__('os')",
    ],
)
def test_q2_guard_code_that_is_not_a_size_expression_is_high(guard: str) -> None:
    issues = analyse_export_json(_graph(guards=[guard]), "m/models/model.json")
    assert issues and issues[0].kind == "export-guard-code" and issues[0].severity.name == "HIGH"


@pytest.mark.parametrize(
    "target", ["torch.save", "torch.hub.load", "os.system", "torch.ops.mylib.run.default"]
)
def test_node_targets_outside_pytorchs_operators(target: str) -> None:
    issues = analyse_export_json(_graph(target=target), "m/models/model.json")
    assert [i.kind for i in issues] == ["export-target"]


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_q1_an_export_archive_is_scanned_as_one(tmp_path: Path) -> None:
    members = {
        "m/models/model.json": _graph("__import__('os').system('id') + 1"),
        "m/archive_format": b"pt2",
        "m/byteorder": b"little",
        "m/data/sample_inputs/model.pt": b"",
    }
    assert is_export_archive(list(members))
    path = tmp_path / "model.pt2"
    path.write_bytes(_zip(members))
    res = scan_file(path)
    assert res.verdict.value == "malicious" and res.format == "pytorch-export"
    assert "scan.pytorch.export-expression" in {f.rule_id for f in res.findings}


@pytest.mark.parametrize(
    "code",
    [
        "def f(x):\n  t = torch\n  return t.from_file('/etc/passwd', False, 10)\n",
        "def f(x):\n  return getattr(torch, 'from_file')('/etc/passwd')\n",
        "def f(self, x):\n  m = torch\n  m.save(x, '/tmp/p.pth')\n",
    ],
)
def test_q3_side_effect_ops_through_aliases(code: str) -> None:
    assert any(i.severity.name == "HIGH" for i in analyse_torchscript(code))


def test_q3_plain_torchscript_passes() -> None:
    code = (
        "def forward(self, x: Tensor) -> Tensor:\n  _0 = torch.relu(torch.linear(x, self.w))\n  return _0\n"
    )
    assert analyse_torchscript(code) == []


def test_q4_code_members_whatever_their_case(tmp_path: Path) -> None:
    members = {
        "archive/data.pkl": pickle.dumps({"w": [1.0]}, protocol=2),
        "archive/code/__torch__.PY": b"def f(x):\n  torch.save(x, '/tmp/p.pth')\n",
        "archive/code/__torch__.py": b"def f(x):\n  return x\n",
    }
    path = tmp_path / "model.pt"
    path.write_bytes(_zip(members))
    rules = {f.rule_id for f in scan_file(path).findings}
    assert {"scan.pytorch.torchscript-side-effect-op", "scan.pytorch.duplicate-member"} <= rules


def test_q5_a_mobile_archives_operator_table_is_checked(tmp_path: Path) -> None:
    table = ("__torch__.Evil.forward", (("instructions", ()), ("operators", (("aten::from_file", "", 4),))))
    members = {
        "m/data.pkl": pickle.dumps({"w": [1.0]}, protocol=2),
        "m/code/__torch__.py": b"def forward(self, x):\n  return x\n",
        "m/bytecode.pkl": pickle.dumps((8, table), protocol=2),
    }
    path = tmp_path / "model.ptl"
    path.write_bytes(_zip(members))
    res = scan_file(path)
    assert res.verdict.value == "malicious"
    assert any(f.evidence.get("construct") == "aten::from_file" for f in res.findings)


# -- red-team round 19 ------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["target", "as_operator"])
def test_r1_file_operators_in_an_export_graph(key: str) -> None:
    doc = {"nodes": [{key: "torch.ops.aten.from_file.default"}]}
    issues = analyse_export_json(json.dumps(doc).encode(), "m/models/model.json")
    assert issues and issues[0].severity.name == "HIGH"


@pytest.mark.parametrize(
    "members",
    [
        {"m/models/sub/m.json": _graph("__import__('os').system('id')"), "m/archive_format": b"pt2"},
        {"m/models/evil": _graph("__import__('os').system('id')"), "m/byteorder": b"little"},
        {"serialized_exported_program.json": _graph("__import__('os').system('id')"), "version": b"1"},
    ],
    ids=["nested", "no-suffix", "older-layout"],
)
def test_r2_r3_every_graph_torch_reads(tmp_path: Path, members: dict[str, bytes]) -> None:
    path = tmp_path / "model.pt2"
    path.write_bytes(_zip(members))
    res = scan_file(path)
    assert res.verdict.value == "malicious" and "scan.pytorch.export-expression" in {
        f.rule_id for f in res.findings
    }


def test_r4_native_code_in_an_export_archive(tmp_path: Path) -> None:
    members = {
        "m/models/model.json": _graph(),
        "m/archive_format": b"pt2",
        "m/data/aotinductor/model/model.so": b"\x7fELF" + b"\0" * 60,
    }
    path = tmp_path / "model.pt2"
    path.write_bytes(_zip(members))
    assert "scan.pytorch.export-native-code" in {f.rule_id for f in scan_file(path).findings}
