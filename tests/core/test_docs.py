"""The committed docs stay true to the code: example config, JSON schemas, field reference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from bastion.core.config import ProjectConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
GEN = ROOT / "scripts" / "gen_schemas.py"


def test_example_config_is_valid_and_complete() -> None:
    cfg = load_config(DOCS / "bastion.example.yaml")
    assert {a.kind for a in cfg.assets} == {"model", "dataset", "endpoint"}
    assert cfg.waivers and cfg.scan.allow and cfg.checks
    # "complete": every field of every config model is set somewhere in the example.
    unset = _unset_fields(ProjectConfig, cfg)
    assert not unset, f"docs/bastion.example.yaml never sets: {sorted(unset)}"
    # every check it configures exists (what ``bastion assess`` checks before anything else)
    from bastion.api._planning import PLANNED_KINDS, REGISTRIES, load_plugins

    load_plugins()
    known = {pid for kind in PLANNED_KINDS for pid in REGISTRIES[kind]}
    assert set(cfg.checks) <= known, sorted(set(cfg.checks) - known)


def _unset_fields(model_cls: type[BaseModel], root: ProjectConfig) -> set[str]:
    seen: dict[str, set[str]] = {}

    def walk(obj: object) -> None:
        if isinstance(obj, BaseModel):
            seen.setdefault(type(obj).__name__, set()).update(obj.model_fields_set)
            for name in type(obj).model_fields:
                walk(getattr(obj, name))
        elif isinstance(obj, list | tuple):
            for item in obj:
                walk(item)
        elif isinstance(obj, dict):
            for item in obj.values():
                walk(item)

    walk(root)
    missing = set()
    for cls_name, fields in seen.items():
        cls = _model_classes()[cls_name]
        missing |= {f"{cls_name}.{f}" for f in cls.model_fields if f not in fields}
    missing |= {f"{name} (never used)" for name in _model_classes() if name not in seen}
    return missing


def _model_classes() -> dict[str, type[BaseModel]]:
    out: dict[str, type[BaseModel]] = {}

    def visit(cls: type[BaseModel]) -> None:
        if cls.__name__ in out:
            return
        out[cls.__name__] = cls
        for field in cls.model_fields.values():
            for sub in _models_in(field.annotation):
                visit(sub)

    visit(ProjectConfig)
    return out


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


def test_example_config_validates_against_the_published_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((DOCS / "config.schema.json").read_text(encoding="utf-8"))
    data = yaml.safe_load((DOCS / "bastion.example.yaml").read_text(encoding="utf-8"))
    # YAML reads `expires: 2030-09-30` as a date; JSON (and the schema) carry it as a string.
    data = json.loads(json.dumps(data, default=str))
    jsonschema.validate(data, schema)
    bad = {**data, "assets": [{**data["assets"][0], "colour": "blue"}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_committed_schemas_match_the_models() -> None:
    out = subprocess.run(
        [sys.executable, str(GEN), "--check"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr + "\n(run `make schemas` and commit docs/*.schema.json)"


def test_schema_check_detects_drift(tmp_path: Path) -> None:
    for name in ("config.schema.json", "report.schema.json", "scan.schema.json"):
        (tmp_path / name).write_text((DOCS / name).read_text(encoding="utf-8"), encoding="utf-8")
    args = [sys.executable, str(GEN), "--check", "--out", str(tmp_path)]
    assert subprocess.run(args, capture_output=True, timeout=120).returncode == 0
    (tmp_path / "report.schema.json").write_text("{}\n", encoding="utf-8")
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "report.schema.json" in out.stderr


def test_config_reference_documents_every_field() -> None:
    text = (DOCS / "config.md").read_text(encoding="utf-8")
    undocumented = sorted(
        f"{cls_name}.{field}"
        for cls_name, cls in _model_classes().items()
        for field in cls.model_fields
        if f"`{field}`" not in text
    )
    assert not undocumented, f"docs/config.md does not mention: {undocumented}"


def test_exit_code_doc_has_every_code() -> None:
    text = (DOCS / "exit-codes.md").read_text(encoding="utf-8")
    for code in range(5):
        assert f"\n| {code} |" in text
    assert "`--fail-on none` never returns 1" in text


def test_every_bastion_yaml_in_the_docs_parses() -> None:
    """Each ```yaml block of the docs that is a whole bastion.yaml (``version: 1`` + ``assets:``) parses."""
    import re

    import yaml

    from bastion.core.config import parse_config

    found = 0
    for md in sorted(DOCS.glob("*.md")):
        for block in re.findall(r"```yaml\n(.*?)```", md.read_text(encoding="utf-8"), flags=re.S):
            if not block.startswith("version: 1") or "\nassets:" not in block:
                continue  # a fragment, or a guard.yaml
            found += 1
            try:
                parse_config(yaml.safe_load(block))
            except Exception as exc:  # the message names the doc and the problem
                raise AssertionError(f"{md.name}: {exc}") from None
    assert found >= 1
