"""safetensors, GGUF, Keras, HDF5, SavedModel, 7z and TorchScript code: one test per rule."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from pathlib import Path

import pytest

from bastion.core.errors import MissingExtraError
from bastion.core.scanning import Verdict
from bastion.scan import scan_file
from bastion.scan._torchscript import analyse_torchscript
from bastion.scan.gguf_scanner import template_findings

from ._factories import os_system_payload
from ._formats import (
    BENIGN_TEMPLATE,
    CVE_2024_34359_TEMPLATE,
    cve_2024_3660_config,
    cve_2025_1550_config,
    gguf_bytes,
    good_gguf,
    good_safetensors,
    keras_config,
    keras_file,
    keras_layer,
    safetensors_bytes,
    saved_model_pb,
    torchscript_with_code,
)


def _rules(fr: object) -> set[str]:
    return {f.rule_id for f in fr.findings}  # type: ignore[attr-defined]


# ---------------------------------------------------------------- safetensors
def test_safetensors_valid_is_safe(tmp_path: Path) -> None:
    p = tmp_path / "model.safetensors"
    p.write_bytes(good_safetensors())
    fr = scan_file(p)
    assert (fr.format, fr.verdict, fr.findings) == ("safetensors", Verdict.SAFE, [])


def test_safetensors_sniffed_without_extension(tmp_path: Path) -> None:
    p = tmp_path / "weights.data"
    p.write_bytes(good_safetensors())
    assert scan_file(p).format == "safetensors"


@pytest.mark.parametrize(
    ("tensors", "size", "rule"),
    [
        (
            {
                "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
            },
            24,
            "scan.safetensors.overlapping-tensors",
        ),
        (
            {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 4096]}},
            16,
            "scan.safetensors.offset-out-of-bounds",
        ),
        (
            {"a": {"dtype": "F32", "shape": [3, 3], "data_offsets": [0, 16]}},
            16,
            "scan.safetensors.shape-mismatch",
        ),
    ],
)
def test_safetensors_header_tricks_are_malicious(tmp_path: Path, tensors: dict, size: int, rule: str) -> None:
    p = tmp_path / "m.safetensors"
    p.write_bytes(safetensors_bytes(tensors, bytes(size)))
    fr = scan_file(p)
    assert fr.verdict == Verdict.MALICIOUS
    assert rule in _rules(fr)


def test_safetensors_polyglot_gap_and_unknown_dtype(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    hidden = os_system_payload(tmp_path / "never")
    p.write_bytes(
        safetensors_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(8) + hidden)
    )
    fr = scan_file(p)
    assert "scan.safetensors.unreferenced-bytes" in _rules(fr)
    q = tmp_path / "q.safetensors"
    q.write_bytes(safetensors_bytes({"a": {"dtype": "X9", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)))
    assert scan_file(q).verdict == Verdict.SUSPICIOUS


@pytest.mark.parametrize(
    "raw",
    [
        struct.pack("<Q", 200_000_000) + b"{}",  # header above the 100 MB limit
        struct.pack("<Q", 50) + b"{}",  # header past the end of the file
        struct.pack("<Q", 4) + b"{,,}",  # not JSON
        b"\x01",
    ],
)
def test_safetensors_malformed_is_error(tmp_path: Path, raw: bytes) -> None:
    p = tmp_path / "bad.safetensors"
    p.write_bytes(raw)
    fr = scan_file(p)
    assert fr.verdict == Verdict.ERROR and fr.reason


# ---------------------------------------------------------------- GGUF
def test_gguf_benign_template_is_safe(tmp_path: Path) -> None:
    p = tmp_path / "m.gguf"
    p.write_bytes(good_gguf())
    fr = scan_file(p)
    assert (fr.format, fr.verdict) == ("gguf", Verdict.SAFE), fr.findings


def test_gguf_cve_2024_34359_template_is_malicious(tmp_path: Path) -> None:
    p = tmp_path / "m.gguf"
    p.write_bytes(gguf_bytes({"tokenizer.chat_template": CVE_2024_34359_TEMPLATE}))
    fr = scan_file(p)
    assert fr.verdict == Verdict.MALICIOUS
    f = next(f for f in fr.findings if f.rule_id == "scan.gguf.chat-template-injection")
    assert f.evidence["key"] == "tokenizer.chat_template"


@pytest.mark.parametrize(
    "snippet",
    [
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{% import 'x' as y %}",
        "{{ self._TemplateReference__context }}",
        "{{ lipsum.__globals__['os'] }}",
    ],
)
def test_gguf_template_escapes_found(snippet: str) -> None:
    assert template_findings(snippet)
    assert not template_findings(BENIGN_TEMPLATE)


def test_gguf_tensor_out_of_bounds_and_truncation(tmp_path: Path) -> None:
    p = tmp_path / "oob.gguf"
    p.write_bytes(gguf_bytes({"a": 1}, [("w", [1000, 1000], 0, 0)], data=bytes(32)))
    assert "scan.gguf.header-bounds" in _rules(scan_file(p))
    q = tmp_path / "trunc.gguf"
    q.write_bytes(good_gguf()[:40])
    assert scan_file(q).verdict == Verdict.ERROR
    r = tmp_path / "huge.gguf"
    r.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1 << 40, 1))
    assert scan_file(r).verdict == Verdict.MALICIOUS


# ---------------------------------------------------------------- Keras
def test_keras_plain_is_safe(tmp_path: Path) -> None:
    fr = scan_file(keras_file(tmp_path / "m.keras", keras_config(keras_layer("Dense", units=2))))
    assert (fr.format, fr.verdict) == ("keras", Verdict.SAFE), fr.findings


def test_keras_cve_2024_3660_lambda_is_malicious(tmp_path: Path) -> None:
    fr = scan_file(keras_file(tmp_path / "m.keras", cve_2024_3660_config()))
    assert fr.verdict == Verdict.MALICIOUS and "scan.keras.lambda-layer" in _rules(fr)


def test_keras_cve_2025_1550_module_is_malicious(tmp_path: Path) -> None:
    fr = scan_file(keras_file(tmp_path / "m.keras", cve_2025_1550_config()))
    assert fr.verdict == Verdict.MALICIOUS
    assert "scan.keras.denied-module" in _rules(fr)


def test_keras_custom_object_is_suspicious(tmp_path: Path) -> None:
    layer = {"module": "mypkg.layers", "class_name": "Fancy", "config": {}, "registered_name": "mypkg>Fancy"}
    fr = scan_file(keras_file(tmp_path / "m.keras", keras_config(layer)))
    assert fr.verdict == Verdict.SUSPICIOUS and "scan.keras.custom-object" in _rules(fr)


def test_keras_weights_and_h5_config(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    w = tmp_path / "w.h5"
    with h5py.File(w, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=[1.0, 2.0])
    fr = scan_file(
        keras_file(tmp_path / "m.keras", keras_config(keras_layer("Dense")), weights=w.read_bytes())
    )
    assert fr.verdict == Verdict.SAFE, fr.reason
    legacy = {
        "class_name": "Sequential",
        "config": {
            "layers": [
                {
                    "class_name": "Lambda",
                    "config": {"function": ["4wEA", None, None], "function_type": "lambda"},
                }
            ]
        },
    }
    h = tmp_path / "legacy.h5"
    with h5py.File(h, "w") as f:
        f.attrs["model_config"] = json.dumps(legacy)
    fr = scan_file(h)
    assert (fr.format, fr.verdict) == ("keras-h5", Verdict.MALICIOUS)
    assert "scan.hdf5.lambda-layer" in _rules(fr)


def test_h5_without_extra_is_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bastion.scan.hdf5_scanner as mod

    monkeypatch.setattr(mod, "h5py_available", lambda: False)
    p = tmp_path / "m.h5"
    p.write_bytes(mod.HDF5_MAGIC + bytes(100))
    fr = scan_file(p)
    assert fr.verdict == Verdict.ERROR and "hdf5" in (fr.reason or "")


# ---------------------------------------------------------------- SavedModel
def test_savedmodel_plain_graph_is_safe(tmp_path: Path) -> None:
    d = tmp_path / "sm"
    d.mkdir()
    (d / "saved_model.pb").write_bytes(saved_model_pb(["Placeholder", "MatMul", "Identity"]))
    fr = scan_file(d / "saved_model.pb")
    assert (fr.format, fr.verdict) == ("savedmodel", Verdict.SAFE)


def test_savedmodel_file_io_and_pyfunc_ops(tmp_path: Path) -> None:
    p = tmp_path / "saved_model.pb"
    p.write_bytes(saved_model_pb(["Const", "ReadFile"], function_ops=["EagerPyFunc", "WriteFile"]))
    fr = scan_file(p)
    assert fr.verdict == Verdict.MALICIOUS
    assert {
        "scan.savedmodel.file-read-op",
        "scan.savedmodel.file-write-op",
        "scan.savedmodel.py-func-op",
    } <= _rules(fr)
    sev = {f.rule_id: f.severity.value for f in fr.findings}
    assert sev["scan.savedmodel.py-func-op"] == "critical"


def test_savedmodel_corrupt_is_error(tmp_path: Path) -> None:
    p = tmp_path / "saved_model.pb"
    p.write_bytes(saved_model_pb(["MatMul"])[:-3] + b"\xff\xff")
    assert scan_file(p).verdict == Verdict.ERROR


# ---------------------------------------------------------------- 7z
def test_7z_member_is_scanned(tmp_path: Path) -> None:
    py7zr = pytest.importorskip("py7zr")
    p = tmp_path / "bundle.7z"
    with py7zr.SevenZipFile(p, "w") as z:
        z.writestr(os_system_payload(tmp_path / "never"), "model.pkl")
        z.writestr(b"hello", "readme.txt")
    fr = scan_file(p)
    assert fr.format == "7z" and fr.verdict == Verdict.MALICIOUS
    assert any(f.location.member == "model.pkl" for f in fr.findings)


def test_7z_without_extra_is_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bastion.scan.sevenzip_scanner as mod

    def missing(module: str, extra: str) -> object:
        raise MissingExtraError(module, extra)

    monkeypatch.setattr(mod, "require", missing)
    p = tmp_path / "x.7z"
    p.write_bytes(mod.SEVENZIP_MAGIC + bytes(30))
    fr = scan_file(p)
    assert fr.verdict == Verdict.ERROR and "7z" in (fr.reason or "")


# ---------------------------------------------------------------- several pickles in one file
def test_second_pickle_in_one_file_is_scanned(tmp_path: Path) -> None:
    p = tmp_path / "two.pkl"
    p.write_bytes(pickle.dumps({"a": 1}) + os_system_payload(tmp_path / "never"))
    fr = scan_file(p)
    assert fr.verdict == Verdict.MALICIOUS
    assert any(f.location.offset and f.location.offset > 10 for f in fr.findings)


# ---------------------------------------------------------------- TorchScript code
@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    p = tmp_path_factory.mktemp("ts") / "traced.pt"
    torch.jit.trace(net, torch.zeros(1, 4)).save(str(p))
    return p


def test_plain_torchscript_is_safe(traced: Path) -> None:
    fr = scan_file(traced)
    assert (fr.format, fr.verdict) == ("torchscript", Verdict.SAFE), fr.findings


@pytest.mark.parametrize(
    ("code", "rule", "verdict"),
    [
        (
            "def forward(self, x):\n    return os.system('id')\n",
            "scan.pytorch.torchscript-python-module",
            Verdict.MALICIOUS,
        ),
        (
            "def forward(self, x):\n    return __import__('os')\n",
            "scan.pytorch.torchscript-python-builtin",
            Verdict.MALICIOUS,
        ),
        (
            "def forward(self, x):\n    return torch.ops.evil_lib.run(x)\n",
            "scan.pytorch.torchscript-custom-op",
            Verdict.SUSPICIOUS,
        ),
        (
            "def forward(self, x):\n    return torch.from_file('/etc/passwd')\n",
            "scan.pytorch.torchscript-side-effect-op",
            Verdict.MALICIOUS,
        ),
        ("def forward(self x):\n", "scan.pytorch.torchscript-code", Verdict.SUSPICIOUS),
    ],
)
def test_torchscript_code_rules(tmp_path: Path, traced: Path, code: str, rule: str, verdict: Verdict) -> None:
    fr = scan_file(torchscript_with_code(tmp_path / "ts.pt", traced, code))
    assert rule in _rules(fr)
    assert fr.verdict == verdict


def test_analyse_torchscript_accepts_aten_ops() -> None:
    assert analyse_torchscript("def f(x):\n    return torch.ops.aten.relu(ops.prim.NumToTensor(x))\n") == []


def test_keras_zip_without_config_is_plain_zip(tmp_path: Path) -> None:
    p = tmp_path / "a.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("model.pkl", pickle.dumps([1, 2]))
    assert scan_file(p).format == "zip"
    assert io.BytesIO  # keep import used
