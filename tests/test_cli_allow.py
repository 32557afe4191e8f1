"""``--allow`` on the commands that scan a model before loading it (after red-team round 31, 03).

A project file's ``scan.allow`` may name only the user's own code, so a model that needs a library
class outside the shipped rules (a ``catboost`` estimator, a numpy function in a
``FunctionTransformer``) could no longer be assessed: ``assess`` (``--dry-run`` too), ``harden``
(``dp-train``), ``guard fit`` and ``guard serve`` now take ``--allow`` as ``bastion scan`` does
(typed by the user: full power, the deny-list still wins), and the plan and the report show its
entries apart from the project file's, each global they let through as ``scan.pickle.user-allowed``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bastion import api
from bastion.cli._common import ALLOW_HELP
from bastion.cli.main import run
from bastion.core.errors import ConfigError, IntegrityError

#: A library class the shipped rules do not cover, as raw pickle bytes (never imported or loaded).
CATBOOST = b"\x80\x02ccatboost.core\nCatBoostClassifier\nq\x00)\x81q\x01."
ENTRY = "catboost.core.CatBoostClassifier"


def _catboost_project(tmp_path: Path, allow: str = "") -> Path:
    (tmp_path / "m.pkl").write_bytes(CATBOOST)
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text("version: 1\nassets:\n  - {name: m, path: m.pkl}\n" + allow)
    return cfg


def _fabs_model(project: Path) -> None:
    """The wine project's model as a pipeline calling ``numpy.fabs`` (not on the shipped allow-list)."""
    import joblib
    import numpy as np
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer
    from sklearn.tree import DecisionTreeClassifier

    data = np.loadtxt(project / "data/wine.csv", delimiter=",", skiprows=1)
    clf = make_pipeline(FunctionTransformer(np.fabs), DecisionTreeClassifier(max_depth=3, random_state=0))
    joblib.dump(clf.fit(data[:, :-1], data[:, -1].astype(int)), project / "model.joblib")


