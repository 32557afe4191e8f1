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


def _keras_file(path: Path) -> None:
    import json
    import zipfile

    layers = [{"class_name": "Dense", "config": {"units": 2}}]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {"layers": layers}}))
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))


def test_a_keras_model_is_scanned_and_governed_and_its_attacks_say_why_they_skip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # trial 30, L6: Bastion has no Keras loader. With no framework the plan said "needs
    # probabilities; net (model) offers nothing" and the run errored "cannot tell its framework;
    # set framework (torch, sklearn, onnx, http)"; with framework: torch it was told to "set
    # framework to the file's"; `framework: keras` got only pydantic's list of choices
    from bastion import api
    from bastion.cli.main import run
    from bastion.core.errors import ConfigError

    _keras_file(tmp_path / "net.keras")
    cfg = _project(tmp_path, "net.keras")
    why = (
        "net.keras is a Keras model (the scanner found a keras file) and Bastion has no Keras loader: "
        "it is scanned and governed, not attacked"
    )
    attacks = [i for i in api.preflight(cfg, budget="quick").items if i.kind == "attack"]
    assert attacks and all((i.skip_reason or "").startswith(why) for i in attacks)
    report = api.assess(cfg, budget="quick", only=["evasion", "scan"], store=False)
    assert not report.errors
    skipped = {c.id: c.reason for c in report.checks if c.status == "skipped"}
    assert skipped and all((r or "").startswith(why) for r in skipped.values())
    assert any(c.id.startswith("scan.") and c.status == "ok" for c in report.checks)  # still scanned
    # a framework named that cannot read it: one config error naming the format, before any check
    cfg.write_text(cfg.read_text().replace("input:", "framework: torch, input:"))
    with pytest.raises(ConfigError) as exc:
        api.assess(cfg, budget="quick", store=False)
    assert exc.value.problems == [
        "asset m: framework torch cannot load net.keras: the scanner found a keras file (a Keras model), "
        "and Bastion has no Keras loader (leave framework out to have it scanned and governed without "
        "attacks, or export it to ONNX, e.g. with tf2onnx, and set framework: onnx)"
    ]
    # a framework Bastion has no loader for: named as such
    cfg.write_text(cfg.read_text().replace("framework: torch", "framework: keras"))
    assert run(["assess", "-c", str(cfg), "--dry-run"]) == 2
    assert "assets[0].framework: 'keras': Bastion has no Keras loader; leave framework out" in (
        capsys.readouterr().err
    )
