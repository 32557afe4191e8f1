"""Red-team trial of the non-pickle formats: one regression test per bypass or crash found.

Every payload is built by code, written under ``tmp_path`` and never loaded; the canary file
the pickles would create must never appear.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core.scanning import Verdict
from bastion.scan import scan_file
from bastion.scan.gguf_scanner import template_findings
from bastion.scan.savedmodel_scanner import text_graph_ops

from ._factories import global_call, os_system_payload
from ._formats import (
    BENIGN_TEMPLATE,
    gguf_bytes,
    good_safetensors,
    keras_config,
    keras_file,
    keras_layer,
    pb_field,
    safetensors_bytes,
    saved_model_pb,
)
from .test_scan_formats import _rules


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pwned"
    yield path
    assert not path.exists()  # nothing was ever loaded


# ---------------------------------------------------------------- Keras: nesting depth
def test_keras_lambda_below_deep_sequential_nesting_is_found(tmp_path: Path) -> None:
    """A Lambda wrapped in 80 nested Sequentials (past the old 200-level walk cap) is malicious."""
    fn = {"module": "builtins", "class_name": "__lambda__", "config": {"code": "4wEAAAAA"}}
    node = keras_layer("Lambda", function=fn)
    for _ in range(80):
        node = keras_config(node)
    fr = scan_file(keras_file(tmp_path / "deep.keras", node))
    assert fr.verdict is Verdict.MALICIOUS
    assert "scan.keras.lambda-layer" in _rules(fr)


def test_keras_config_nested_past_json_recursion_is_error_not_crash(tmp_path: Path) -> None:
    path = tmp_path / "m.keras"
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", "{}")
        zf.writestr("config.json", "[" * 100_000)
    fr = scan_file(path)
    assert fr.verdict is Verdict.ERROR
    assert "nests JSON too deeply" in (fr.reason or "")
    assert "internal scanner error" not in (fr.reason or "")


def test_keras_plain_dense_stays_safe(tmp_path: Path) -> None:
    fr = scan_file(keras_file(tmp_path / "ok.keras", keras_config(keras_layer("Dense", units=2))))
    assert fr.verdict is Verdict.SAFE


# ---------------------------------------------------------------- GGUF: obfuscated templates
@pytest.mark.parametrize(
    "template",
    [
        r"{{ ''['\x5f\x5fclass\x5f\x5f']['\x5f\x5fmro\x5f\x5f'][1]['\x5f\x5fsubclasses\x5f\x5f']() }}",
        r'{{ ""["\u005f\u005fclass\u005f\u005f"] }}',
        r"{{ ''['\137\137globals\137\137'] }}",
        "{% set a = '_' ~ '_cla' ~ 'ss_' ~ '_' %}{{ ''[a] }}",
        "{{ ''['%c%cclass%c%c'|format(95, 95, 95, 95)] }}",
        "{{ ''[('__cla' + 'ss__')] }}",
    ],
    ids=["hex-escape", "unicode-escape", "octal-escape", "concat", "char-format", "paren-concat"],
)
def test_gguf_obfuscated_dunder_template_is_malicious(tmp_path: Path, template: str) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_bytes({"tokenizer.chat_template": template}))
    fr = scan_file(path)
    assert fr.verdict is Verdict.MALICIOUS
    assert "scan.gguf.chat-template-injection" in _rules(fr)


def test_gguf_underscore_built_at_run_time_is_suspicious() -> None:
    hits = template_findings("{% set u = '_' %}{{ ''[u * 2 ~ 'class' ~ u * 2] }}")
    # the glued underscores (medium), and the subscript key built at run time (high)
    assert [k for k, _, _ in hits] == ["computed-attribute", "underscore-build"]


_BUILT_KEYS = {
    "format with %s": (
        "{% set u = 'XX'|replace('X','_') %}{{ ''['%sclass%s'|format(u,u)]['%smro%s'|format(u,u)] }}"
    ),
    "replace on a literal": "{{ ''['XXclassXX'|replace('X','_')] }}",
    "join of pieces": "{{ ''[['_','_','class','_','_']|join] }}",
    "variable set from a format": "{% set k = '%sclass%s'|format('__','__') %}{{ ''[k] }}",
    "attr filter with a built name": "{{ ''|attr('%sclass%s'|format('__','__')) }}",
    "string method": "{{ ''['{0}class{0}'.format('__')] }}",
    "percent formatting": "{{ ''['%sclass%s' % ('__','__')] }}",
}


@pytest.mark.parametrize("template", list(_BUILT_KEYS.values()), ids=list(_BUILT_KEYS))
def test_gguf_attribute_keys_built_at_run_time_are_high(template: str) -> None:
    """Found by review: ``''['%sclass%s'|format(u, u)]`` reached ``object.__subclasses__()`` with no
    finding at all (the key is built by a filter, never written): Jinja2's parser now sees it."""
    assert ("computed-attribute", "high") in {(k, s.value) for k, s, _ in template_findings(template)}


