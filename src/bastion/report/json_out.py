"""JSON renderers: a scan's machine output and the assessment report's ``report.json``."""

from __future__ import annotations

import math
from json.encoder import encode_basestring as _encode_str  # C: a JSON string, non-ASCII kept
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Annotations only: ``bastion scan -f json`` then never imports the report models (~20 ms).
    from bastion.core._scan_records import ScanRecords
    from bastion.core.report import Report
    from bastion.core.scanning import ScanResult


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN or infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def scan_to_dict(result: ScanResult | ScanRecords, *, version: str | None = None) -> dict[str, Any]:
    """A scan (the model, or the scanner's plain records) as a JSON-ready dict (see :func:`scan_to_json`)."""
    if not (version or result.bastion_version):
        from bastion.report._common import bastion_version

        version = bastion_version()
    files = []
    for fr in result.files:
        files.append(
            {
                "path": fr.path,
                "format": fr.format,
                "verdict": fr.verdict.value,
                "sha256": fr.sha256,
                "size": fr.size,
                "reason": fr.reason,
                "findings": [f.model_dump(mode="json") for f in fr.findings],
                "globals": list(fr.globals),
            }
        )
    return {
        "schema_version": result.schema_version,
        "bastion_version": version or result.bastion_version,
        "files": files,
    }


def scan_to_json(result: ScanResult | ScanRecords, *, version: str | None = None) -> str:
    """Render a scan as JSON, the machine output of ``bastion scan --format json``.

    The document is ``{"schema_version", "bastion_version", "files": [...]}``; each file has
    ``path, format, verdict, sha256, size, reason, findings, globals`` (findings as
    :class:`~bastion.core.findings.Finding` dumps, so each validates back into one). Keys keep this
    order; non-finite floats become ``null``.

    Args:
        result: the scan (``ScanResult``, or the engine's ``ScanRecords``: same fields).
        version: Bastion's version to record; defaults to the running one.

    Returns:
        The JSON text, indented by 2, ending without a newline (the text of
        ``json.dumps(..., indent=2, ensure_ascii=False)``, written by :func:`dumps_indented`).
    """
    return escape_surrogates(dumps_indented(scan_to_dict(result, version=version)))


def dumps_indented(value: Any) -> str:
    """``json.dumps(json_safe(value), indent=2, ensure_ascii=False)``, the same text, faster.

    ``json.dumps`` with ``indent`` runs its pure-Python encoder (~12 ms for a scan of 1,000
    files); this writes the same layout with the C string encoder. Non-finite floats become
    ``null`` and keys are ``str(key)`` (as :func:`json_safe`).

    Raises:
        TypeError: a value is not JSON (as ``json.dumps``).
    """
    out: list[str] = []
    _dump(value, "\n", out)
    return "".join(out)


def _dump(value: Any, newline: str, out: list[str]) -> None:
    """Append ``value``'s indented JSON to ``out``; ``newline`` is a newline and the current indent."""
    if isinstance(value, str):
        out.append(_encode_str(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(float.__repr__(value) if math.isfinite(value) else "null")
    elif isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        if not all(type(k) is str for k in value):
            value = {str(k): v for k, v in value.items()}  # as json_safe (equal keys: the last value)
        inner = newline + "  "
        sep = "{" + inner
        for k, v in value.items():
            out.append(sep + _encode_str(str(k)) + ": ")
            _dump(v, inner, out)
            sep = "," + inner
        out.append(newline + "}")
    elif isinstance(value, (list, tuple)):
        if not value:
            out.append("[]")
            return
        inner = newline + "  "
        sep = "[" + inner
        for v in value:
            out.append(sep)
            _dump(v, inner, out)
            sep = "," + inner
        out.append(newline + "]")
    else:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def escape_surrogates(text: str) -> str:
    r"""JSON text with every lone surrogate written as its ``\uXXXX`` escape: valid UTF-8 again.

    A file name that is not valid UTF-8 (``b"bad\xff.pkl"``) reaches Python as ``bad\udcff.pkl``
    (``os.fsdecode``). ``json.dumps(..., ensure_ascii=False)`` leaves such a character raw, and
    raw it cannot be encoded as UTF-8 (writing ``-o`` failed) or reaches stdout as the original
    invalid bytes. Escaped, the document is valid UTF-8 JSON, and ``json.loads`` gives back the
    same string (``os.fsencode`` of it: the file's real name). Only text inside JSON strings can
    hold such characters, so the replacement never touches the structure.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        import re

        return re.sub("[\ud800-\udfff]", lambda m: f"\\u{ord(m.group()):04x}", text)
    return text


def report_to_json(report: Report) -> str:
    """Render an assessment report as JSON (``report.json``).

    The text is the :class:`~bastion.core.report.Report` model's own JSON, keys in the model's
    field order (stable across runs), indented by 2, so ``Report.model_validate_json`` reads it back
    to an equal report (non-finite floats become ``null``).

    Args:
        report: the report.

    Returns:
        The JSON text.
    """
    return report.model_dump_json(indent=2)
