"""``bastion.assess`` on small projects: an HTTP endpoint over real 127.0.0.1, waivers, a crashing
plugin, a corrupt model file, ``--max-time`` and label-only endpoints."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bastion import api
from bastion.cli.main import run
from bastion.core.errors import ConfigError
from bastion.core.registry import attacks
from bastion.core.settings import load_settings

TOKEN = "tok-9f8e7d"
#: What an HTTP client sends for credentials in the URL (``http://svc:Hunter2Pass@…``).
BASIC = "Basic " + base64.b64encode(b"svc:Hunter2Pass").decode()


def _train() -> tuple[Any, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    x, y = load_breast_cancer(return_X_y=True)
    rf = RandomForestClassifier(n_estimators=30, random_state=0).fit(x[:300], y[:300])
    return rf, x.astype(np.float32), y


@pytest.fixture(scope="module")
def endpoint() -> Iterator[dict[str, Any]]:
    rf, _, _ = _train()
    hits: dict[str, Any] = {"rows": 0, "unauthorised": 0, "last_path": ""}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            if self.headers.get("Authorization") not in (f"Bearer {TOKEN}", BASIC):
                hits["unauthorised"] += 1
                self.send_response(401)
                self.end_headers()
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            rows = np.asarray(body["instances"], dtype=np.float64)
            hits["rows"] += len(rows)
            hits["last_path"] = self.path
            if self.path == "/labels":
                out: list[Any] = rf.predict(rows).tolist()
            else:
                out = rf.predict_proba(rows).tolist()
            data = json.dumps({"predictions": out}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield {"url": f"http://127.0.0.1:{srv.server_address[1]}", "hits": hits}
    srv.shutdown()


def _project(tmp_path: Path, url: str, *, output: str = "probabilities", extra: str = "") -> Path:
    _, x, y = _train()
    np.savez(tmp_path / "cancer.npz", x=x, y=y)
    idx = np.arange(len(x))
    lo, hi = x.min(axis=0), x.max(axis=0)
    feats = "\n".join(
        f"        - {{name: f{j}, min: {lo[j]:.6g}, max: {hi[j]:.6g}}}" for j in range(x.shape[1])
    )
    (tmp_path / "bastion.yaml").write_text(
        f"""version: 1
project: {{name: remote, owner: ml-platform}}
assets:
  - name: remote-rf
    kind: endpoint
    url: {url}
    num_classes: 2
    owner: ml-platform
    dataset: cancer
    endpoint: {{token_env: BASTION_RF_TOKEN, output: {output}, max_batch: 50}}
    input:
      shape: [30]
      features:
{feats}
datasets:
  - name: cancer
    path: cancer.npz
    owner: ml-platform
    splits:
      train: {idx[:300].tolist()}
      test: {idx[300:450].tolist()}
      population: {idx[450:].tolist()}
checks:
  evasion.square:
    params: {{n_queries: 50}}
  extraction.surrogate:
    params: {{queries: [50, 100]}}
{extra}"""
    )
    return tmp_path / "bastion.yaml"


def test_endpoint_assessed_over_http(
    endpoint: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_RF_TOKEN", TOKEN)
    cfg = _project(tmp_path, endpoint["url"])
    before = endpoint["hits"]["rows"]
    report = api.assess(cfg, settings=load_settings(budget="quick"), store=False, asset="remote-rf")
    assert report.run.status == "ok", report.errors
    ok = {c.id: c for c in report.checks if c.status == "ok"}
    assert {"evasion.square", "membership.threshold", "extraction.surrogate", "governance.controls"} <= set(
        ok
    )
    skipped = {c.id: c.reason for c in report.checks if c.status == "skipped"}
    assert "loss-gradients" in (skipped["evasion.pgd"] or "")
    sent = endpoint["hits"]["rows"] - before
    used = sum(c.budget_used.queries for c in ok.values() if c.budget_used)
    assert 0 < sent <= used  # every row the server saw was charged to a check's budget
    assert ok["membership.threshold"].metrics["auc"] is not None
    assert TOKEN not in report.model_dump_json()


def test_label_only_endpoint_skips_score_attacks(
    endpoint: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_RF_TOKEN", TOKEN)
    cfg = _project(tmp_path, endpoint["url"] + "/labels", output="labels")
    report = api.assess(cfg, settings=load_settings(budget="quick"), store=False, asset="remote-rf")
    status = {c.id: (c.status, c.reason) for c in report.checks}
    assert status["extraction.surrogate"][0] == "ok"
    for pid in ("evasion.square", "membership.threshold", "evasion.pgd"):
        assert status[pid][0] == "skipped" and "label-only" in (status[pid][1] or ""), status[pid]


def test_missing_token_env_is_recorded_not_leaked(
    endpoint: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BASTION_RF_TOKEN", raising=False)
    cfg = _project(tmp_path, endpoint["url"])
    report = api.assess(cfg, settings=load_settings(budget="quick"), store=False, only=["evasion.square"])
    assert report.run.status == "error"
    assert any("BASTION_RF_TOKEN" in e.message for e in report.errors)
    assert api.exit_code(report, "none") == 2


def test_waivers_show_as_waived_and_do_not_gate(
    endpoint: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_RF_TOKEN", TOKEN)
    waivers = """waivers:
  - {rule_id: governance.controls.incident-plan, reason: "plan in review with the CISO", expires: 2099-01-01}
  - {rule_id: governance.controls.endpoint-tls, asset: remote-rf, reason: "expired", expires: 2000-01-01}