def test_a_library_class_is_refused_from_the_project_file_and_accepted_with_assess_allow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _catboost_project(tmp_path, f"scan:\n  allow: [{ENTRY}]\n")
    assert run(["assess", "-c", str(cfg), "--dry-run"]) == 2
    assert "scan.allow[0]" in capsys.readouterr().err
    cfg = _catboost_project(tmp_path)
    assert api.assess(cfg, only=["scan"], store=False).assets[0].scan_verdict == "suspicious"
    # typed on the command line: accepted, and shown in the plan apart from the project file's
    assert run(["assess", "-c", str(cfg), "--dry-run", "--allow", ENTRY]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["scan_allow"] == [] and doc["scan_allow_cli"] == [ENTRY]
    err = " ".join(err.split())
    assert f"--allow from the command line: {ENTRY}" in err and "scan.allow from" not in err
    # the run: the file is judged safe, the global it let through is an info finding, and the
    # report records the command line's entries apart from the project file's
    rep_dir = tmp_path / "rep"
    rc = run(["assess", "-c", str(cfg), "-o", str(rep_dir), "--only", "scan", "--allow", "catboost.*"])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads((rep_dir / "report.json").read_text())
    assert rep["assets"][0]["scan_verdict"] == "safe"
    assert rep["run"]["scan_allow"] == [] and rep["run"]["scan_allow_cli"] == ["catboost.*"]
    [f] = [f for f in rep["findings"] if f["rule_id"].startswith("scan.")]
    assert f["rule_id"] == "scan.pickle.user-allowed" and f["severity"] == "info"
    assert f["evidence"]["global"] == ENTRY and f["evidence"]["allow_entry"] == "catboost.*"
    assert f["evidence"]["source"] == "--allow"
    assert "Scan allow-list additions" in (rep_dir / "report.html").read_text()


def test_the_plan_and_report_show_both_sources_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "own.pkl").write_bytes(b"\x80\x02cmyproject.layers\nBlock\nq\x00)\x81q\x01.")
    cfg = _catboost_project(tmp_path, "scan:\n  allow: [myproject.layers.*]\n")
    cfg.write_text(cfg.read_text().replace("assets:\n", "assets:\n  - {name: own, path: own.pkl}\n"))
    assert run(["assess", "-c", str(cfg), "--dry-run", "--allow", ENTRY]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["scan_allow"] == ["myproject.layers.*"]
    assert json.loads(out)["scan_allow_cli"] == [ENTRY]
    err = " ".join(err.split())
    assert "scan.allow from the project file: myproject.layers.*" in err
    assert f"--allow from the command line: {ENTRY}" in err
    rep = api.assess(cfg, only=["scan"], store=False, allow=[ENTRY])
    assert rep.run.scan_allow == ["myproject.layers.*"] and rep.run.scan_allow_cli == [ENTRY]
    by_rule = {f.rule_id: f.evidence for f in rep.findings}
    assert by_rule["scan.pickle.project-allowed"]["source"] == "scan.allow"
    assert by_rule["scan.pickle.user-allowed"]["source"] == "--allow"
    from bastion.report.markdown import report_to_markdown

    md = report_to_markdown(rep)
    assert "project file (`scan.allow`): `myproject.layers.*`" in md
    assert f"command line (`--allow`): `{ENTRY}`" in md


def test_allow_cannot_allow_a_deny_listed_callable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    canary = tmp_path / "canary"
    cmd = f"touch {canary}".encode()
    (tmp_path / "m.pkl").write_bytes(
        b"\x80\x02cos\nsystem\nq\x00X" + len(cmd).to_bytes(4, "little") + cmd + b"\x85R."
    )
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text("version: 1\nassets:\n  - {name: m, path: m.pkl}\n")
    rep_dir = tmp_path / "rep"
    argv = ["assess", "-c", str(cfg), "-o", str(rep_dir), "--only", "scan"]
    assert run([*argv, "--allow", "os.system", "--allow", "os.*", "--allow", "posix.*"]) == 1
    rep = json.loads((rep_dir / "report.json").read_text())
    assert rep["assets"][0]["scan_verdict"] == "malicious"
    assert "scan.pickle.denied-global" in {f["rule_id"] for f in rep["findings"]}
    assert not canary.exists()


def test_the_scan_gates_take_allow_and_load_what_it_lets_through(
    wine_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fabs_model(wine_project)
    cfg = wine_project / "bastion.yaml"
    # without --allow: numpy.fabs is unknown, the file is not loaded
    with pytest.raises(IntegrityError, match="suspicious"):
        api.guard_fit(cfg, asset="triage", out=wine_project / "prof")
    with pytest.raises(ConfigError, match="suspicious"):
        api.harden(cfg, "dp-logreg", asset="triage")
    # nor may the project file allow it (numpy is a library)
    text = cfg.read_text()
    cfg.write_text(text + "scan:\n  allow: [numpy.fabs]\n")
    with pytest.raises(ConfigError, match=r"scan\.allow\[0\]: 'numpy\.fabs' names numpy"):
        api.guard_fit(cfg, asset="triage", out=wine_project / "prof", allow=["numpy.fabs"])
    cfg.write_text(text)
    # the plan: attacks would run (the file will be loaded) only with --allow
    skipped = {i.skip_reason for i in api.preflight(cfg, budget="quick").items if i.kind == "attack"}
    assert any(r and "suspicious" in r for r in skipped)
    with_allow = api.preflight(cfg, budget="quick", allow=["numpy.fabs"])
    assert all(i.skip_reason is None or "suspicious" not in i.skip_reason for i in with_allow.items)
    # guard fit loads it with --allow, and says what the entry let through
    assert run(["guard", "fit", "-c", str(cfg), "--asset", "triage", "-o", str(wine_project / "prof"),
                "--allow", "numpy.fabs"]) == 0  # fmt: skip
    info = json.loads(capsys.readouterr().out)
    [allowed] = info["scan_allowed"]
    assert allowed == {"global": "numpy.fabs", "allow_entry": "numpy.fabs", "source": "--allow"}
    # guard serve: scanned and loaded with the entry, refused without it
    guard = wine_project / "guard.yaml"
    guard.write_text(
        json.dumps(
            {
                "version": 1,
                "name": "triage",
                "model": {"config": "bastion.yaml", "asset": "triage"},
                "audit": {"db": f"sqlite:///{wine_project / 'g.db'}"},
            }
        )
    )
    with pytest.raises(IntegrityError, match="suspicious"):
        api.guard_app(guard)
    app = api.guard_app(guard, allow=["numpy.fabs"])
    app.state.guard.store.close()
    # harden (dp-logreg trains a new model from the data) with --allow: the version records
    # what the entry let through in its parent
    res = api.harden(cfg, "dp-logreg", asset="triage", allow=["numpy.fabs"])
    assert res.details["scan_allowed"] == [allowed]


@pytest.mark.parametrize("command", [["assess"], ["harden"], ["guard", "fit"], ["guard", "serve"]])
def test_every_scan_gate_command_has_allow(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run([*command, "--help"]) == 0
    out = " ".join(re.sub("[│╭╮╰╯─]", " ", capsys.readouterr().out).split())  # Rich's help panels
    assert "--allow" in out and ALLOW_HELP in out


def test_a_malformed_allow_entry_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _catboost_project(tmp_path)
    assert run(["assess", "-c", str(cfg), "--dry-run", "--allow", "not a name"]) == 2
    assert "not a name" in capsys.readouterr().err
    for call in (
        lambda: api.assess(cfg, store=False, allow=["*"]),
        lambda: api.preflight(cfg, allow=["nodot"]),
        lambda: api.guard_fit(cfg, asset="m", out=tmp_path / "p", allow=["a b"]),
        lambda: api.harden(cfg, "dp-train", asset="m", allow=["x/y"]),
    ):
        with pytest.raises(ConfigError, match="allow-list"):
            call()