def test_gguf_numeric_and_fixed_keys_are_not_computed_attributes() -> None:
    ok = (
        "{% for m in messages %}{{ messages[loop.index0 - 1]['role'] }}{{ m['content'] }}"
        "{{ m[key] }}{{ messages[-1].content }}{% endfor %}"
    )
    assert "computed-attribute" not in {k for k, _, _ in template_findings(ok)}


def test_gguf_benign_templates_raise_nothing() -> None:
    llama3 = (
        "{{- bos_token }}{%- if messages[0]['role'] == 'system' %}{%- set sys = messages[0]['content']"
        "|trim %}{%- endif %}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] "
        "+ '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
        "{{ strftime_now('%d %b %Y') }}{{ tool_call.function.name | tojson }}"
    )
    assert template_findings(BENIGN_TEMPLATE) == []
    assert template_findings(llama3) == []


# ---------------------------------------------------------------- SavedModel
def _saved(nodes: list[bytes], library: bytes = b"") -> bytes:
    graph = b"".join(pb_field(1, n) for n in nodes) + (pb_field(2, library) if library else b"")
    return pb_field(1, 1) + pb_field(2, pb_field(2, graph))


def _node(name: str, op: str, attrs: bytes = b"") -> bytes:
    return pb_field(1, name) + pb_field(2, op) + attrs


def _func_attr(key: str, fn: str, *, listed: bool = False) -> bytes:
    name_attr_list = pb_field(1, fn)
    value = pb_field(1, pb_field(9, name_attr_list)) if listed else pb_field(10, name_attr_list)
    return pb_field(5, pb_field(1, key) + pb_field(2, value))


@pytest.mark.parametrize(
    ("listed", "op", "rule"),
    [
        (False, "ReadFile", "scan.savedmodel.file-read-op"),
        (True, "WriteFile", "scan.savedmodel.file-write-op"),
    ],
)
def test_savedmodel_call_attribute_naming_primitive_op_is_found(
    tmp_path: Path, listed: bool, op: str, rule: str
) -> None:
    """``StatefulPartitionedCall(f=ReadFile)`` runs the primitive op with no node of that op."""
    path = tmp_path / "saved_model.pb"
    path.write_bytes(_saved([_node("c", "StatefulPartitionedCall", _func_attr("f", op, listed=listed))]))
    fr = scan_file(path)
    assert fr.verdict is Verdict.MALICIOUS
    assert rule in _rules(fr)


def test_savedmodel_text_format_is_scanned(tmp_path: Path) -> None:
    """TensorFlow loads ``saved_model.pbtxt`` when there is no ``saved_model.pb``."""
    path = tmp_path / "saved_model.pbtxt"
    path.write_text(
        "saved_model_schema_version: 1\n"
        "meta_graphs { graph_def {\n"
        '  node { name: "r" op: "Read" "\\x46ile" }  # adjacent literals, escaped F\n'
        '  node { name: "c" op: "PartitionedCall" attr { key: "f" value { func { name: "PyFunc" } } } }\n'
        "} }\n"
    )
    fr = scan_file(path)
    assert fr.verdict is Verdict.MALICIOUS
    assert {"scan.savedmodel.file-read-op", "scan.savedmodel.py-func-op"} <= _rules(fr)


