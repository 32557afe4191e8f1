"""Pickle rules as versioned data: the files, the matching, and the deny-wins rule."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

import pytest

from bastion.core.errors import ConfigError
from bastion.core.severity import Severity
from bastion.scan.policy import PicklePolicy, Verdictish, load_rules


@pytest.mark.parametrize("kind", ["allow", "deny"])
def test_rule_files_are_versioned_and_complete(kind: str) -> None:
    text = resources.files("bastion.scan").joinpath("rules").joinpath(f"pickle_{kind}.toml").read_text()
    doc = tomllib.loads(text)
    assert doc["version"]
    version, rules = load_rules(kind)
    assert version == doc["version"]
    assert len(rules) == len(doc["rule"]) > 5
    for r in rules:
        assert r.id.startswith(f"{kind}.")
        assert r.rationale and r.reference
        if kind == "deny":
            assert r.severity in (Severity.HIGH, Severity.CRITICAL)


def test_malformed_rules_are_rejected_with_every_problem() -> None:
    text = """
version = "0"
[[rule]]
id = "deny.a"
module = "os"
name = "system"
severity = "low"
rationale = "x"
reference = "y"
[[rule]]
module = "os"
"""
    with pytest.raises(ConfigError) as info:
        load_rules("deny", text, "test.toml")
    assert "high or critical" in str(info.value)
    assert "missing id" in str(info.value)
    with pytest.raises(ConfigError, match="version"):
        load_rules("allow", "[[rule]]\nid='a'\n")


@pytest.mark.parametrize(
    ("module", "name", "kind"),
    [
        ("os", "system", "denied"),
        ("posix", "system", "denied"),
        ("nt", "system", "denied"),
        ("os", "execv", "denied"),
        ("subprocess", "Popen", "denied"),
        ("pty", "spawn", "denied"),
        ("builtins", "eval", "denied"),
        ("__builtin__", "exec", "denied"),
        ("builtins", "getattr", "denied"),
        ("builtins", "open", "denied"),
        ("runpy", "run_path", "denied"),
        ("importlib", "import_module", "denied"),
        ("pickle", "loads", "denied"),
        ("_pickle", "loads", "denied"),
        ("marshal", "loads", "denied"),
        ("types", "FunctionType", "denied"),
        ("ctypes", "CDLL", "denied"),
        ("socket", "socket", "denied"),
        ("shutil", "rmtree", "denied"),
        ("webbrowser", "open", "denied"),
        ("timeit", "timeit", "denied"),
        ("cProfile", "run", "denied"),
        ("pdb", "run", "denied"),
        ("operator", "attrgetter", "denied"),
        ("operator", "methodcaller", "denied"),
        ("torch", "load", "denied"),
        ("torch.storage", "_load_from_bytes", "denied"),
        ("numpy", "load", "denied"),
        ("_io", "open", "denied"),
        ("_posixsubprocess", "fork_exec", "denied"),
        ("commands", "getoutput", "denied"),  # Python 2 name of subprocess
        ("pickle", "os.system", "denied"),  # protocol-4 attribute chain
        ("sklearn.utils._testing", "assert_run_python_script_without_output", "denied"),
        ("sklearn.utils._available_if", "MethodType", "denied"),  # a re-export
        ("torch._utils", "_rebuild_tensor_v2", "allowed"),
        ("torch._utils", "_rebuild_parameter", "allowed"),
        ("torch", "FloatStorage", "allowed"),
        ("torch", "Size", "allowed"),
        ("collections", "OrderedDict", "allowed"),
        ("numpy.core.multiarray", "_reconstruct", "allowed"),
        ("numpy._core.multiarray", "_reconstruct", "allowed"),
        ("numpy", "ndarray", "allowed"),
        ("numpy", "dtype", "allowed"),
        ("numpy.core.multiarray", "scalar", "allowed"),
        ("joblib.numpy_pickle", "NumpyArrayWrapper", "allowed"),
        ("builtins", "set", "allowed"),
        ("builtins", "slice", "allowed"),
        ("datetime", "datetime", "allowed"),
        ("sklearn.linear_model._logistic", "LogisticRegression", "allowed"),
        ("sklearn.ensemble._forest", "RandomForestClassifier", "allowed"),
        ("sklearn.tree._tree", "Tree", "allowed"),
        ("sklearn.neural_network._multilayer_perceptron", "MLPClassifier", "allowed"),
        ("numpy.random._pickle", "__randomstate_ctor", "allowed"),
        ("numpy.random._mt19937", "MT19937", "allowed"),
        ("mymodule", "evil", "unknown"),
        ("functools", "partial", "unknown"),
        ("sklearn.tree._classes", "some_function", "unknown"),  # modules allow classes, not functions
        ("torch._utils", "_rebuild_tensor_v2.__globals__", "denied"),
    ],
)
def test_judgements(module: str, name: str, kind: str) -> None:
    assert PicklePolicy().judge(module, name).kind is Verdictish(kind)


def test_deny_wins_over_every_allow() -> None:
    policy = PicklePolicy(allow=["os.system", "os.*", "posix.*", "builtins.*"])
    assert policy.judge("os", "system").kind is Verdictish.DENIED
    assert policy.judge("builtins", "eval").kind is Verdictish.DENIED
    assert policy.judge("builtins", "print").kind is Verdictish.ALLOWED  # user said builtins.*


def test_user_allow_entries() -> None:
    policy = PicklePolicy(allow=["pkg.models.Net", "other.*"])
    assert policy.judge("pkg.models", "Net").kind is Verdictish.ALLOWED
    assert policy.judge("pkg", "models.Net").kind is Verdictish.ALLOWED
    assert policy.judge("pkg.models", "Other").kind is Verdictish.UNKNOWN
    assert policy.judge("other", "X").kind is Verdictish.ALLOWED
    assert policy.judge("other.deep.mod", "Y").kind is Verdictish.ALLOWED
    assert policy.judge("otherwise", "Z").kind is Verdictish.UNKNOWN
    with pytest.raises(ConfigError) as info:
        PicklePolicy(allow=["bad name", "*", "nodot"])
    assert all(e in str(info.value) for e in ("bad name", "'*'", "nodot"))


def test_nested_loaders_are_flagged_for_unpacking() -> None:
    policy = PicklePolicy()
    assert policy.is_nested_loader("_pickle", "loads")
    assert policy.is_nested_loader("torch.storage", "_load_from_bytes")
    assert not policy.is_nested_loader("os", "system")


def test_name_match_agrees_with_fnmatch() -> None:
    """The fast paths of ``_name_match`` (``*`` and plain names) answer as fnmatch would."""
    import fnmatch

    from bastion.scan.policy import _builtin_rules, _name_match

    _, allow, _, deny = _builtin_rules()
    patterns = {p for r in (*allow, *deny) for p in r.names} | {"*", "sys*", "a?c", "[ab]x", "*.*", ""}
    names = [
        "system",
        "popen",
        "sys",
        "abc",
        "ax",
        "bx",
        "a.b",
        "OrderedDict",
        "",
        "os.system",
        "_reconstruct",
    ]
    for pattern in patterns:
        for name in names:
            expected = not ("." in name and "." not in pattern) and fnmatch.fnmatchcase(name, pattern)
            assert _name_match(name, pattern) is expected, (name, pattern)


def test_an_allow_entry_for_a_denied_callable_warns_that_it_does_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from bastion.scan.policy import PicklePolicy

    with caplog.at_level(logging.WARNING, logger="bastion.scan.policy"):
        pol = PicklePolicy(["os.system", "mylib.layers.Block", "mylib.*"])
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "os.system has no effect: it is deny-listed" in warned[0]
    assert pol.judge("os", "system").kind.value == "denied"  # deny still wins


def _memmap_call(path: str, mode: str) -> bytes:
    """``numpy.memmap(path, 'uint8', mode, 0, (16,))`` as a protocol-2 pickle (never loaded here)."""
    import pickle

    args = pickle.dumps((path, "uint8", mode, 0, (16,)), protocol=2)[2:-1]  # the tuple, no PROTO/STOP
    return b"\x80\x02cnumpy\nmemmap\n" + args + b"R."


def test_numpy_memmap_is_allowed_as_a_class_reference_but_not_as_a_call(tmp_path: Path) -> None:
    """Called, ``numpy.memmap(path, mode='w+')`` creates or overwrites a file on load: it was
    allowed (verdict ``safe``; picklescan says suspicious). A pickled memmap names the class only
    as ``_reconstruct``'s argument and stays safe."""
    import numpy as np

    from bastion.core.scanning import Verdict
    from bastion.scan import scan_file

    victim = tmp_path / "victim.txt"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(_memmap_call(str(victim), "w+"))
    fr = scan_file(evil)
    assert fr.verdict is Verdict.MALICIOUS
    (f,) = fr.findings
    assert f.rule_id == "scan.pickle.reference-only-called"
    assert str(victim) in str(f.evidence["arguments"])  # the file it would write is shown
    assert not victim.exists()
    import pickle

    legit = tmp_path / "mm.pkl"
    mm = np.memmap(tmp_path / "mm.dat", dtype="float32", mode="w+", shape=(4,))
    for protocol in (2, 4, 5):
        legit.write_bytes(pickle.dumps({"weights": mm}, protocol=protocol))
        assert scan_file(legit).verdict is Verdict.SAFE, protocol


