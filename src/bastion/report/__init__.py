"""Pure renderers of scans and assessment reports: JSON, SARIF 2.1.0, HTML, Markdown, Rich tables.

Every function takes a model from :mod:`bastion.core` and returns text or Rich renderables;
nothing here prints, writes files or touches the network.
"""

from bastion.report.html import report_to_html
from bastion.report.json_out import report_to_json, scan_to_json
from bastion.report.markdown import report_to_markdown
from bastion.report.sarif import report_to_sarif, scan_to_sarif
from bastion.report.table import assessment_summary, findings_table, scan_table

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