def test_savedmodel_text_format_benign_and_broken(tmp_path: Path) -> None:
    ops, count = text_graph_ops('node { name: "x" op: "Placeholder" } node { op: "Identity" }')
    assert set(ops) == {"Placeholder", "Identity"} and count == 2
    ok = tmp_path / "saved_model.pbtxt"
    ok.write_text('meta_graphs { graph_def { node { name: "x" op: "Identity" } } }')
    assert scan_file(ok).verdict is Verdict.SAFE
    bad = tmp_path / "b" / "saved_model.pbtxt"
    bad.parent.mkdir()
    bad.write_text('meta_graphs { graph_def { node { op: "ReadFile } } }')
    assert scan_file(bad).verdict is Verdict.ERROR


@pytest.mark.parametrize("op", ["WholeFileReaderV2", "SqlDataset", "CSVDatasetV2", "SaveDatasetV2"])
def test_savedmodel_alternative_file_io_ops_are_found(tmp_path: Path, op: str) -> None:
    path = tmp_path / "saved_model.pb"
    path.write_bytes(_saved([_node("n", op)]))
    assert scan_file(path).verdict is Verdict.MALICIOUS


# ---------------------------------------------------------------- safetensors
def test_safetensors_appended_or_gap_pickle_is_malicious(tmp_path: Path, canary: Path) -> None:
    evil = os_system_payload(canary)
    appended = tmp_path / "appended.safetensors"
    appended.write_bytes(good_safetensors() + evil)
    gap = tmp_path / "gap.safetensors"
    gap.write_bytes(
        safetensors_bytes(
            {"w": {"dtype": "U8", "shape": [1], "data_offsets": [len(evil), len(evil) + 1]}}, evil + b"\0"
        )
    )
    for path in (appended, gap):
        fr = scan_file(path)
        assert fr.verdict is Verdict.MALICIOUS, path
        assert "scan.pickle.denied-global" in _rules(fr)


def test_safetensors_zero_padding_and_plain_file_stay_safe(tmp_path: Path) -> None:
    path = tmp_path / "ok.safetensors"
    path.write_bytes(good_safetensors())
    assert scan_file(path).verdict is Verdict.SAFE
    padded = tmp_path / "pad.safetensors"
    padded.write_bytes(good_safetensors() + b"\0" * 64)
    assert scan_file(padded).verdict is Verdict.SAFE


def test_safetensors_deeply_nested_header_is_error_not_crash(tmp_path: Path) -> None:
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", 100_000) + b"[" * 100_000)
    fr = scan_file(path)
    assert fr.verdict is Verdict.ERROR
    assert "nests too deeply" in (fr.reason or "")


# ---------------------------------------------------------------- numpy
def test_npy_with_pickle_after_the_array_is_malicious(tmp_path: Path, canary: Path) -> None:
    import numpy as np

    path = tmp_path / "a.npy"
    np.save(path, np.arange(4))
    with path.open("ab") as fh:
        fh.write(os_system_payload(canary))
    fr = scan_file(path)
    assert fr.verdict is Verdict.MALICIOUS
    assert "scan.pickle.denied-global" in _rules(fr)


# ---------------------------------------------------------------- ONNX
def _onnx_with_external(location: str) -> bytes:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    t = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0])
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", location
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        initializer=[t],
    )
    model: bytes = helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", 17)]
    ).SerializeToString()
    return model


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_onnx_external_data_symlink_out_of_folder_is_malicious(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "m.onnx").write_bytes(_onnx_with_external("weights.bin"))
    (folder / "weights.bin").symlink_to(outside)
    fr = scan_file(folder / "m.onnx")
    assert fr.verdict is Verdict.MALICIOUS
    assert "scan.onnx.external-data-escape" in _rules(fr)


