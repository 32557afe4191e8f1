"""Red-team round 31, 03: a repository's ``scan.allow`` made a pickle that loads a native library ``safe``.

The gadgets (``torch.ops.load_library``, ``logging.FileHandler``, ``sqlite3.connect``,
``numpy.memmap``, ``torch.save`` …) were judged unknown without an allow entry and allowed with one.
Now they are deny-listed (no allow of any source makes them safe), a project file's entries may
name only the user's own code and match only as written, and what they allowed is shown as an
``info`` finding. The files are built here and never loaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.scan._pickles import CALL, G, I, P, S, T

from bastion.core.errors import ConfigError
from bastion.core.scanning import Verdict
from bastion.scan import scan_file, scan_paths
from bastion.scan.policy import PicklePolicy, Verdictish


def SG(module: str, name: str) -> bytes:
    """``STACK_GLOBAL`` of ``module`` and ``name`` (protocol 4: ``name`` may be a dotted chain)."""
    return S(module) + S(name) + b"\x93"


# (allow entry, the global as a pickle writes it) for every gadget of the finding
GADGETS = [
    ("torch.ops.load_library", SG("torch", "ops.load_library")),
    ("torch.ops.load_library", SG("torch.ops", "load_library")),
    ("torch.ops.load_library", SG("torch._ops", "ops.load_library")),
    ("torch.classes.load_library", SG("torch", "classes.load_library")),
    ("torch._C._dlopen", SG("torch._C", "_dlopen")),
    ("torch.save", G("torch", "save")),
    ("torch.serialization.save", G("torch.serialization", "save")),
    ("logging.FileHandler", G("logging", "FileHandler")),
    ("logging.StreamHandler", G("logging", "StreamHandler")),
    ("logging.basicConfig", G("logging", "basicConfig")),
    ("sqlite3.connect", G("sqlite3", "connect")),
    ("mypkg.FileHandler", G("mypkg", "FileHandler")),  # a re-export under the user's own name
]


@pytest.mark.parametrize(("entry", "glob"), GADGETS)
def test_no_allow_entry_makes_a_round31_gadget_safe(tmp_path: Path, entry: str, glob: bytes) -> None:
    path = tmp_path / "vendor-model.pkl"
    path.write_bytes(P(CALL(glob, S("./vendor/libcompat.so")) + b"0" + b"N", proto=4))
    # even typed by the user (--allow keeps its power over what the deny-list does not name)
    fr = scan_file(path, allow=[entry, entry.rpartition(".")[0] + ".*"])
    assert fr.verdict is Verdict.MALICIOUS, [f.rule_id for f in fr.findings]
    assert "scan.pickle.denied-global" in {f.rule_id for f in fr.findings}


def test_numpy_memmap_is_never_callable_whatever_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "m.pkl"
    path.write_bytes(P(CALL(G("numpy", "memmap"), S("/tmp/victim"), S("uint8"), S("w+"), I(0), T(I(4)))))
    for allow in ([], ["numpy.memmap"], ["numpy.*"]):
        fr = scan_file(path, allow=allow)
        assert fr.verdict is Verdict.MALICIOUS, allow
        assert "scan.pickle.reference-only-called" in {f.rule_id for f in fr.findings}


def test_a_project_files_allow_may_not_name_a_library(tmp_path: Path) -> None:
    path = tmp_path / "m.pkl"
    path.write_bytes(P(G("mypkg.models", "Net") + b")\x81"))
    for entry in ("torch.ops.load_library", "logging.FileHandler", "numpy.memmap", "torch.*", "os.*"):
        with pytest.raises(ConfigError, match="your own code"):
            scan_file(path, project_allow=[entry])
        with pytest.raises(ConfigError, match="your own code"):
            PicklePolicy(project_allow=[entry])
    # the same entry typed by the user is accepted (and the deny-list still wins)
    PicklePolicy(allow=["torch.*"])


def test_a_project_files_entry_matches_only_as_written() -> None:
    # an entry of a project file never reaches through an attribute chain of the user's package
    # (mypkg imports os as _os: mypkg._os.system is os.system) nor into its test suite
    typed = PicklePolicy(allow=["mypkg.*", "other.mod.Net"])
    project = PicklePolicy(project_allow=["mypkg.*", "other.mod.Net"])
    for module, name in [("mypkg", "_os.system"), ("mypkg.util", "np.memmap"), ("other", "mod.Net")]:
        assert typed.judge(module, name).kind is Verdictish.ALLOWED
        assert project.judge(module, name).kind is Verdictish.UNKNOWN
    assert typed.judge("mypkg.tests.helpers", "Popen2").kind is Verdictish.ALLOWED
    assert project.judge("mypkg.tests.helpers", "Popen2").kind is Verdictish.UNKNOWN
    for module, name in [("mypkg", "Net"), ("mypkg.models.layers", "Block"), ("other.mod", "Net")]:
        j = project.judge(module, name)
        assert j.kind is Verdictish.ALLOWED and j.rule is not None and j.rule.source == "project"


def test_what_a_project_file_allowed_is_an_info_finding(tmp_path: Path) -> None:
    path = tmp_path / "m.pkl"
    path.write_bytes(P(G("mypkg.models", "Net") + b")\x81"))
    assert scan_file(path).verdict is Verdict.SUSPICIOUS
    typed = scan_file(path, allow=["mypkg.*"])
    assert typed.verdict is Verdict.SAFE and typed.findings == []
    fr = scan_file(path, project_allow=["mypkg.*"])
    assert fr.verdict is Verdict.SAFE
    [f] = fr.findings
    assert f.rule_id == "scan.pickle.project-allowed" and f.severity.value == "info"
    assert f.evidence["global"] == "mypkg.models.Net" and f.evidence["allow_entry"] == "mypkg.*"
    # the user's own --allow of the same entry wins: nothing to show
    both = scan_paths([path], allow=["mypkg.*"], project_allow=["mypkg.*"]).files[0]
    assert both.verdict is Verdict.SAFE and both.findings == []


def test_a_scan_gate_reports_what_a_typed_allow_entry_let_through(tmp_path: Path) -> None:
    # assess/harden/guard pass --allow with report_allowed: each global only it let through is an
    # info finding of its own rule id, apart from a project file's (bastion scan --allow: none)
    path = tmp_path / "m.pkl"
    path.write_bytes(P(G("mypkg.models", "Net") + b")\x81" + b"0" + G("other.layers", "Block") + b")\x81"))
    fr = scan_file(path, allow=["mypkg.*"], project_allow=["other.layers.Block"], report_allowed=True)
    assert fr.verdict is Verdict.SAFE
    found = {f.rule_id: f.evidence for f in fr.findings}
    assert found["scan.pickle.user-allowed"]["global"] == "mypkg.models.Net"
    assert found["scan.pickle.user-allowed"]["source"] == "--allow"
    assert found["scan.pickle.project-allowed"]["global"] == "other.layers.Block"
    assert found["scan.pickle.project-allowed"]["source"] == "scan.allow"
    # the same in worker processes (the policy travels to them)
    copy = tmp_path / "n.pkl"
    copy.write_bytes(path.read_bytes())
    many = scan_paths([path, copy], allow=["mypkg.*", "other.*"], report_allowed=True, jobs=2)
    assert [[f.rule_id for f in x.findings] for x in many.files] == [["scan.pickle.user-allowed"] * 2] * 2
    # a denied callable stays denied, and nothing says an entry allowed it
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(P(CALL(G("os", "system"), S("true")) + b"0N"))
    fr = scan_file(bad, allow=["os.system", "os.*"], report_allowed=True)
    assert fr.verdict is Verdict.MALICIOUS
    assert {f.rule_id for f in fr.findings} == {"scan.pickle.denied-global"}


def test_a_scan_gate_reports_what_an_allow_entry_let_through_in_a_skops_schema(tmp_path: Path) -> None:
    import json
    import zipfile

    def node(loader: str, module: str, cls: str, ident: int, **extra: object) -> dict[str, object]:
        return {"__loader__": loader, "__module__": module, "__class__": cls, "__id__": ident, **extra}

    content = node(
        "DictNode", "builtins", "dict", 2, content={"block": node("ObjectNode", "mylib", "Block", 3)}
    )
    schema = node("ObjectNode", "sklearn.linear_model._logistic", "LogisticRegression", 1, content=content)
    path = tmp_path / "m.skops"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("schema.json", json.dumps({**schema, "_skops_version": "0.16.0"}))
    assert scan_file(path).verdict is Verdict.SUSPICIOUS
    typed = scan_file(path, allow=["mylib.Block"], report_allowed=True)
    [f] = typed.findings
    assert typed.verdict is Verdict.SAFE and f.rule_id == "scan.skops.user-allowed"
    assert f.evidence["source"] == "--allow" and f.evidence["allow_entry"] == "mylib.Block"
    [f] = scan_file(path, project_allow=["mylib.Block"]).findings
    assert f.rule_id == "scan.skops.project-allowed" and f.evidence["source"] == "scan.allow"
    assert scan_file(path, allow=["mylib.Block"]).findings == []  # bastion scan --allow: as before
