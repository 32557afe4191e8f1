"""A model file is loaded only if scanned safe, whatever its framework; formats no loader reads."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.marker}",))


def _project(root: Path, model: str, extra: str = "") -> Path:
    rng = np.random.default_rng(0)
    np.savez(root / "d.npz", x=rng.random((30, 4)).astype(np.float32), y=rng.integers(0, 2, 30))
    np.savez(root / "d_splits.npz", train=np.arange(20), test=np.arange(20, 30))
    cfg = root / "bastion.yaml"
    cfg.write_text(
        "version: 1\nassets:\n"
        f"  - {{name: m, path: {model}, num_classes: 2, dataset: d, input: {{shape: [4]}}{extra}}}\n"
        "datasets:\n  - {name: d, path: d.npz, features: x, label: y, splits_file: d_splits.npz}\n"
    )
    return cfg


def test_a_malicious_model_without_a_framework_is_never_loaded(tmp_path: Path) -> None:
    # With `framework:` left out, the loader picks one by the file's suffix (.pkl: scikit-learn);
    # assess gated only the frameworks it named, so this pickle was unpickled and its payload ran
    # although the scanner had judged it malicious.
    from bastion import api
    from bastion.core.errors import IntegrityError

    marker = tmp_path / "PWNED"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    cfg = _project(tmp_path, "evil.pkl")
    planned = {
        i.check_id: i.skip_reason for i in api.preflight(cfg, budget="quick").items if i.kind == "attack"
    }
    assert (
        planned["evasion.hopskipjump"] == "the scanner judges the model file malicious: it will not be loaded"
    )
    report = api.assess(cfg, budget="quick", only=["evasion.hopskipjump", "extraction"], store=False)
    assert not marker.exists()
    reasons = {c.id: c.reason for c in report.checks if c.status == "skipped"}
    assert reasons["evasion.hopskipjump"] == "not loaded: the scanner judged the file malicious"
    assert not report.errors
    with pytest.raises(IntegrityError, match="judged it malicious; not loading it"):
        api.guard_fit(cfg, asset="m", out=tmp_path / "guard")
    assert not marker.exists()
