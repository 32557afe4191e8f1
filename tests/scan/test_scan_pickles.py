"""Plain pickle payloads: protocols, memo tricks, INST, nested loads, allow-lists, verdicts."""

from __future__ import annotations

import builtins
import os
import pickle
import subprocess
from pathlib import Path

import pytest
from tests.scan._factories import (
    Reduce,
    global_call,
    inst_protocol0,
    os_system_payload,
    stack_global_via_memo,
)

from bastion.core.errors import ConfigError, ScanError
from bastion.core.findings import Threat
from bastion.core.scanning import Verdict
from bastion.core.severity import Severity
from bastion.scan import scan_file, scan_paths


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _denied(fr, qualname: str):  # type: ignore[no-untyped-def]
    hits = [
        f
        for f in fr.findings
        if f.rule_id == "scan.pickle.denied-global" and f.evidence["global"] == qualname
    ]
    assert hits, f"no denied-global finding for {qualname}: {[f.title for f in fr.findings]}"
    return hits[0]


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_os_system_is_malicious_in_every_protocol(tmp_path: Path, marker: Path, protocol: int) -> None:
    data = os_system_payload(marker, protocol)
    fr = scan_file(_write(tmp_path / f"p{protocol}.pkl", data))
    assert fr.verdict is Verdict.MALICIOUS
    assert fr.format == "pickle"
    f = _denied(fr, f"{os.system.__module__}.system")
    assert f.severity is Severity.CRITICAL
    assert f.threat is Threat.SUPPLY_CHAIN
    assert f.atlas == ["AML.T0011.000", "AML.T0010.003"]
    assert f.evidence["rule"] == "deny.os"
    assert f.evidence["rationale"]
    assert f.location.path == str(tmp_path / f"p{protocol}.pkl")
    # the offset is where the global is resolved: GLOBAL or STACK_GLOBAL in the stream
    opcode = data[f.location.offset]
    assert opcode in (ord("c"), 0x93)
    assert f.evidence["invoked_by"][0]["opcode"] == "REDUCE"
    assert any(str(marker) in a for a in f.evidence["arguments"])
    assert f"{os.system.__module__}.system" in fr.globals
    assert fr.sha256 and fr.size == len(data)
    assert type(fr).model_validate_json(fr.model_dump_json()) == fr  # evidence serialises


@pytest.mark.parametrize(
    ("fn", "args", "qualname"),
    [
        (builtins.exec, ("print(1)",), "builtins.exec"),
        (builtins.eval, ("1+1",), "builtins.eval"),
        (subprocess.Popen, (["true"],), "subprocess.Popen"),
        (builtins.getattr, (list, "append"), "builtins.getattr"),
        (builtins.__import__, ("os",), "builtins.__import__"),
    ],
)
def test_classic_payloads_are_malicious(tmp_path: Path, marker: Path, fn, args, qualname: str) -> None:  # type: ignore[no-untyped-def]
    data = pickle.dumps(Reduce(fn, *args), protocol=4)
    fr = scan_file(_write(tmp_path / "m.pkl", data))
    assert fr.verdict is Verdict.MALICIOUS
    assert _denied(fr, qualname).severity >= Severity.HIGH


def test_protocol2_python2_alias_is_mapped(tmp_path: Path) -> None:
    # protocol 2 writes builtins as __builtin__ (fix_imports); the deny-list must see through it.
    fr = scan_file(_write(tmp_path / "a.pkl", pickle.dumps(Reduce(builtins.eval, "1"), protocol=2)))
    assert fr.verdict is Verdict.MALICIOUS
    assert _denied(fr, "__builtin__.eval").evidence["rule"] == "deny.builtins-exec"


def test_stack_global_through_memo(tmp_path: Path, marker: Path) -> None:
    data = stack_global_via_memo("os", "system", f"touch {marker}")
    fr = scan_file(_write(tmp_path / "memo.pkl", data))
    assert fr.verdict is Verdict.MALICIOUS
    f = _denied(fr, "os.system")
    assert f.evidence["opcode"] == "STACK_GLOBAL"
    assert data[f.location.offset] == 0x93


def test_inst_opcode_protocol0(tmp_path: Path, marker: Path) -> None:
    data = inst_protocol0("os", "system", f"touch {marker}")
    fr = scan_file(_write(tmp_path / "inst.pkl", data))
    assert fr.verdict is Verdict.MALICIOUS
    f = _denied(fr, "os.system")
    assert f.evidence["opcode"] == "INST"
    assert data[f.location.offset] == ord("i")


def test_inst_payload_in_a_txt_file_is_still_found(tmp_path: Path, marker: Path) -> None:
    # A name does not make a file harmless: a complete pickle stream is scanned whatever its name.
    fr = scan_file(_write(tmp_path / "notes.txt", inst_protocol0("os", "system", f"touch {marker}")))
    assert fr.verdict is Verdict.MALICIOUS