"""
    cfg = _project(tmp_path, endpoint["url"], extra=waivers)
    report = api.assess(cfg, settings=load_settings(budget="quick"), store=False, only=["governance"])
    by_rule = {f.rule_id: f for f in report.findings}
    assert by_rule["governance.controls.incident-plan"].waiver is not None
    assert by_rule["governance.controls.incident-plan"] not in report.gating()
    tls = by_rule.get("governance.controls.endpoint-tls")
    assert tls is None or tls.waiver is None  # expired: not waived (loopback http may be n-a)


def test_crashing_plugin_is_recorded_and_run_stored(
    endpoint: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_RF_TOKEN", TOKEN)
    cfg = _project(tmp_path, endpoint["url"])
    cls = attacks.get("extraction.surrogate")

    def boom(self: Any, ctx: Any) -> Any:
        raise RuntimeError("surrogate exploded")

    monkeypatch.setattr(cls, "run", boom)
    db = f"sqlite:///{tmp_path / 'b.db'}"
    code = run(
        [
            "assess",
            "-c",
            str(cfg),
            "--db",
            db,
            "-o",
            str(tmp_path / "r"),
            "--budget",
            "quick",
            "--only",
            "extraction",
            "--only",
            "governance",
            "--fail-on",
            "none",
        ]
    )
    assert code == 2
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["run"]["status"] == "error"
    assert report["errors"][0]["check"] == "extraction.surrogate"
    assert "surrogate exploded" in report["errors"][0]["message"]
    assert any(c["id"] == "governance.controls" and c["status"] == "ok" for c in report["checks"])
    assert api.history(db_url=db)[0].status == "error"


def test_ctrl_c_swallowed_by_a_checks_library_still_stops_the_run(
    wine_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Red-team round 28, F4: a SIGINT inside scikit-learn's MLPClassifier.fit ("Training interrupted
    by user.") was swallowed: extraction.surrogate reported a half-trained surrogate's fidelity, the
    run was stored and exited 0/1. It now exits 130 and stores nothing."""
    import os
    import signal

    from sklearn.neural_network import MLPClassifier

    original = MLPClassifier._update_no_improvement_count
    sent: list[int] = []

    def ctrl_c_once(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not sent:  # a real SIGINT, delivered inside sklearn's training loop
            sent.append(1)
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MLPClassifier, "_update_no_improvement_count", ctrl_c_once)
    cfg = wine_project / "bastion.yaml"  # the surrogate's fidelity is measured on a test split
    cfg.write_text(
        cfg.read_text().replace("splits: {train: ", f"splits: {{test: {list(range(1, 178, 2))}, train: ")
    )
    db = f"sqlite:///{wine_project / 'b.db'}"
    args = ["-c", str(wine_project / "bastion.yaml"), "--db", db, "--budget", "quick"]
    args += ["--only", "extraction.surrogate", "--fail-on", "none", "-o", str(wine_project / "r")]
    with pytest.warns(UserWarning, match="Training interrupted by user"):
        assert run(["assess", *args]) == 130
    assert sent and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert "the store (no run recorded)" in capsys.readouterr().err
    assert api.history(db_url=db) == [] and not (wine_project / "r").exists()
    sent.clear()
    monkeypatch.setattr(MLPClassifier, "_update_no_improvement_count", original)
    assert run(["assess", *args]) == 0  # uninterrupted, the same run is stored
    assert len(api.history(db_url=db)) == 1


def test_credentials_in_the_endpoint_url_never_reach_output_reports_bom_or_store(
    endpoint: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # red-team round 22 F3: the URL's password and api_key were copied verbatim into the console
    # table, report.html/json/sarif, bom.json and the store (runs.report)
    monkeypatch.setenv("BASTION_RF_TOKEN", TOKEN)
    host = endpoint["url"].removeprefix("http://")
    url = f"http://svc:Hunter2Pass@{host}/predict?api_key=SK-LIVE-123456&v=2"
    cfg = _project(tmp_path, url)
    db = tmp_path / "st.db"
    args = [
        "assess",
        "-c",
        str(cfg),
        "--db",
        f"sqlite:///{db}",
        "-o",
        str(tmp_path / "r"),
        "--budget",
        "quick",
    ]
    args += ["--only", "extraction", "--only", "governance", "--fail-on", "none"]
    code = run(args)
    assert code == 0
    assert "api_key=SK-LIVE-123456" in endpoint["hits"]["last_path"]  # the request used the real URL
    secrets = ("Hunter2Pass", "SK-LIVE-123456")
    out = capsys.readouterr()
    shown = {
        "console": out.out + out.err + caplog.text,
        **{
            f: (tmp_path / "r" / f).read_text()
            for f in ("report.html", "report.json", "report.sarif", "bom.json")
        },
        "store": db.read_bytes().decode("latin-1"),
    }
    for where, text in shown.items():
        assert not any(s in text for s in secrets), where
    report = json.loads(shown["report.json"])
    masked = f"http://svc:***@{host}/predict?api_key=***&v=2"
    assert report["assets"][0]["url"] == masked
    assert {f["location"].get("endpoint") for f in report["findings"] if f["asset"] == "remote-rf"} == {
        masked
    }
    # the config warned that the credentials belong in token_env / headers_env, naming no value
    assert "assets[0].url carries credentials" in caplog.text and "token_env" in caplog.text


def _one_model_project(tmp_path: Path, model: bytes) -> None:
    """A project of one sklearn asset ``m`` (``model.joblib`` holding ``model``) on a 20-row npz."""
    (tmp_path / "model.joblib").write_bytes(model)
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 3), dtype=np.float32), y=np.arange(20) % 2)
    (tmp_path / "bastion.yaml").write_text(
        """version: 1
assets:
  - {name: m, path: model.joblib, framework: sklearn, num_classes: 2, dataset: d, input: {shape: [3]}}
datasets:
  - {name: d, path: d.npz, splits: {train: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], test: [10, 11, 12, 13, 14, 15]}}
"""
    )