def test_call_key_is_only_for_allow_rules() -> None:
    text = 'version = "1"\n[[rule]]\nid = "d"\nmodule = "os"\nname = "system"\nseverity = "high"\n'
    text += 'rationale = "r"\nreference = "x"\ncall = false\n'
    with pytest.raises(ConfigError) as exc:
        load_rules("deny", text)
    assert "only in an allow rule" in str(exc.value)


def test_a_wildcard_allow_entry_over_a_denied_module_says_deny_wins(caplog: pytest.LogCaptureFixture) -> None:
    # new-user trial: --allow 'os.*' silently did nothing for os.system
    import logging

    from bastion.scan.policy import PicklePolicy

    with caplog.at_level(logging.WARNING, logger="bastion.scan.policy"):
        PicklePolicy(allow=["os.*", "mypkg.*"])
    said = [r.getMessage() for r in caplog.records]
    assert any("os.*" in m and "deny always wins" in m for m in said)
    assert not any("mypkg" in m for m in said)


def test_a_rule_file_lists_every_problem_of_every_rule(tmp_path: Path) -> None:
    """Trial 33, 10: validation stopped at a rule's first problem (``module must be…``)."""
    text = """
version = "1"
kind = "deny"
[[rule]]
id = "deny.only-id"
[[rule]]
name = 3
module = "os"
[[rule]]
id = "deny.types"
module = []
name = ["ok", 4]
severity = "medium"
rationale = 5
reference = ""
nested = "yes"
nestd = true
[[rule]]
id = "deny.only-id"
module = "os"
name = "system"
severity = "high"
rationale = "r"
reference = "x"
"""
    with pytest.raises(ConfigError) as info:
        load_rules("deny", text, "bad.toml")
    problems = info.value.problems
    for expected in (
        "rule[0] (id 'deny.only-id'): missing module",
        "rule[0] (id 'deny.only-id'): missing name",
        "rule[0] (id 'deny.only-id'): missing severity",
        "rule[0] (id 'deny.only-id'): missing rationale",
        "rule[0] (id 'deny.only-id'): missing reference",
        "rule[1]: missing id",
        "rule[1]: name must be a string or a non-empty list of strings, not 3",
        "rule[1]: missing rationale",
        "rule[2] (id 'deny.types'): module must be a string or a non-empty list of strings, not []",
        "rule[2] (id 'deny.types'): name must be a string or a non-empty list of strings, not ['ok', 4]",
        "rule[2] (id 'deny.types'): a deny rule is high or critical, not medium",
        "rule[2] (id 'deny.types'): rationale must be a non-empty string, not 5",
        "rule[2] (id 'deny.types'): reference must be a non-empty string, not ''",
        "rule[2] (id 'deny.types'): 'nested' is true or false",
        "rule[2] (id 'deny.types'): unknown field(s) nestd",
        "rule[3] (id 'deny.only-id'): duplicate id",
    ):
        assert any(p.startswith(expected) for p in problems), (expected, problems)
    assert not any("rule[1]" in p and "module" in p for p in problems)  # rule[1]'s module is fine

    # through bastion scan --rules: one error, exit 2, each problem on its line
    from bastion.cli.scan_cmd import main

    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    model = tmp_path / "m.pkl"
    model.write_bytes(b"\x80\x04K\x01.")
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["--rules", str(bad), str(model)])
    assert code == 2
    assert "rule[0] (id 'deny.only-id'): missing name" in err.getvalue()
    assert "rule[1]: name must be" in err.getvalue()


def test_a_rule_file_with_many_problems_lists_the_first_20_and_counts_the_rest() -> None:
    text = 'version = "1"\n' + "[[rule]]\n" * 10  # 10 empty rules: 6 problems each
    with pytest.raises(ConfigError) as info:
        load_rules("deny", text, "many.toml")
    problems = info.value.problems
    assert len(problems) == 21
    assert problems[-1] == "... and 40 more problem(s)"
    assert problems[:6] == [
        "rule[0]: missing id",
        "rule[0]: missing module",
        "rule[0]: missing name",
        "rule[0]: missing severity (a deny rule is high or critical)",
        "rule[0]: missing rationale",
        "rule[0]: missing reference",
    ]
