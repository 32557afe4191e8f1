"""``bastion assess``'s "Gating findings" table lists only what trips ``--fail-on`` (trial 33, 14)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.keys import write_ec_keypair

from bastion.cli.main import run


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Findings of three severities: critical (os.system), medium (unknown global), low (unsigned)."""
    (tmp_path / "evil.pkl").write_bytes(b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00true\x85R.")
    (tmp_path / "unk.pkl").write_bytes(b"\x80\x02cmypkg.layers\nThing\nq\x00)\x81q\x01.")
    write_ec_keypair(None, tmp_path / "pub.pem")
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(
        "version: 1\nsigning: {public_key: pub.pem, require: false}\nassets:\n"
        "  - {name: evil, path: evil.pkl}\n  - {name: unk, path: unk.pkl}\n"
    )
    return cfg


def _assess(cfg: Path, gate: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    pytest.importorskip("model_signing", reason="the low findings need bastion-ml[signing]")
    code = run(
        ["assess", "-c", str(cfg), "-o", str(cfg.parent / f"rep-{gate}"), "--only", "scan", "--fail-on", gate]
    )
    return code, capsys.readouterr().err


def test_assess_fail_on_critical_lists_only_the_critical_rows(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _assess(project, "critical", capsys)
    assert code == 1, err
    table = err[err.index("Gating findings") : err.index("Totals:")]
    assert "Gating findings (at or above critical)" in table
    assert "scan.pickle.denied-global" in table
    assert "scan.pickle.unknown-global" not in table and "scan.signature.unsigned" not in table
    assert "3 finding(s) below critical not listed: see report.json" in " ".join(table.split())
    assert "Totals: critical 1 high 0 medium 1 low 2 info 0" in err


def test_assess_fail_on_none_lists_no_row_and_says_why(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _assess(project, "none", capsys)
    assert code == 0, err
    flat = " ".join(err.split())
    assert "Gating findings: none (--fail-on none gates nothing; 4 finding(s): see report.json)" in flat
    assert "┃ severity ┃" not in err and "scan.pickle.denied-global" not in err