def test_corrupt_model_file_is_an_error_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pickle

    _one_model_project(tmp_path, pickle.dumps({"w": list(range(50))}, protocol=4)[:-9])
    code = run(
        [
            "assess",
            "-c",
            str(tmp_path / "bastion.yaml"),
            "--db",
            f"sqlite:///{tmp_path / 'x.db'}",
            "-o",
            str(tmp_path / "r"),
            "--budget",
            "quick",
            "--fail-on",
            "none",
        ]
    )
    assert code == 2
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    scan = next(c for c in report["checks"] if c["id"].startswith("scan."))
    assert scan["status"] == "error"
    skipped = [c for c in report["checks"] if c["id"] == "evasion.square"]
    assert skipped and skipped[0]["status"] == "skipped" and "error" in skipped[0]["reason"]


def test_dry_run_skips_the_attacks_the_scan_gate_will_skip(tmp_path: Path) -> None:
    # new-user trial: --dry-run said "yes" to the attacks on a malicious model, which a run skips
    from bastion import api

    _one_model_project(tmp_path, b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x02id\x85R.")
    plan = api.preflight(tmp_path / "bastion.yaml", budget="quick")
    attacks = [i for i in plan.items if i.kind == "attack"]
    assert attacks and all(i.skip_reason for i in attacks)
    assert any("judges the model file malicious" in (i.skip_reason or "") for i in attacks)
    assert next(i for i in plan.items if i.check_id == "scan").skip_reason is None


def _torch_project(tmp_path: Path, *, model_class: bool | str, script: bool = False) -> Path:
    """A torch asset ``m`` (a state_dict, or a TorchScript archive with ``script``) on a 20-row npz."""
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    if script:
        import warnings

        with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript; still a format users ship
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(torch.jit.script(net), tmp_path / "m.pt")
    else:
        torch.save(net.state_dict(), tmp_path / "m.pt")
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 3), dtype=np.float32), y=np.arange(20) % 2)
    # (the plan loads nothing: the class is only named)
    ref = model_class if isinstance(model_class, str) else "bastion.examples.clinic_models:DiagnosisMLP"
    cls = f", model_class: '{ref}'" if model_class else ""
    (tmp_path / "bastion.yaml").write_text(
        f"""version: 1
assets:
  - {{name: m, path: m.pt, framework: torch, num_classes: 2, dataset: d, input: {{shape: [3]}}{cls}}}
datasets:
  - {{name: d, path: d.npz, splits: {{train: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], test: [10, 11, 12, 13, 14]}}}}
"""
    )
    return tmp_path / "bastion.yaml"


def test_dry_run_says_a_state_dict_without_model_class_will_not_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # new-user trial: --dry-run said "yes" to every attack on a torch state_dict asset without
    # model_class, and every one of them then failed in the run
    from bastion import api

    cfg = _torch_project(tmp_path, model_class=False)
    plan = api.preflight(cfg, budget="quick")
    attacks = [i for i in plan.items if i.kind == "attack"]
    assert attacks and all((i.skip_reason or "").startswith("state_dict needs model_class") for i in attacks)
    assert next(i for i in plan.items if i.check_id == "scan").skip_reason is None
    assert run(["assess", "-c", str(cfg), "--dry-run", "--budget", "quick"]) == 0  # governance still runs
    assert "state_dict needs model_class" in capsys.readouterr().err
    # with model_class, or a TorchScript archive, the attacks are planned as before
    for project in (
        _torch_project(tmp_path, model_class=True),
        _torch_project(tmp_path, model_class=False, script=True),
    ):
        planned = [i for i in api.preflight(project, budget="quick").items if i.kind == "attack"]
        assert not any("model_class" in (i.skip_reason or "") for i in planned)
        assert any(i.skip_reason is None for i in planned)


