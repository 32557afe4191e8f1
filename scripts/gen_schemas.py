#!/usr/bin/env python3
"""Generate the JSON Schemas in docs/ from the pydantic models in bastion.core.

    python scripts/gen_schemas.py          # write docs/*.schema.json
    python scripts/gen_schemas.py --check  # exit 1 if a committed schema differs (CI drift check)

The files are the published contracts of ``bastion.yaml`` (``config.schema.json``), of
``report.json`` (``report.schema.json``) and of ``bastion scan --format json``
(``scan.schema.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _config() -> dict[str, Any]:
    from bastion.core.config import _OPS, ProjectConfig

    schema = ProjectConfig.model_json_schema()
    # Threshold.op also accepts the symbols (<, <=, ...): a before-validator maps them, which
    # pydantic's schema cannot see. Publish them so editors do not flag valid files.
    op = schema["$defs"]["Threshold"]["properties"]["op"]
    op["enum"] = [*op["enum"], *(sym for sym in _OPS if sym not in op["enum"])]
    return schema


def _report() -> dict[str, Any]:
    from bastion.core.report import Report

    return Report.model_json_schema()


def _scan() -> dict[str, Any]:
    from bastion.core.scanning import ScanResult

    return ScanResult.model_json_schema()


SCHEMAS: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
    "config.schema.json": ("bastion.yaml project configuration", _config),
    "report.schema.json": ("Bastion assessment report (report.json)", _report),
    "scan.schema.json": ("Bastion scan result (bastion scan --format json)", _scan),
}


def render(name: str) -> str:
    """The text of schema file ``name``: dialect and title first, 2-space indent, final newline."""
    title, build = SCHEMAS[name]
    schema = build()
    doc = {"$schema": DIALECT, **schema}
    doc["title"] = schema.get("title", title)
    doc["description"] = title if "description" not in schema else f"{title}. {schema['description']}"
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) every schema; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed schema is out of date")
    parser.add_argument("--out", type=Path, default=DOCS, help="folder of the schema files (default: docs/)")
    args = parser.parse_args(argv)
    stale = []
    for name in SCHEMAS:
        path = args.out / name
        text = render(name)
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    if stale:
        print(
            f"out of date: {', '.join(stale)}; run `make schemas` and commit the result",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
