"""``-j N`` parallel scanning, ``--rules FILE`` and the CLI's new options."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.core.errors import ConfigError
from bastion.core.scanning import Verdict
from bastion.scan import scan_paths

from ._factories import global_call, os_system_payload

DENY = """
version = "2.0.0"
kind = "deny"

[[rule]]
id = "deny.corp-exporter"
module = "corp.exporter"
name = "*"
severity = "high"
rationale = "our own exporter shells out"
reference = "https://example.invalid/corp"
"""

ALLOW_OS = """
version = "1"
kind = "allow"

[[rule]]
id = "allow.everything-os"
module = ["posix", "os"]
name = "*"
rationale = "an attempt to allow a denied callable"
reference = "x"
"""


def test_rules_file_adds_deny_and_cannot_allow_denied(tmp_path: Path) -> None:
    m = tmp_path / "m.pkl"
    m.write_bytes(global_call("corp.exporter", "run"))
    assert scan_paths([m]).files[0].verdict == Verdict.SUSPICIOUS
    deny = tmp_path / "deny.toml"
    deny.write_text(DENY)
    fr = scan_paths([m], rules=[deny]).files[0]
    assert fr.verdict == Verdict.MALICIOUS
    assert fr.findings[0].evidence["rule"] == "deny.corp-exporter"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(os_system_payload(tmp_path / "never"))
    allow = tmp_path / "allow.toml"
    allow.write_text(ALLOW_OS)
    assert scan_paths([evil], rules=[allow]).files[0].verdict == Verdict.MALICIOUS


def test_bad_rules_file_is_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "deny"\nversion = "1"\n[[rule]]\nid = "x"\n')
    with pytest.raises(ConfigError):
        scan_paths([tmp_path], rules=[bad])
    with pytest.raises(ConfigError):
        scan_paths([tmp_path], rules=[tmp_path / "missing.toml"])


def test_parallel_scan_matches_serial_in_sorted_order(tmp_path: Path) -> None:
    for i in range(12):
        data = os_system_payload(tmp_path / "never") if i % 5 == 0 else pickle.dumps({"i": i})
        (tmp_path / f"m{i:02d}.pkl").write_bytes(data)
    (tmp_path / "notes.txt").write_text("hello")
    seen: list[int] = []
    serial = scan_paths([tmp_path], jobs=1)
    par = scan_paths([tmp_path], jobs=2, progress=lambda done, total, _p: seen.append(done))
    assert [f.model_dump() for f in par.files] == [f.model_dump() for f in serial.files]
    assert [f.path for f in par.files] == sorted(f.path for f in par.files)
    assert seen == list(range(1, 14))
    assert sum(f.verdict == Verdict.MALICIOUS for f in par.files) == 3


def test_cli_scan_jobs_and_rules(tmp_path: Path) -> None:
    from bastion.cli.main import app

    (tmp_path / "m.pkl").write_bytes(global_call("corp.exporter", "run"))
    deny = tmp_path.parent / f"{tmp_path.name}-deny.toml"
    deny.write_text(DENY)
    res = CliRunner().invoke(app, ["scan", str(tmp_path), "-j", "2", "--rules", str(deny), "-f", "json"])
    assert res.exit_code == 1, res.output
    assert '"deny.corp-exporter"' in res.stdout