def test_dotted_protocol4_name_reaching_os_through_another_module(tmp_path: Path) -> None:
    # find_class('pickle', 'os.system') resolves pickle.os.system under protocol 4.
    fr = scan_file(_write(tmp_path / "dotted.pkl", global_call("pickle", "os.system", protocol=4)))
    assert fr.verdict is Verdict.MALICIOUS


def test_nested_pickle_loads_is_scanned_recursively(tmp_path: Path, marker: Path) -> None:
    inner = os_system_payload(marker, 4)
    outer = pickle.dumps(Reduce(pickle.loads, inner), protocol=4)
    fr = scan_file(_write(tmp_path / "nested.pkl", outer))
    assert fr.verdict is Verdict.MALICIOUS
    loads = _denied(fr, "_pickle.loads")
    assert loads.evidence["rule"] == "deny.nested-pickle"
    inner_hit = _denied(fr, f"{os.system.__module__}.system")
    assert inner_hit.location.member is not None and "payload" in inner_hit.location.member
    assert inner_hit.location.offset == inner.index(b"\x93")


def test_nested_pickle_in_protocol2_bytes_encoding(tmp_path: Path, marker: Path) -> None:
    # protocol 2 writes bytes as _codecs.encode(str, 'latin1'): the scanner folds it back.
    inner = os_system_payload(marker, 2)
    fr = scan_file(_write(tmp_path / "nested2.pkl", pickle.dumps(Reduce(pickle.loads, inner), protocol=2)))
    assert fr.verdict is Verdict.MALICIOUS
    assert any(f.location.member and f.evidence.get("global", "").endswith(".system") for f in fr.findings)


def test_unknown_callable_is_suspicious(tmp_path: Path) -> None:
    fr = scan_file(_write(tmp_path / "u.pkl", global_call("mymodule", "evil", protocol=4)))
    assert fr.verdict is Verdict.SUSPICIOUS
    [f] = fr.findings
    assert f.rule_id == "scan.pickle.unknown-global"
    assert f.severity is Severity.MEDIUM
    assert "mymodule.evil" in f.title


@pytest.mark.parametrize("entry", ["mymodule.evil", "mymodule.*"])
def test_user_allow_list_makes_own_classes_safe(tmp_path: Path, entry: str) -> None:
    path = _write(tmp_path / "u.pkl", global_call("mymodule", "evil", protocol=2))
    assert scan_file(path, allow=[entry]).verdict is Verdict.SAFE
    assert scan_file(path, allow=["othermodule.*"]).verdict is Verdict.SUSPICIOUS


def test_nothing_can_allow_a_denied_callable(tmp_path: Path, marker: Path) -> None:
    path = _write(tmp_path / "p.pkl", os_system_payload(marker))
    mod = os.system.__module__
    fr = scan_file(path, allow=[f"{mod}.system", f"{mod}.*", "os.*", "os.system"])
    assert fr.verdict is Verdict.MALICIOUS


def test_allow_list_is_never_read_from_the_scanned_folder(tmp_path: Path) -> None:
    (tmp_path / "bastion.yaml").write_text("scan:\n  allow: ['mymodule.*']\n")
    (tmp_path / ".bastion-allow").write_text("mymodule.*\n")
    _write(tmp_path / "u.pkl", global_call("mymodule", "evil"))
    result = scan_paths([tmp_path])
    by_name = {Path(f.path).name: f for f in result.files}
    assert by_name["u.pkl"].verdict is Verdict.SUSPICIOUS


def test_bad_allow_entry_is_a_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "u.pkl", global_call("mymodule", "evil"))
    with pytest.raises(ConfigError) as info:
        scan_file(path, allow=["not a name", "*"])
    assert "not a name" in str(info.value)


def test_plain_data_pickles_are_safe(tmp_path: Path) -> None:
    import collections
    import datetime

    obj = {
        "a": [1, 2.5, "x", b"yy", None, True, (1, 2)],
        "b": {1, 2},
        "c": frozenset([3]),
        "d": collections.OrderedDict(a=1),
        "e": datetime.datetime(2024, 1, 1),
        "f": bytearray(b"ab"),
        "g": 10**40,
        "h": complex(1, 2),
    }
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        fr = scan_file(_write(tmp_path / f"d{protocol}.pkl", pickle.dumps(obj, protocol=protocol)))
        assert fr.verdict is Verdict.SAFE, (protocol, [f.title for f in fr.findings])
        assert fr.findings == []


