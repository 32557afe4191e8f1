"""``governance.runtime``: guard incidents (written by the guard itself) become assess findings."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.guard.helpers import SoftmaxTarget, make_config

from bastion.core.budget import Budget
from bastion.core.check import CheckContext
from bastion.core.config import Asset, ProjectConfig
from bastion.core.findings import Threat
from bastion.core.severity import Severity
from bastion.governance.runtime import RuntimeEvidence, RuntimeParams
from bastion.guard.access import new_key
from bastion.guard.app import Guard
from bastion.guard.canary import canary_hash
from bastion.guard.profile import fit_profile
from bastion.store.audit import AuditLog


def _ctx(tmp_path: Path, name: str, facts: dict[str, dict[str, Any]], days: int = 30) -> CheckContext:
    asset = Asset(name=name, path="model.pt")
    cfg = ProjectConfig(version=1, assets=[asset])
    return CheckContext(
        asset=asset,
        config=cfg,
        base_dir=tmp_path,
        budget=Budget(),
        params=RuntimeParams(days=days),
        thresholds=[],
        facts=facts,
    )


@pytest.fixture()
def guarded_store(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> tuple[str, np.ndarray]:
    """A store holding the incidents a real guard raised: a thief and a canary hit."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    caplog.set_level(logging.ERROR, logger="bastion.guard")
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    clf = LogisticRegression(max_iter=200).fit(x[:600], d.target[:600])
    target = SoftmaxTarget(clf.coef_.T.astype(np.float64), clf.intercept_.astype(np.float64))
    prof = fit_profile(x[:600], num_classes=10, probs=target.predict_proba(x[:600]), value_range=(0.0, 1.0))
    keys = {k: new_key(k, ["digits"]) for k in ("thief", "trap")}
    trap_row = x[700]
    cfg = make_config(keys, canaries=[{"id": "patient-0", "sha256": canary_hash(trap_row)}])
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = AuditLog.open(url)
    now = dt.datetime.now(dt.UTC).timestamp()
    g = Guard(cfg, target=target, store=store, profile=prof, clock=lambda: now)
    hdr = {"Authorization": f"Bearer {keys['thief'][0]}"}
    for row in x[800:900]:
        g.handle("digits", hdr, json.dumps({"instances": [row.tolist()]}).encode())
    hdr = {"Authorization": f"Bearer {keys['trap'][0]}"}
    g.handle("digits", hdr, json.dumps({"instances": [trap_row.tolist()]}).encode())
    # an old incident outside the window and one of another asset
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=90)
    for asset, created in (("digits", old), ("triage", dt.datetime.now(dt.UTC))):
        store.add_incident(
            rule_id="guard.anomaly.ood-rate",
            severity="medium",
            asset=asset,
            key_id=None,
            atlas=["AML.T0043"],
            details={"evidence": {"ood_rate": 0.5}},
            created=created,
        )
    store.close()
    return url, trap_row


def test_guard_incidents_become_findings(tmp_path: Path, guarded_store: tuple[str, np.ndarray]) -> None:
    url, trap_row = guarded_store
    check = RuntimeEvidence()
    ctx = _ctx(tmp_path, "digits", {"__run__": {"db_url": url}})
    assert check.applicable(ctx) is None
    res = check.run(ctx)
    by_rule = {f.rule_id: f for f in res.findings}
    assert "governance.runtime.guard.extraction.class-coverage" in by_rule
    canary = by_rule["governance.runtime.guard.canary.hit"]
    assert canary.severity == Severity.CRITICAL and canary.threat == Threat.RUNTIME
    assert canary.evidence["key_ids"] == ["trap"] and canary.evidence["incidents"] == 1
    assert canary.atlas and all(a.startswith("AML.") for a in canary.atlas)
    cov = by_rule["governance.runtime.guard.extraction.class-coverage"]
    assert cov.severity == Severity.HIGH and cov.evidence["key_ids"] == ["thief"]
    assert cov.evidence["first_seen"] <= cov.evidence["last_seen"]
    assert "class_coverage" in cov.evidence["latest_evidence"]
    # the 90-day-old incident is outside the window; another asset's is not this asset's
    assert "governance.runtime.guard.anomaly.ood-rate" not in by_rule
    assert res.metrics["runtime_keys_flagged"] == 2.0
    assert res.metrics["runtime_incidents_open"] == float(sum(f.evidence["incidents"] for f in res.findings))
    # never raw inputs: no value of the trap row appears in any finding
    blob = json.dumps([f.model_dump(mode="json") for f in res.findings])
    assert json.dumps(trap_row.tolist())[1:40] not in blob
    wide = check.run(_ctx(tmp_path, "digits", {"__run__": {"db_url": url}}, days=365))
    assert "governance.runtime.guard.anomaly.ood-rate" in {f.rule_id for f in wide.findings}


def test_skipped_without_store_and_empty_on_fresh_store(tmp_path: Path) -> None:
    check = RuntimeEvidence()
    reason = check.applicable(_ctx(tmp_path, "digits", {}))
    assert reason is not None and "db_url" in reason
    for name in ("missing.db", "empty.db"):
        if name == "empty.db":
            import sqlite3

            sqlite3.connect(tmp_path / name).close()
        url = f"sqlite:///{tmp_path / name}"
        res = check.run(_ctx(tmp_path, "digits", {"__run__": {"db_url": url}}))
        assert res.findings == [] and res.metrics["runtime_incidents_open"] == 0.0
        assert "incidents table" in res.notes["runtime_incidents_open"]
    assert not (tmp_path / "missing.db").exists()  # reading never creates a store