def test_onnx_external_data_inside_folder_stays_safe(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(_onnx_with_external("weights.bin"))
    (tmp_path / "weights.bin").write_bytes(b"\0" * 4)
    sub = tmp_path / "blobs"
    sub.mkdir()
    (sub / "w2").write_bytes(b"\0" * 4)
    (tmp_path / "linked.onnx").write_bytes(_onnx_with_external("blobs/w2"))
    assert scan_file(tmp_path / "m.onnx").verdict is Verdict.SAFE
    assert scan_file(tmp_path / "linked.onnx").verdict is Verdict.SAFE


def test_onnx_hf_cache_layout_links_stay_safe(tmp_path: Path) -> None:
    """A Hugging Face snapshot links the model and its data into the same ``blobs`` folder."""
    blobs = tmp_path / "blobs"
    snap = tmp_path / "snapshots" / "abc"
    blobs.mkdir()
    snap.mkdir(parents=True)
    (blobs / "h1").write_bytes(_onnx_with_external("model.onnx_data"))
    (blobs / "h2").write_bytes(b"\0" * 4)
    (snap / "model.onnx").symlink_to(blobs / "h1")
    (snap / "model.onnx_data").symlink_to(blobs / "h2")
    assert scan_file(snap / "model.onnx").verdict is Verdict.SAFE


# -- chat templates built to make the pattern search itself slow or huge ------------------------
_SLOW_TEMPLATES = {
    "many %c, no format": "%c" * 100_000,
    "format( then blanks, no closing parenthesis": "'a'|format(" + " " * 100_000,
    "% ( then blanks": "'a' % (" + " " * 100_000 + "x",
    "long concatenation chain": "'a'~" * 50_000 + "'b'",
    "deep parentheses": "(" * 50_000 + "'a'" + ")" * 50_000,
    "many escapes": "'" + "\\x5f" * 50_000 + "'",
}


@pytest.mark.parametrize("text", list(_SLOW_TEMPLATES.values()), ids=list(_SLOW_TEMPLATES))
def test_template_search_is_linear_on_pathological_templates(text: str) -> None:
    """A quadratic pattern took 2.4 s on 16 KB of ``%c`` (minutes on 100 KB): each case is ~0.1 s."""
    import signal

    def too_slow(*_a: object) -> None:
        raise TimeoutError("template search did not finish in 20 s")

    old = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(20)  # a hang guard, not a speed target: the cases take ~0.1 s each
    try:
        template_findings(text)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_only_percent_c_formatting_is_rendered() -> None:
    """``'%0999999999d'|format(1)`` would build a gigabyte string if rendered; only ``%c`` is.

    The scanner never renders it (its own memory stays small); a server rendering the template
    would, so it is reported as a ``template-compute`` (red-team round 25).
    """
    assert [k for k, _, _ in template_findings("{{ '%0999999999d'|format(1) }}")] == ["template-compute"]
    hits = template_findings("{{ ''|attr('%c%cclass%c%c'|format(95, 95, 95, 95)) }}")
    assert ("dunder-attribute", "high") in {(k, s.value) for k, s, _ in hits}
    assert "char-format" in {k for k, _, _ in hits}


def test_malformed_npy_header_reason_is_the_same_every_time(tmp_path: Path) -> None:
    """``literal_eval``'s message quoted a memory address (``<ast.Call object at 0x…>``)."""
    header = b"{'descr': print(1), 'fortran_order': False, 'shape': (1,), }"
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    path = tmp_path / "bad.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 8)
    first, second = scan_file(path), scan_file(path)
    assert first.verdict is Verdict.ERROR
    assert first.reason == second.reason
    assert first.reason is not None and "0x" not in first.reason and "not a Python literal" in first.reason


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="_ao s.x1'\t(", max_size=16))
def test_os_access_pattern_matches_as_the_quadratic_one_did(text: str) -> None:
    """The linear ``os-access`` pattern finds the same match (span and text) as the one it replaced."""
    import re

    from bastion.scan.gguf_scanner import _rx

    old = re.compile(r"(?<![A-Za-z0-9])_*os\s*\.\s*\w|\bsubprocess\b|\bpopen\b|\bsystem\s*\(|\bposix\b")
    new = next(p for kind, p, _ in _rx().patterns if kind == "os-access")
    a, b = old.search(text), new.search(text)
    assert (a.span() if a else None) == (b.span() if b else None)


