"""The Python API at the package root: ``bastion.scan`` and ``bastion.assess`` whatever was imported first."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_scan_callable_twice_and_after_subpackage_import(tmp_path: Path) -> None:
    code = f"""
import bastion, bastion.scan.engine, bastion.assess.metrics as m
p = {str(tmp_path / "m.pkl")!r}
open(p, "wb").write({pickle.dumps({"a": [1, 2]}, protocol=4)!r})
r1 = bastion.scan(p)
r2 = bastion.scan([p])
assert r1.files[0].verdict.value == r2.files[0].verdict.value == "safe"
assert callable(bastion.assess) and callable(m.roc_auc)
from bastion.assess import metrics
assert metrics is m
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_scan_json_validates_against_published_schema(tmp_path: Path) -> None:
    import bastion
    from bastion.report import scan_to_json

    (tmp_path / "m.pkl").write_bytes(pickle.dumps([1.0, 2.0], protocol=2))
    doc = json.loads(scan_to_json(bastion.scan(tmp_path)))
    schema = json.loads((ROOT / "docs" / "scan.schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert doc["bastion_version"] == bastion.__version__


def test_build_clinic_takes_a_str_or_any_path_like(tmp_path: Path) -> None:
    # red-team round 22 F10: build_clinic("/some/dir") crashed with a TypeError ('str' / 'str')
    import os

    import pytest

    from bastion.core.errors import ConfigError
    from bastion.examples.clinic import build_clinic
    from bastion.examples.clinic_poisoned import build_poisoned_clinic

    built = tmp_path / "clinic"
    built.mkdir()
    (built / "bastion.yaml").write_text("version: 1\n")  # already built: returned as it is

    class Where(os.PathLike[str]):
        def __fspath__(self) -> str:
            return str(built)

    assert build_clinic(str(built)) == built / "bastion.yaml"
    assert build_clinic(Where()) == built / "bastion.yaml"
    (tmp_path / "a-file").write_text("x")
    for build in (build_clinic, build_poisoned_clinic):
        with pytest.raises(ConfigError, match="exists and is not a folder"):
            build(str(tmp_path / "a-file"))


def test_assess_takes_a_budget_keyword(tmp_path: Path) -> None:
    # new-user trial: bastion.assess(..., budget="quick") was a TypeError
    import bastion
    from bastion.core.errors import ConfigError
    from bastion.core.settings import load_settings

    with pytest.raises(ConfigError, match="budget 'fast'"):
        bastion.assess(tmp_path / "bastion.yaml", budget="fast")
    with pytest.raises(ConfigError, match="not both"):
        bastion.assess(tmp_path / "bastion.yaml", budget="quick", settings=load_settings())
