"""Pure renderers of scans and assessment reports: JSON, SARIF 2.1.0, HTML, Markdown, Rich tables.

Every function takes a model from :mod:`bastion.core` and returns text or Rich renderables;
nothing here prints, writes files or touches the network. Each renderer's module loads on first
use, so ``bastion scan`` does not pay for Jinja2 and the HTML template.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion.report.html import report_to_html
    from bastion.report.json_out import report_to_json, scan_to_json
    from bastion.report.markdown import report_to_markdown
    from bastion.report.sarif import report_to_sarif, scan_to_sarif
    from bastion.report.table import assessment_summary, findings_table, scan_table

_WHERE = {
    "report_to_html": "bastion.report.html",
    "report_to_json": "bastion.report.json_out",
    "scan_to_json": "bastion.report.json_out",
    "report_to_markdown": "bastion.report.markdown",
    "report_to_sarif": "bastion.report.sarif",
    "scan_to_sarif": "bastion.report.sarif",
    "assessment_summary": "bastion.report.table",
    "findings_table": "bastion.report.table",
    "scan_table": "bastion.report.table",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'bastion.report' has no attribute {name!r}")


__all__ = [
    "assessment_summary",
    "findings_table",
    "report_to_html",
    "report_to_json",
    "report_to_markdown",
    "report_to_sarif",
    "scan_table",
    "scan_to_json",
    "scan_to_sarif",
]