def test_a_model_class_that_cannot_be_imported_is_found_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # new-user trial 30, M2: model_class "mynet:Net" with mynet not on sys.path: --dry-run said
    # "yes" to every attack, then each failed in the run
    from bastion import api
    from bastion.core.errors import ConfigError

    cfg = _torch_project(tmp_path, model_class="mynet_t30:Net")
    attacks = [i for i in api.preflight(cfg, budget="quick").items if i.kind == "attack"]
    want = "model_class module 'mynet_t30' not importable"
    assert attacks and all((i.skip_reason or "").startswith(want) for i in attacks)
    assert "PYTHONPATH" in (attacks[0].skip_reason or "")
    with pytest.raises(ConfigError) as exc:  # the run: one config error, before any check
        api.assess(cfg, budget="quick", store=False)
    assert "model_class problem" in str(exc.value) and want in "; ".join(exc.value.problems)

    # found without importing it: the package's __init__ never runs, for a missing and a
    # present submodule alike; once on sys.path, its attacks are planned
    pkg = tmp_path / "src" / "pkg_t30"
    pkg.mkdir(parents=True)
    marker = tmp_path / "ran"
    (pkg / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (pkg / "net.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    for ref, found in (("pkg_t30.nosuch:Net", False), ("pkg_t30.net:Net", True), ("pkg_t30:Net", True)):
        attacks = [
            i
            for i in api.preflight(_torch_project(tmp_path, model_class=ref), budget="quick").items
            if i.kind == "attack"
        ]
        assert any(i.skip_reason is None for i in attacks) is found, ref
        assert not marker.exists()


def test_a_dataset_that_is_a_pickle_is_a_config_error_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # new-user trial 30, L7: a dataset asset pointing at a pickle was skipped quietly (exit 1);
    # the format is judged by content, not suffix, and nothing is unpickled
    import pickle

    from bastion import api
    from bastion.core.errors import ConfigError

    (tmp_path / "rf.pkl").write_bytes(pickle.dumps({"a": [1, 2]}, protocol=4))
    (tmp_path / "d.csv").write_bytes(pickle.dumps([1.0, 2.0], protocol=2))  # a pickle named .csv
    (tmp_path / "ok.dat").write_text("a,b\n1,2\n")  # a CSV under another suffix
    (tmp_path / "bastion.yaml").write_text(
        """version: 1
assets:
  - {name: pkldata, kind: dataset, path: rf.pkl}
  - {name: okdata, kind: dataset, path: ok.dat}
datasets:
  - {name: d, path: d.csv}
"""
    )
    with pytest.raises(ConfigError) as exc:
        api.preflight(tmp_path / "bastion.yaml", budget="quick")
    text = str(exc.value)
    assert "assets[0].path:" in text and "rf.pkl is a pickle" in text and "never a pickle" in text
    assert "assets[1]" not in text
    assert run(["assess", "-c", str(tmp_path / "bastion.yaml"), "--dry-run"]) == 2
    (tmp_path / "rf.pkl").write_text("a,b\n1,2\n")
    # datasets: entries too
    with pytest.raises(ConfigError, match=r"dataset 'd': .*d\.csv: not a CSV file: a pickle"):
        api.preflight(tmp_path / "bastion.yaml", budget="quick")
    capsys.readouterr()


def test_max_time_skips_what_does_not_fit(
    endpoint: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    monkeypatch.setenv("BASTION_RF_TOKEN", TOKEN)
    cfg = _project(tmp_path, endpoint["url"])
    cls = attacks.get("extraction.surrogate")
    original = cls.run

    def slow(self: Any, ctx: Any) -> Any:
        time.sleep(1.2)
        return original(self, ctx)

    monkeypatch.setattr(cls, "run", slow)
    report = api.assess(cfg, settings=load_settings(budget="quick", max_time=1.0), store=False)
    reasons = [c.reason for c in report.checks if c.status == "skipped"]
    assert "--max-time reached" in reasons
    assert report.run.status == "error"  # an assessment cut short is incomplete: it must not pass CI
    assert any(e.error == "MaxTimeReached" for e in report.errors)
    assert api.exit_code(report, "none") == 2


def test_plan_skips_attacks_on_a_dataset_without_splits(tmp_path: Path) -> None:
    """--dry-run tells the truth: an attack on a dataset that records no split would be skipped."""
    from bastion import api

    np.savez(tmp_path / "d.npz", x=np.zeros((20, 3), dtype=np.float32), y=np.arange(20) % 2)
    (tmp_path / "bastion.yaml").write_text(
        """version: 1
assets:
  - {name: e, kind: endpoint, url: "http://127.0.0.1:9/p", framework: http, num_classes: 2,
     dataset: d, input: {shape: [3]}}
datasets:
  - {name: d, path: d.npz}
"""
    )
    plan = api.plan(tmp_path / "bastion.yaml")
    attacks = [i for i in plan.items if i.kind == "attack" and i.asset == "e"]
    assert attacks and all(i.skip_reason is not None for i in attacks)  # none would run
    # the black-box ones the endpoint could serve say why: no split to draw inputs from
    assert any(
        i.check_id == "evasion.square" and "records no splits" in (i.skip_reason or "") for i in attacks
    )


def test_a_baseline_finding_is_fixed_only_where_its_check_ran_again() -> None:
    """``--only``/``--asset``/a skipped check never turn baseline findings into ``fixed``."""
    import datetime as dt

    from bastion.api._assessing import _apply_waivers_and_baseline
    from bastion.core.config import ProjectConfig
    from bastion.core.findings import Finding, Threat
    from bastion.core.report import Report, ReportFinding, RunInfo
    from bastion.core.results import CheckResult
    from bastion.core.severity import Severity

    def finding(rule: str, asset: str, threat: Threat) -> Finding:
        return Finding(rule_id=rule, severity=Severity.HIGH, threat=threat, title=rule, asset=asset)

    old = [
        finding("evasion.pgd.low-robust-accuracy", "digits", Threat.EVASION),
        finding("governance.controls.no-model-card", "digits", Threat.GOVERNANCE),
        finding("scan.pickle.denied-global", "vendor", Threat.SUPPLY_CHAIN),
        finding("membership.threshold.leak", "tabular", Threat.PRIVACY),
    ]
    base = Report(
        bastion_version="0",
        run=RunInfo(id="b" * 32, status="ok", started=dt.datetime.now(dt.UTC), seconds=1.0),
        findings=[ReportFinding.of(f) for f in old],
    )
    cfg = ProjectConfig.model_validate({"version": 1, "project": {"name": "p"}})
    ran = [
        CheckResult(id="governance.controls", asset="digits", status="ok"),
        CheckResult(id="scan.zip", asset="vendor", status="ok"),  # rescanned, now another format
        CheckResult(id="membership.threshold", asset="tabular", status="skipped", reason="no splits"),
    ]
    out = {f.rule_id: f.state for f in _apply_waivers_and_baseline(cfg, [], base, ran)}
    assert out == {"governance.controls.no-model-card": "fixed", "scan.pickle.denied-global": "fixed"}


def test_findings_outside_a_narrowed_baselines_scope_are_not_in_baseline() -> None:
    """A baseline narrowed by --only/--skip/--asset: only what it covered is new or unchanged."""
    import datetime as dt

    from bastion.api._assessing import _apply_waivers_and_baseline
    from bastion.core.config import ProjectConfig
    from bastion.core.findings import Finding, Threat
    from bastion.core.report import Report, ReportFinding, RunInfo, RunScope
    from bastion.core.results import CheckResult
    from bastion.core.severity import Severity

    def finding(rule: str, asset: str | None) -> Finding:
        return Finding(rule_id=rule, severity=Severity.HIGH, threat=Threat.EVASION, title=rule, asset=asset)

    had = finding("evasion.pgd.low-robust-accuracy", "digits")
    now = [
        had,  # unchanged
        finding("evasion.square.low-robust-accuracy", "digits"),  # in its scope, absent then: new
        finding("evasion.pgd.low-robust-accuracy", "digits.v2"),  # --asset digits covers its versions
        finding("evasion.pgd.low-robust-accuracy", "diagnosis"),  # another asset
        finding("governance.controls.owner-named", "digits"),  # another check
        finding("governance.controls.incident-plan", None),  # project-wide, another check
        finding("scan.pickle.denied-global", "vendor"),  # outside, but the baseline scanned it
    ]

    def base(scope: RunScope | None) -> Report:
        return Report(
            bastion_version="0",
            run=RunInfo(id="b" * 32, status="ok", started=dt.datetime.now(dt.UTC), seconds=1.0, scope=scope),
            checks=[CheckResult(id="scan", asset="vendor", status="ok")],
            findings=[ReportFinding.of(had)],
        )

    cfg = ProjectConfig.model_validate({"version": 1, "project": {"name": "p"}})

    def states(scope: RunScope | None) -> list[str | None]:
        return [f.state for f in _apply_waivers_and_baseline(cfg, now, base(scope), [])]

    narrowed = RunScope(only=["evasion"], asset="digits")
    assert states(narrowed) == [
        "unchanged",
        "new",
        "new",
        "not-in-baseline",
        "not-in-baseline",
        "not-in-baseline",
        "new",
    ]
    assert states(None) == ["unchanged", *["new"] * 6]  # a full baseline covered everything, as before
    assert states(RunScope(skip=["evasion.square"])) == ["unchanged", "not-in-baseline", *["new"] * 5]


def test_a_narrowed_baselines_scan_gate_covers_what_it_would_have_reported(wine_project: Path) -> None:
    """Red-team round 28, F9: the scan gate scans every selected model even under ``--only``; a
    model swapped for a malicious pickle after a ``--only governance`` baseline is ``new`` (it was
    ``not-in-baseline``, no SARIF baselineState), and ``fixed`` once cleaned (it vanished)."""
    model = wine_project / "model.joblib"
    clean = model.read_bytes()
    db = f"sqlite:///{wine_project / 'b.db'}"
    s = load_settings(db_url=db, budget="quick")
    cfg = wine_project / "bastion.yaml"
    first = api.assess(cfg, settings=s, only=["governance"])
    assert not [f for f in first.findings if f.rule_id.startswith("scan.")]
    model.write_bytes(b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x8c\x02id\x85R.")
    swapped = api.assess(cfg, settings=s, only=["governance"], baseline="latest")
    scan = [f for f in swapped.findings if f.rule_id.startswith("scan.")]
    assert scan and {f.state for f in scan} == {"new"}, [(f.rule_id, f.state) for f in scan]
    model.write_bytes(clean)
    cleaned = api.assess(cfg, settings=s, only=["governance"], baseline="latest")
    gone = [f for f in cleaned.findings if f.rule_id.startswith("scan.")]
    assert gone and {f.state for f in gone} == {"fixed"}, [(f.rule_id, f.state) for f in gone]
    assert {f.fingerprint for f in gone} == {f.fingerprint for f in scan}
    # --skip scan turns the gate off: nothing was looked at, nothing is claimed
    model.write_bytes(b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x8c\x02id\x85R.")
    skipped = api.assess(cfg, settings=s, only=["governance"], skip=["scan"])
    model.write_bytes(clean)
    after_skip = api.assess(cfg, settings=s, only=["governance"], skip=["scan"], baseline="latest")
    assert skipped.run.id == after_skip.baseline
    assert not [f for f in after_skip.findings if f.rule_id.startswith("scan.")]


def test_baseline_latest_is_this_projects_run_and_another_projects_run_is_refused(
    wine_project: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Red-team round 28, F3: in a store shared by several projects (one BASTION_DB), ``latest`` took
    the newest run of any project: a finding new to this project was ``unchanged`` because another
    project had it. ``latest`` is this project's newest assess run; another project's run id is
    refused (exit 2); the ``baseline:`` line names the project."""
    import shutil

    other = tmp_path_factory.mktemp("beta") / "beta"
    shutil.copytree(wine_project, other)
    (other / "bastion.yaml").write_text("project: {name: beta}\n" + (other / "bastion.yaml").read_text())
    db = f"sqlite:///{tmp_path_factory.mktemp('shared') / 'shared.db'}"
    s = load_settings(db_url=db, budget="quick")
    cfg = wine_project / "bastion.yaml"
    # this project's first job on a store that holds only another project's runs: no baseline
    beta = api.assess(other / "bastion.yaml", settings=s, only=["governance"])
    first = api.assess(cfg, settings=s, only=["governance"], baseline="latest")
    assert first.baseline is None and {f.state for f in first.findings} == {None}
    api.assess(other / "bastion.yaml", settings=s, only=["governance"])  # the newest run is beta's
    second = api.assess(cfg, settings=s, only=["governance"], baseline="latest")
    assert second.baseline == first.run.id and second.baseline_run is not None
    assert second.baseline_run.project == "project" and {f.state for f in second.findings} == {"unchanged"}
    with pytest.raises(ConfigError, match=f"run {beta.run.id} \\(assess\\) is of project 'beta'"):
        api.assess(cfg, settings=s, only=["governance"], baseline=beta.run.id[:8], store=False)
    common = ["-c", str(cfg), "--db", db, "--only", "governance", "--budget", "quick", "--fail-on", "none"]
    capsys.readouterr()
    assert run(["assess", *common, "-o", str(tmp_path_factory.mktemp("r")), "--baseline", beta.run.id]) == 2
    assert "not an assess run of project 'project'" in capsys.readouterr().err
    assert run(["assess", *common, "-o", str(tmp_path_factory.mktemp("r")), "--baseline", "latest"]) == 0
    line = next(x for x in capsys.readouterr().err.splitlines() if x.startswith("baseline: run "))
    assert line.startswith(f"baseline: run {second.run.id} of ") and ", project project (narrowed: " in line


@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_baseline_is_a_usage_error(
    wine_project: Path, capsys: pytest.CaptureFixture[str], empty: str
) -> None:
    """Red-team round 28, F10: `--baseline "$BASE_RUN"` with the variable unset ran without a
    baseline, silently (every state null). It is a usage error (exit 4); nothing runs."""
    db = wine_project / "b.db"
    out = wine_project / "r"
    args = ["assess", "-c", str(wine_project / "bastion.yaml"), "--db", f"sqlite:///{db}", "-o", str(out)]
    assert run([*args, "--only", "governance", "--baseline", empty]) == 4
    assert "Invalid value for '--baseline': empty; give a run id or 'latest'" in capsys.readouterr().err
    assert not out.exists() and not db.exists()
    with pytest.raises(ConfigError, match="baseline: empty"):
        api.assess(wine_project / "bastion.yaml", baseline=empty, store=False, only=["governance"])


def test_which_scan_and_signature_findings_a_narrowed_baselines_gate_covered() -> None:
    """F9: the gate reports a file's findings only when it is not judged safe, and a signature
    only when it fails: a low finding on a safe file, or a missing signature, was not covered;
    nor is a baseline finding the gate found again (unreported) claimed fixed."""
    import datetime as dt

    from bastion.api._assessing import _apply_waivers_and_baseline
    from bastion.core.config import ProjectConfig
    from bastion.core.findings import Finding, Threat
    from bastion.core.report import AssetRecord, Report, ReportFinding, RunInfo, RunScope
    from bastion.core.results import CheckResult
    from bastion.core.severity import Severity

    def finding(rule: str, severity: Severity = Severity.HIGH, asset: str = "m") -> Finding:
        return Finding(rule_id=rule, severity=severity, threat=Threat.SUPPLY_CHAIN, title=rule, asset=asset)

    def base(scope: RunScope | None, verdict: str = "safe", had: list[Finding] | None = None) -> Report:
        return Report(
            bastion_version="0",
            run=RunInfo(id="b" * 32, status="ok", started=dt.datetime.now(dt.UTC), seconds=1.0, scope=scope),
            assets=[
                AssetRecord(name="m", kind="model", path="m.pkl", scan_verdict=verdict, signature="verified"),
                AssetRecord(name="d", kind="dataset", path="d.csv"),
            ],
            findings=[ReportFinding.of(f) for f in had or []],
        )

    cfg = ProjectConfig.model_validate({"version": 1, "project": {"name": "p"}})
    now = [
        finding("scan.pickle.denied-global"),  # high: a safe file had none, so it is new
        finding("scan.pickle.odd-opcode", Severity.LOW),  # low: a safe file's low findings go unreported
        finding("scan.signature.verification-failed"),  # the gate checked the signature
        finding("scan.signature.unsigned", Severity.LOW),  # only reported where scan was selected
        finding("scan.pickle.denied-global", asset="other"),  # a model the baseline did not scan
    ]

    def states(b: Report) -> list[str | None]:
        return [f.state for f in _apply_waivers_and_baseline(cfg, now, b, [])]

    only = RunScope(only=["governance"])
    assert states(base(only)) == ["new", "not-in-baseline", "new", "not-in-baseline", "not-in-baseline"]
    # a file the baseline reported (not safe): every scan finding of it was covered
    assert states(base(only, "suspicious")) == ["new", "new", "new", "not-in-baseline", "not-in-baseline"]
    # --skip scan: the gate reported nothing
    assert states(base(RunScope(only=["governance"], skip=["scan"]))) == ["not-in-baseline"] * 5

    # fixed: this run's gate scan (clean, unreported) rechecks the baseline's scan findings
    low = finding("scan.pickle.odd-opcode", Severity.LOW)
    had = [finding("scan.pickle.denied-global"), low, finding("scan.signature.verification-failed")]
    gate = [
        CheckResult(id="scan.pickle", asset="m", status="ok", findings=[low]),  # still there, unreported
        CheckResult(id="scan.signature", asset="m", status="ok"),
    ]
    fixed = _apply_waivers_and_baseline(cfg, [], base(None, "malicious", had), [], gate)
    want = ["scan.pickle.denied-global", "scan.signature.verification-failed"]
    assert sorted(f.rule_id for f in fixed) == want
    assert {f.state for f in fixed} == {"fixed"}
    # a scan of the file does not recheck its signature, nor the signature check its format
    only_scan = _apply_waivers_and_baseline(cfg, [], base(None, "malicious", had), [], gate[:1])
    assert [f.rule_id for f in only_scan] == ["scan.pickle.denied-global"]
    only_sig = _apply_waivers_and_baseline(cfg, [], base(None, "malicious", had), [], gate[1:])
    assert [f.rule_id for f in only_sig] == ["scan.signature.verification-failed"]


def test_baseline_latest_after_a_narrowed_run_names_it_and_compares_within_its_scope(
    wine_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """New-user trial: --baseline latest after `--only evasion --asset digits` called every finding
    "new" and never named the baseline run."""
    cfg = wine_project / "bastion.yaml"
    cfg.write_text(cfg.read_text().replace("dataset: wine,", "dataset: wine, owner: ops,"))
    db = f"sqlite:///{wine_project / 'b.db'}"
    common = [
        "-c",
        str(cfg),
        "--db",
        db,
        "--fail-on",
        "none",
        "--budget",
        "quick",
        "-o",
        str(wine_project / "r"),
    ]
    assert run(["assess", *common, "--only", "governance", "--asset", "triage"]) == 0
    narrowed = json.loads((wine_project / "r" / "report.json").read_text())
    capsys.readouterr()
    cfg.write_text(cfg.read_text().replace("owner: ops,", ""))  # a new finding within that scope
    assert run(["assess", *common, "--baseline", "latest"]) == 0
    err = capsys.readouterr().err
    rep = json.loads((wine_project / "r" / "report.json").read_text())
    assert rep["baseline"] == narrowed["run"]["id"]
    assert rep["baseline_run"]["scope"] == {"only": ["governance"], "skip": [], "asset": "triage"}
    states = {(f["rule_id"], f["asset"]): f["state"] for f in rep["findings"]}
    assert states[("governance.controls.owner-named", "triage")] == "new"
    assert states[("governance.controls.hash-pinned", "triage")] == "unchanged"
    assert states[("governance.data-sources.unregistered", "wine")] == "not-in-baseline"  # --asset triage
    assert not any(s == "new" for (rule, asset), s in states.items() if asset == "wine")
    line = next(x for x in err.splitlines() if x.startswith("baseline: run "))
    outside = sum(1 for s in states.values() if s == "not-in-baseline")
    assert line.startswith(f"baseline: run {narrowed['run']['id']} of ")
    assert "(narrowed: --only governance --asset triage)" in line
    assert "this run's scope differs (a full run): findings are compared only where both runs checked" in line
    assert f"{outside} finding(s) outside the baseline's scope are 'not-in-baseline', not 'new'" in line


def test_a_framework_that_does_not_read_the_scanned_format_is_found_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # new-user trial 30, L6: framework: sklearn on a TorchScript zip reached the loader and failed
    # with an obscure unpickling error
    from bastion import api
    from bastion.core.errors import ConfigError

    cfg = _torch_project(tmp_path, model_class=False, script=True)
    cfg.write_text(cfg.read_text().replace("framework: torch", "framework: sklearn"))
    want = "framework sklearn cannot load m.pt: the scanner found a torchscript file"
    attacks = [i for i in api.preflight(cfg, budget="quick").items if i.kind == "attack"]
    assert attacks and all(i.skip_reason for i in attacks)  # none runs (some need gradients anyway)
    assert any((i.skip_reason or "").startswith(want) for i in attacks)
    assert run(["assess", "-c", str(cfg), "--dry-run", "--budget", "quick"]) == 0
    assert want in capsys.readouterr().err
    with pytest.raises(ConfigError) as exc:  # the run: one config error, before any check
        api.assess(cfg, budget="quick", store=False)
    assert "framework/format problem" in str(exc.value)
    assert exc.value.problems == [
        f"asset m: {want}, and the sklearn loader reads joblib, pickle, skops (set framework to the file's)"
    ]
    db = f"sqlite:///{tmp_path / 'b.db'}"
    assert run(["assess", "-c", str(cfg), "--budget", "quick", "--db", db, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "asset m:" in err and "torchscript" in err
    # the framework that reads it: planned as before
    cfg.write_text(cfg.read_text().replace("framework: sklearn", "framework: torch"))
    planned = [i for i in api.preflight(cfg, budget="quick").items if i.kind == "attack"]
    assert any(i.skip_reason is None for i in planned)


def _planted_version(proj: Path, path: str, details: dict[str, Any] | None = None) -> str:
    """A store beside ``proj`` recording version 2 of model ``m`` at ``path`` (as a planted row would)."""
    from bastion.store import Store
    from bastion.store.versions import add_version

    db = f"sqlite:///{proj / 'store.db'}"
    with Store.open(db) as st:
        add_version(
            st,
            asset="m",
            path=path,
            sha256="0" * 64,
            procedure="defend.dp-train",
            details=details or {},
            datasets=[],
        )
    return db


@pytest.mark.parametrize("where", ["absolute", "dotdot", "link"])
def test_a_recorded_version_outside_the_projects_models_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """Red-team round 31, 04: a ``model_versions`` row with an absolute path (or ``..``, or a link
    out of ``.bastion/models``) made assess load a file outside the project as ``m.v2`` and report
    the row's procedure and ε as its history."""
    proj = tmp_path / "repo"
    (proj / ".bastion" / "models").mkdir(parents=True)
    (proj / "m.pkl").write_bytes(b"\x80\x04N.")
    (proj / "bastion.yaml").write_text("version: 1\nassets:\n  - {name: m, path: m.pkl}\n")
    outside = tmp_path / "not-in-project.pkl"
    outside.write_bytes(b"\x80\x04N.")
    path = {
        "absolute": str(outside),
        "dotdot": ".bastion/models/../../../not-in-project.pkl",
        "link": ".bastion/models/m-v2.pkl",
    }[where]
    if where == "link":
        (proj / path).symlink_to(outside)
    db = _planted_version(proj, path, {"epsilon": 0.1, "delta": 1e-5})
    argv = ["assess", "-c", str(proj / "bastion.yaml"), "--only", "scan", "--db", db, "--fail-on", "none"]
    for extra in (
        ["-o", str(tmp_path / "rep")],
        ["--dry-run"],
        ["--asset", "m.v2", "-o", str(tmp_path / "rep")],
    ):
        assert run([*argv, *extra]) == 2
        err = capsys.readouterr().err
        assert "1 recorded model version(s) refused" in err and "nothing was run" in err
        assert f"m.v2: the store records its file as {path!r}, outside {proj}/.bastion/models/" in err
    assert not (tmp_path / "rep").exists()


def test_a_recorded_version_keeps_its_models_framework_and_class(tmp_path: Path) -> None:
    """A row's ``details`` cannot change the version's framework or class (only a distilled
    student names one of Bastion's own classes); its file under ``.bastion/models`` is assessed."""
    from bastion.api._planning import _version_asset, version_problem
    from bastion.core.config import Asset
    from bastion.store.versions import ModelVersion

    a = Asset(
        name="m",
        kind="model",
        path="m.pt",
        framework="torch",
        model_class="pkg.mod:Net",
        model_kwargs={"h": 4},
    )

    def version(details: dict[str, Any], path: str = ".bastion/models/m-v2.pt") -> ModelVersion:
        return ModelVersion(
            id="x",
            asset="m",
            version=2,
            parent_id=None,
            created="2026-01-01T00:00:00Z",
            path=path,
            sha256="0" * 64,
            procedure="defend.pgd-at",
            details=details,
            datasets=[],
        )

    planted = version(
        {"framework": "sklearn", "model_class": "os:system", "model_kwargs": {"a": 1}, "format": "joblib"}
    )
    va = _version_asset(a, planted)
    assert (va.name, va.framework, va.model_class, va.model_kwargs) == (
        "m.v2",
        "torch",
        "pkg.mod:Net",
        {"h": 4},
    )
    assert va.format == a.format and version_problem(a, planted, tmp_path) is None
    student = "bastion.defend.students:StudentMLP"
    vs = _version_asset(a, version({"model_class": student, "model_kwargs": {"n_in": 3}, "format": "torch"}))
    assert (vs.model_class, vs.model_kwargs, vs.format) == (student, {"n_in": 3}, "torch")
    assert "records no file" in str(version_problem(a, version({}, path=""), tmp_path))


def test_harden_writes_versions_only_into_the_projects_own_models_folder(tmp_path: Path) -> None:
    """assess takes versions only from ``<project>/.bastion/models``: harden refuses to write
    through a link out of it (the version would be written elsewhere, then refused)."""
    from bastion.api._hardening import _check_own_folder
    from bastion.api._planning import VERSIONS_DIR

    proj = tmp_path.resolve() / "repo"
    (proj / ".bastion").mkdir(parents=True)
    _check_own_folder(proj, VERSIONS_DIR)  # not there yet: harden creates it
    (proj / ".bastion" / "models").symlink_to(tmp_path)
    with pytest.raises(ConfigError, match="models: reached through a symbolic link"):
        _check_own_folder(proj, VERSIONS_DIR)