# ---------------------------------------------------------------- trial 33: a tar of a zip checkpoint
def _torch_zip(evil: bool = False) -> bytes:
    """A PyTorch-style zip checkpoint (``archive/data.pkl``), harmless or with ``os.system``."""
    buf = io.BytesIO()
    payload = b"cos\nsystem\n(S'true'\ntR." if evil else pickle.dumps({"w": [0.5] * 8}, protocol=2)
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", "3\n")
    return buf.getvalue()


def _tarred(members: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["w", "w:gz"])
@pytest.mark.parametrize("layout", ["only", "last", "first"])
def test_trial33_a_tar_of_a_zip_checkpoint_is_not_a_polyglot(tmp_path: Path, mode: str, layout: str) -> None:
    """``model.tar.gz`` holding ``model.pt``: zipfile finds the member's end record at the tail
    (the member is the zip), which is no hidden archive: safe, no ``appended-zip``."""
    members = {"model.pt": _torch_zip()}
    if layout == "last":
        members = {"README.txt": b"weights\n", **members}
    elif layout == "first":
        members = {**members, "notes.json": b"{}"}
    path = tmp_path / ("model.tar.gz" if mode.endswith("gz") else "model.tar")
    path.write_bytes(_tarred(members, mode))
    res = scan_file(path)
    assert res.verdict.value == "safe", [f.rule_id for f in res.findings]
    assert res.findings == []


def test_trial33_a_malicious_checkpoint_in_a_tar_is_still_malicious(tmp_path: Path) -> None:
    path = tmp_path / "model.tar"
    path.write_bytes(_tarred({"model.pt": _torch_zip(evil=True)}))
    res = scan_file(path)
    assert res.verdict.value == "malicious"
    assert "scan.pickle.denied-global" in {f.rule_id for f in res.findings}
    assert "scan.archive.appended-zip" not in {f.rule_id for f in res.findings}


def test_trial33_a_zip_appended_after_a_tar_is_still_a_polyglot(tmp_path: Path) -> None:
    """A zip after the tar's end (no member holds it) is what the finding is for."""
    path = tmp_path / "model.tar"
    path.write_bytes(_tarred({"notes.txt": b"hello\n"}) + _torch_zip(evil=True))
    res = scan_file(path)
    rules = {f.rule_id for f in res.findings}
    assert res.verdict.value == "malicious"
    assert {"scan.archive.appended-zip", "scan.pickle.denied-global"} <= rules


def test_trial33_in_one_tar_member_is_exact_about_the_member_bounds(tmp_path: Path) -> None:
    """Inside one regular member's data, bounds included; a byte past it, or no tar: no."""
    from bastion.scan.archive_scanner import in_one_tar_member
    from bastion.scan.base import Artifact, ScanContext, ScanLimits
    from bastion.scan.engine import _scanners, load_rule_files

    def art(data: bytes) -> Artifact:
        ctx = ScanContext(load_rule_files((), (), ()), ScanLimits(), _scanners())
        stream = io.BytesIO(data)
        return Artifact(path="t", member=None, name="t", stream=stream, size=len(data), depth=0, ctx=ctx)

    data = _tarred({"a.bin": b"x" * 100, "b.bin": b"y" * 700})
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = {m.name: m for m in tf}
    a, b = members["a.bin"], members["b.bin"]
    assert in_one_tar_member(art(data), a.offset_data, a.offset_data + 100)
    assert in_one_tar_member(art(data), b.offset_data + 10, b.offset_data + 700)
    assert not in_one_tar_member(art(data), b.offset_data, b.offset_data + 701)
    assert not in_one_tar_member(art(data), a.offset_data, b.offset_data + 1)  # two members
    assert not in_one_tar_member(art(data), 0, 10)  # the header, not data
    assert not in_one_tar_member(art(b"not a tar at all" * 40), 0, 10)