def test_truncated_pickle_is_an_error(tmp_path: Path) -> None:
    data = pickle.dumps(list(range(100)), protocol=4)
    fr = scan_file(_write(tmp_path / "t.pkl", data[: len(data) // 2]))
    assert fr.verdict is Verdict.ERROR
    assert fr.reason and "truncated" in fr.reason
    assert any(f.rule_id == "scan.pickle.malformed" for f in fr.findings)


def test_payload_before_truncation_is_still_malicious(tmp_path: Path, marker: Path) -> None:
    # pickle.load runs the REDUCE before it reaches the cut: the verdict must say so.
    data = os_system_payload(marker, 4)[:-1] + b"\x8c\xff"
    fr = scan_file(_write(tmp_path / "cut.pkl", data))
    assert fr.verdict is Verdict.MALICIOUS
    assert fr.reason and "truncated" in fr.reason


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("README.txt", b"hello world\nthis is a readme\n"),
        ("data.csv", b"a,b,c\n1,2,3\n4,5,6\n"),
        ("train.py", b"import os\nprint('hi')\n"),
        ("config.json", b'{"lr": 0.1}'),
        ("empty", b""),
    ],
)
def test_non_model_files_are_skipped(tmp_path: Path, name: str, content: bytes) -> None:
    fr = scan_file(_write(tmp_path / name, content))
    assert fr.verdict is Verdict.SKIPPED
    assert fr.reason
    assert fr.format is None


def test_garbage_with_a_model_name_is_an_error(tmp_path: Path) -> None:
    fr = scan_file(_write(tmp_path / "model.pkl", b"this is not a pickle"))
    assert fr.verdict is Verdict.ERROR


def test_trailing_second_pickle_is_scanned(tmp_path: Path, marker: Path) -> None:
    data = pickle.dumps({"ok": 1}) + os_system_payload(marker)
    fr = scan_file(_write(tmp_path / "two.pkl", data))
    assert fr.verdict is Verdict.MALICIOUS


def test_trailing_garbage_is_a_low_finding(tmp_path: Path) -> None:
    fr = scan_file(_write(tmp_path / "tail.pkl", pickle.dumps([1, 2]) + b"\xff\xfe junk"))
    assert fr.verdict is Verdict.SAFE
    assert [f.rule_id for f in fr.findings] == ["scan.pickle.trailing-data"]
    assert fr.findings[0].severity is Severity.LOW


def test_missing_path_raises_scan_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pkl"
    with pytest.raises(ScanError, match=r"nope\.pkl"):
        scan_file(missing)
    with pytest.raises(ScanError, match=r"nope\.pkl"):
        scan_paths([tmp_path, missing])


def test_stream_tricks_are_reported(tmp_path: Path) -> None:
    # REDUCE of a computed callable: getattr(...) result called.
    trick = (
        b"\x80\x04"
        + b"\x8c\x08builtins\x8c\x07getattr\x93"
        + b"\x8c\x08builtins\x8c\x04list\x93"
        + b"\x8c\x06append\x86R"  # getattr(list, 'append')
        + b"]\x85R."  # (...)([])
    )
    fr = scan_file(_write(tmp_path / "dyn.pkl", trick))
    assert fr.verdict is Verdict.MALICIOUS
    rules = {f.rule_id for f in fr.findings}
    assert "scan.pickle.dynamic-callable" in rules
    # BUILD on an imported object: sets attributes on a module-level object.
    build = b"\x80\x04\x8c\x0bcollections\x8c\x0bOrderedDict\x93}\x8c\x01x\x4b\x01sb."
    fr = scan_file(_write(tmp_path / "build.pkl", build))
    assert fr.verdict is Verdict.MALICIOUS
    assert "scan.pickle.mutates-global" in {f.rule_id for f in fr.findings}


def test_partial_wrapping_a_denied_callable(tmp_path: Path, marker: Path) -> None:
    import functools

    data = pickle.dumps(Reduce(functools.partial(os.system, f"touch {marker}")), protocol=4)
    fr = scan_file(_write(tmp_path / "partial.pkl", data))
    assert fr.verdict is Verdict.MALICIOUS
    assert "functools.partial" in fr.globals
    _denied(fr, f"{os.system.__module__}.system")


def test_payload_hidden_in_bytesio_state_for_a_loader(tmp_path: Path, marker: Path) -> None:
    # torch.load(io.BytesIO(payload)): the payload sits in BytesIO's BUILD state.
    import io

    class _TorchLoad:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            import torch

            return (torch.load, (io.BytesIO(os_system_payload(marker)),))

    pytest.importorskip("torch")
    fr = scan_file(_write(tmp_path / "tl.pkl", pickle.dumps(_TorchLoad(), protocol=4)))
    assert fr.verdict is Verdict.MALICIOUS
    nested = [
        f for f in fr.findings if f.location.member and f.evidence.get("global", "").endswith(".system")
    ]
    assert nested, [f.title for f in fr.findings]
