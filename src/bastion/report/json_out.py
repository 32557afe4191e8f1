"""JSON renderers: a scan's machine output and the assessment report's ``report.json``."""

from __future__ import annotations

import math
from json.encoder import encode_basestring as _encode_str  # C: a JSON string, non-ASCII kept
from typing import TYPE_CHECKING, Any

from bastion.core._scan_records import Verdict

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


def _scan_version(result: ScanResult | ScanRecords, version: str | None) -> str:
    """The Bastion version a scan document records: ``version``, the result's, else the running one."""
    given = version or result.bastion_version
    if given:
        return given
    from bastion.report._common import bastion_version

    return bastion_version()


def scan_to_dict(result: ScanResult | ScanRecords, *, version: str | None = None) -> dict[str, Any]:
    """A scan (the model, or the scanner's plain records) as a JSON-ready dict (see :func:`scan_to_json`)."""
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
        "bastion_version": _scan_version(result, version),
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
    # The text of ``dumps_indented(scan_to_dict(result))``, written a file at a time: one
    # concatenation per file instead of a recursive walk of its dict (a scan of 1,000 clean files
    # spent most of its rendering there).
    files = result.files
    body = "[\n    " + ",\n    ".join([_file_json(fr) for fr in files]) + "\n  ]" if files else "[]"
    return escape_surrogates(
        '{\n  "schema_version": '
        + _value(result.schema_version, "\n  ")
        + ',\n  "bastion_version": '
        + _value(_scan_version(result, version), "\n  ")
        + ',\n  "files": '
        + body
        + "\n}"
    )


#: A file's fields in the scan document are indented by 6 (``{"files": [{...}]}``).
_IN_FILE = "\n      "
#: Each verdict as a JSON string (an enum's ``.value`` is slow to read, once per file).
_VERDICT_TEXT = {v: _encode_str(v.value) for v in Verdict}


def _file_json(fr: Any) -> str:
    """One file of :func:`scan_to_dict`'s ``files`` as :func:`dumps_indented` writes it, at its depth."""
    findings = fr.findings
    if findings:
        out: list[str] = []
        _dump([f.model_dump(mode="json") for f in findings], _IN_FILE, out)
        findings_text = "".join(out)
    else:
        findings_text = "[]"
    names = fr.globals
    globals_text = "[]"
    if names:
        try:  # names are strings (the encoder refuses anything else)
            globals_text = (
                "[\n        " + ",\n        ".join([_encode_str(n) for n in names]) + _IN_FILE + "]"
            )
        except TypeError:
            globals_text = _value(list(names), _IN_FILE)
    # Strings and None written here (the common fields), anything else by _value.
    path, fmt, sha, size, reason = fr.path, fr.format, fr.sha256, fr.size, fr.reason
    verdict = fr.verdict
    return _FILE_JSON % (
        _encode_str(path) if type(path) is str else _value(path, _IN_FILE),
        _encode_str(fmt) if type(fmt) is str else "null" if fmt is None else _value(fmt, _IN_FILE),
        _VERDICT_TEXT.get(verdict) or _value(verdict.value, _IN_FILE),
        _encode_str(sha) if type(sha) is str else "null" if sha is None else _value(sha, _IN_FILE),
        int.__repr__(size) if type(size) is int else _value(size, _IN_FILE),
        "null" if reason is None else _value(reason, _IN_FILE),
        findings_text,
        globals_text,
    )


#: A file's record with its fields' JSON texts put in (one string built, not one per field).
_FILE_JSON = (
    '{\n      "path": %s,\n      "format": %s,\n      "verdict": %s,\n      "sha256": %s,'
    '\n      "size": %s,\n      "reason": %s,\n      "findings": %s,\n      "globals": %s\n    }'
)


def _value(value: Any, newline: str) -> str:
    """``value``'s indented JSON as :func:`_dump` writes it (strings and ``None`` directly)."""
    if type(value) is str:
        return _encode_str(value)
    if value is None:
        return "null"
    out: list[str] = []
    _dump(value, newline, out)
    return "".join(out)


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