# ---------------------------------------------------------------- trial 33: pickles named for other formats
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize(
    "name", ["model.safetensors", "saved_model.pb", "fingerprint.pb", "graph.pb", "saved_model.pbtxt"]
)
def test_trial33_a_pickle_named_for_a_name_read_format_is_judged_as_the_pickle(
    tmp_path: Path, name: str, protocol: int
) -> None:
    """The name picks the safetensors or SavedModel scanner, the bytes are a pickle: judged as
    the pickle (malicious), not an ``error`` of the named format."""
    path = tmp_path / name
    path.write_bytes(os_system_payload(tmp_path / "never", protocol=protocol))
    res = scan_file(path)
    assert res.verdict is Verdict.MALICIOUS, (res.format, res.reason)
    assert res.format == "pickle"
    assert "scan.pickle.denied-global" in {f.rule_id for f in res.findings}


def test_trial33_a_damaged_safetensors_file_is_still_its_own_error(tmp_path: Path) -> None:
    """Bytes that are no other format keep the safetensors scanner's own reason."""
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    res = scan_file(path)
    assert res.verdict is Verdict.ERROR and res.format == "safetensors"
    assert "exceeds" in (res.reason or "")


# ---------------------------------------------------------------- trial 33: expression evaluators
@pytest.mark.parametrize(
    ("module", "name", "rule"),
    [
        ("sympy", "sympify", "deny.expression-evaluators"),
        ("sympy.core.sympify", "sympify", "deny.expression-evaluators"),
        ("sympy.parsing.sympy_parser", "parse_expr", "deny.expression-evaluators"),
        ("sympy", "lambdify", "deny.expression-evaluators"),
        ("numexpr", "evaluate", "deny.expression-evaluators"),  # CVE-2023-39631
        ("numexpr.necompiler", "evaluate", "deny.expression-evaluators"),
        ("pandas", "eval", "deny.pandas-eval"),
        ("pandas.core.computation.eval", "eval", "deny.expression-evaluators"),
    ],
)
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_trial33_libraries_that_eval_a_string_are_denied(
    tmp_path: Path, module: str, name: str, rule: str, protocol: int
) -> None:
    """``sympify("__import__('os').system('id')")`` runs it: critical, not an unknown (medium)
    global that ``--fail-on high`` lets through."""
    path = tmp_path / "m.pkl"
    path.write_bytes(global_call(module, name, protocol=protocol))
    res = scan_file(path)
    assert res.verdict is Verdict.MALICIOUS
    denied = [f for f in res.findings if f.rule_id == "scan.pickle.denied-global"]
    assert denied and denied[0].severity.value == "critical"
    assert denied[0].evidence["rule"] == rule


# ---------------------------------------------------------------- trial 33: garbage under a format's name
@pytest.mark.parametrize(
    ("suffix", "fmt"),
    [
        (".h5", "HDF5"),
        (".gguf", "GGUF"),
        (".zip", "zip"),
        (".tar", "tar"),
        (".7z", "7z"),
        (".pb", "TensorFlow"),
    ],
)
def test_trial33_garbage_named_for_a_format_is_not_called_a_broken_pickle(
    tmp_path: Path, suffix: str, fmt: str
) -> None:
    """Random bytes named ``.h5`` (``.7z`` …): an error that names the format, not a pickle."""
    path = tmp_path / f"r{suffix}"
    path.write_bytes(b"\xb6\xd5\x13garbage" * 30)
    res = scan_file(path)
    assert res.verdict is Verdict.ERROR
    assert res.format is None
    assert (res.reason or "").startswith(f"named as {fmt}"), res.reason


@pytest.mark.parametrize("name", ["r.pkl", "r.joblib", "r.pt"])
def test_trial33_garbage_named_as_a_pickle_is_still_a_malformed_pickle(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\xb6\xd5\x13garbage" * 30)
    res = scan_file(path)
    assert res.verdict is Verdict.ERROR and res.format == "pickle"
    assert "malformed pickle" in (res.reason or "")


def test_trial33_a_pickle_named_for_a_format_keeps_what_it_reaches(tmp_path: Path) -> None:
    """A protocol-0 pickle named ``.h5`` is judged as one, even cut short after its global."""
    whole = tmp_path / "m.h5"
    whole.write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    assert scan_file(whole).verdict is Verdict.MALICIOUS
    cut = tmp_path / "cut.h5"
    cut.write_bytes(b"cos\nsystem\n\xb6")
    res = scan_file(cut)
    assert "scan.pickle.denied-global" in {f.rule_id for f in res.findings}
    assert res.verdict is Verdict.MALICIOUS


# ---------------------------------------------------------------- trial 34: protobuf + pickle polyglots
#: A complete, harmless pickle (``PROTO 2, NONE, STOP`` around a BINBYTES-like run) that is also
#: legal protobuf (two unknown fields): put before a model, both readings work.
_PICKLE_AND_PROTOBUF = b"\x80\x02NJ\x07\x00\x00\x0000N."


def test_trial34_the_prefix_is_both_a_pickle_and_protobuf() -> None:
    import pickle as _pickle

    assert _pickle.loads(_PICKLE_AND_PROTOBUF + saved_model_pb(["Const"])) is None


@pytest.mark.parametrize("name", ["saved_model.pb", "graph.pb"])
def test_trial34_a_protobuf_after_a_pickle_is_still_read_as_the_model(tmp_path: Path, name: str) -> None:
    """A harmless pickle in front of a SavedModel with PyFunc: both readings are scanned (the
    model's ops are found; the file is a polyglot), never ``pickle safe``."""
    graph = pb_field(1, pb_field(1, "n0") + pb_field(2, "PyFunc"))  # a GraphDef
    body = saved_model_pb(["Const", "PyFunc"]) if name == "saved_model.pb" else graph
    path = tmp_path / name
    path.write_bytes(_PICKLE_AND_PROTOBUF + body)
    res = scan_file(path)
    rules = {f.rule_id for f in res.findings}
    assert res.verdict is Verdict.MALICIOUS, rules
    assert {"scan.savedmodel.py-func-op", "scan.savedmodel.polyglot"} <= rules


def test_trial34_an_onnx_model_after_a_pickle_is_still_read_as_onnx(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    body = _onnx_with_external("../../../../etc/passwd")
    data = _PICKLE_AND_PROTOBUF + body
    onnx.ModelProto().ParseFromString(data)  # onnx reads it
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    res = scan_file(path)
    rules = {f.rule_id for f in res.findings}
    assert res.format == "onnx" and res.verdict is Verdict.MALICIOUS, rules
    assert {"scan.onnx.external-data-escape", "scan.onnx.polyglot"} <= rules


def test_trial34_a_graph_behind_compressed_magic_is_still_read_as_the_graph(tmp_path: Path) -> None:
    """A GraphDef whose first bytes are bz2's magic yet legal protobuf (field 8, 90 bytes long,
    unknown to GraphDef): judged by its ops, as TensorFlow reads it, not as a corrupt bz2 stream."""
    graph = pb_field(1, pb_field(1, "n0") + pb_field(2, "PyFunc"))
    path = tmp_path / "g.pb"
    path.write_bytes(b"BZh9" + bytes(88) + graph)  # 'B' = field 8 LEN, 'Z' = 90 bytes: h, 9, 88 zeros
    res = scan_file(path)
    assert res.verdict is Verdict.MALICIOUS, (res.format, res.reason)
    assert "scan.savedmodel.py-func-op" in {f.rule_id for f in res.findings}
