"""``scan.pickle``: plain pickle streams (and plain joblib files), judged by the pickle policy.

Threat model: an attacker ships a pickle whose ``__reduce__`` makes ``pickle.load`` call
``os.system`` (or any other callable) at load time; they may hide the call behind memo
indirection (``STACK_GLOBAL`` over ``BINGET``), protocol-0 ``INST``, Python 2 aliases, dotted
protocol-4 names, a nested ``pickle.loads(b'...')``, joblib's raw array buffers, or a container.
The scanner emulates the opcodes (:mod:`bastion.scan.pickle_vm`), never executes them, and
judges every global it reaches: deny-listed is ``malicious``, unknown is ``suspicious``.
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, ClassVar

from bastion.core._regex import LazyPattern
from bastion.core.registry import register
from bastion.core.severity import Severity
from bastion.scan.base import (
    Artifact,
    Outcome,
    Scanner,
    formats_by_suffix,
    has_protocol_header,
    is_model_name,
)
from bastion.scan.pickle_vm import JOBLIB_WRAPPERS, Anomaly, GlobalRef, PickleResult, Reader, emulate
from bastion.scan.policy import Verdictish

if TYPE_CHECKING:
    from bastion.core.findings import Finding

__all__ = ["PickleScanner", "analyse_pickle", "judge_result"]

_REFS = (
    "https://docs.python.org/3/library/pickle.html#restricting-globals",
    "https://atlas.mitre.org/techniques/AML.T0011.000",
)
_REMEDIATE_DENIED = (
    "Do not load this file. Obtain the model from a trusted source, verify its signature, and "
    "prefer a format that cannot run code (safetensors, ONNX; skops loaded without trusting extra types)."
)
_REMEDIATE_UNKNOWN = (
    "Check that this class is yours and harmless, then allow it explicitly "
    "(bastion scan --allow module.Name, or scan.allow in bastion.yaml); otherwise do not load the file."
)
_ANOMALY = {
    "unresolved-global": (Severity.HIGH, "Pickle resolves a global from computed values"),
    "dynamic-callable": (Severity.HIGH, "Pickle calls a computed callable"),
    "mutates-global": (Severity.HIGH, "Pickle changes an imported object"),
    "extension-code": (Severity.MEDIUM, "Pickle uses a copyreg extension code"),
    # a denial of service when loaded (ATLAS AML.T0029), not code execution
    "allocation-bomb": (Severity.MEDIUM, "Pickle allocates a huge object when loaded"),
    "argument-walk-limit": (Severity.MEDIUM, "Pickle arguments too large to check"),
    "compute-bomb": (Severity.MEDIUM, "Pickle asks for a huge computation when loaded"),
    "codec-call": (Severity.MEDIUM, "Pickle calls a text codec other than latin1"),
    "argument-list": (Severity.MEDIUM, "Pickle calls with arguments that are not a tuple"),
    "dtype-flags": (Severity.HIGH, "Pickle builds a numpy dtype whose flags contradict its fields"),
    "dunder-state": (Severity.HIGH, "Pickle sets a protocol attribute (__x__) in an object's state"),
    "file-path-argument": (Severity.HIGH, "Pickle makes a loader open a file by path"),
}
_DOS = ("https://atlas.mitre.org/techniques/AML.T0029",)
_ANOMALY_REFS = {"allocation-bomb": _DOS, "compute-bomb": _DOS, "codec-call": _DOS}
#: A stream not named as a pickle that fails within this many opcodes is reported as not a pickle
#: (a text file's first letters read as opcodes: ``hi`` is ``BINGET 105``), not as a broken one.
_NOT_A_PICKLE_OPCODES = 2
_PICKLE_EXTS = (".pkl", ".pickle", ".pk", ".pck", ".pcl", ".p", ".dill", ".cpkl", ".sav", ".joblib", ".jbl")


#: How a global let through by an allow-list addition is reported, by the addition's source:
#: (rule suffix, what allowed it, ``evidence.source``, remediation).
_ADDITIONS = {
    "user": (
        "user-allowed",
        "the --allow entry",
        "--allow",
        "Check that the entry names a class you trust; leave it out of --allow otherwise.",
    ),
    "project": (
        "project-allowed",
        "the project file's scan.allow entry",
        "scan.allow",
        "Check that the entry names your own code; remove it from scan.allow otherwise.",
    ),
}


#: The rule-id endings of those findings (``scan.pickle.user-allowed``, ``scan.skops.project-allowed`` ...).
ADDITION_RULE_SUFFIXES = tuple(f".{suffix}" for suffix, *_ in _ADDITIONS.values())


def allowed_by(rule_id: str) -> tuple[str, str, str, str, str]:
    """``(entry, rule suffix, what allowed it, evidence source, remediation)`` of an addition's rule.

    ``rule_id``: ``project:<entry>`` (a project file's ``scan.allow``: ``project-allowed``) or
    ``user:<entry>`` (``--allow`` / ``allow=``, reported where the policy's ``report_allowed`` is
    set: ``user-allowed``). Shared by the pickle and skops scanners.
    """
    source, _, entry = rule_id.partition(":")
    return (entry, *_ADDITIONS["user" if source == "user" else "project"])


def project_allowed_finding(
    art: Artifact, q: str, rule_id: str, offset: int | None, rule_prefix: str, rules_version: str
) -> Finding:
    """The ``info`` finding of a global that only an allow-list addition allowed (see :func:`allowed_by`)."""
    entry, suffix, what, source, remediation = allowed_by(rule_id)
    return art.finding(
        f"{rule_prefix}.{suffix}",
        Severity.INFO,
        f"{q} is allowed only by {what} {entry}",
        offset=offset,
        evidence={"global": q, "allow_entry": entry, "source": source, "rules_version": rules_version},
        remediation=remediation,
        references=_REFS,
    )


#: The judgement kinds, read once (an enum member's attribute read is slow, and judge_result
#: compares several per global of every file).
_ALLOWED = Verdictish.ALLOWED
_DENIED = Verdictish.DENIED
_UNKNOWN = Verdictish.UNKNOWN


def judge_result(
    art: Artifact,
    res: PickleResult,
    out: Outcome,
    *,
    rule_prefix: str = "scan.pickle",
    include_unknown: bool = True,
) -> None:
    """Turn an emulator result into findings (and nested scans) on ``out``.

    Args:
        art: the artifact the stream belongs to (offsets are in its coordinates).
        res: the emulator's result.
        out: outcome to add findings and globals to.
        rule_prefix: plugin id used in rule ids (``scan.pickle`` → ``scan.pickle.denied-global``).
        include_unknown: report unknown globals (False for trailing garbage: only dangers count).
    """
    policy = art.ctx.policy
    # Each global's references, in stream order; the evidence is gathered only for those that
    # get a finding (most files reach allowed globals only).
    by_name: dict[str, list[GlobalRef]] = {}
    for ref in res.globals:
        if ref.folded and ref.ncalls <= ref.folded and not ref.npassed:
            continue  # only getattr(<global>, "name") of attributes the policy allows (folded)
        refs = by_name.get(ref.qualname)
        if refs is None:
            by_name[ref.qualname] = [ref]
        else:
            refs.append(ref)
    out.add_globals(by_name)
    silent = policy.silent
    for q, refs in by_name.items():
        ref0 = refs[0]
        module, name = ref0.module, ref0.name
        if silent(module, name):  # allowed as a callable, the allowance not reported: no finding
            continue
        opcode, offset = ref0.opcode, ref0.offset
        j = policy.judge(module, name)
        called_ref_only = (
            j.kind is _ALLOWED
            and j.rule is not None
            and not j.rule.call
            and sum(r.ncalls + r.npassed for r in refs) > 0  # calls, and hand-overs to other calls
        )
        if j.kind is _ALLOWED and j.rule is not None and policy.reports(j.rule):
            # allowed only by a project file's scan.allow (a bastion.yaml someone else may have
            # written), or by --allow in a scan gate (assess, harden, the guard): shown, so that
            # an auditor sees what the file or the command line added (red-team round 31)
            out.findings.append(
                project_allowed_finding(art, q, j.rule.id, offset, rule_prefix, policy.version)
            )
            continue
        if j.kind is not _DENIED and not (j.kind is _UNKNOWN and include_unknown) and not called_ref_only:
            continue  # allowed (or an unknown not reported): no finding, no evidence to gather
        offsets = [r.offset for r in refs]
        site = [(c.opcode, c.offset, c.preview) for r in refs for c in r.calls]
        passed_to = [p for r in refs for p in r.passed_to]
        evidence: dict[str, object] = {
            "global": q,
            "opcode": opcode,
            "occurrences": len(offsets),
            "offsets": offsets[:10],
        }
        if site:
            evidence["invoked_by"] = [{"opcode": o, "offset": off} for o, off, _ in site[:5]]
            args = [p for _, _, p in site if p]
            if args:
                evidence["arguments"] = args[:3]
        evidence["protocol"] = res.protocol
        if j.kind is _DENIED and j.rule is not None:
            evidence.update(
                {
                    "rule": j.rule.id,
                    "rationale": j.rule.rationale,
                    "matched": j.matched,
                    "rules_version": policy.version,
                }
            )
            out.findings.append(
                art.finding(
                    f"{rule_prefix}.denied-global",
                    j.rule.severity,
                    f"Pickle calls denied callable {q}" if site else f"Pickle imports denied callable {q}",
                    offset=offset,
                    evidence=evidence,
                    remediation=_REMEDIATE_DENIED,
                    references=(j.rule.reference, *_REFS),
                )
            )
            if j.rule.nested:
                _scan_nested(art, q, [(c.offset, b) for r in refs for c in r.calls for b in c.blobs], out)
        elif called_ref_only and j.rule is not None:
            evidence.update(
                {"rule": j.rule.id, "rationale": j.rule.rationale, "rules_version": policy.version}
            )
            if passed_to:  # handed to a helper that may call it (copyreg.__newobj__ ...)
                evidence["passed_to"] = sorted(set(passed_to))[:5]
            out.findings.append(
                art.finding(
                    f"{rule_prefix}.reference-only-called",
                    Severity.HIGH,
                    f"Pickle calls {q} or hands it to a call; the allow-list accepts it only as a class"
                    " reference",
                    offset=offset,
                    evidence=evidence,
                    remediation=_REMEDIATE_DENIED,
                    references=(j.rule.reference, *_REFS),
                )
            )
        elif j.kind is _UNKNOWN and include_unknown:
            evidence["rules_version"] = policy.version
            out.findings.append(
                art.finding(
                    f"{rule_prefix}.unknown-global",
                    Severity.MEDIUM,
                    f"Pickle imports callable {q}, which the allow-list does not know",
                    offset=offset,
                    evidence=evidence,
                    remediation=_REMEDIATE_UNKNOWN,
                    references=_REFS,
                )
            )
    for a in res.anomalies:
        if not include_unknown and anomaly_severity(a.kind) < Severity.HIGH:
            continue
        out.findings.append(
            anomaly_finding(
                art,
                a,
                rule_prefix=rule_prefix,
                offset=a.offset,
                evidence={"opcode": a.opcode, "detail": a.detail, "protocol": res.protocol},
            )
        )


def anomaly_severity(kind: str) -> Severity:
    """The severity of an emulator anomaly of ``kind`` (unknown kinds are high)."""
    return _ANOMALY.get(kind, (Severity.HIGH, ""))[0]


def anomaly_finding(
    art: Artifact,
    a: Anomaly,
    *,
    rule_prefix: str,
    offset: int | None,
    evidence: dict[str, object],
    title: str = "Pickle stream trick",
) -> Finding:
    """The finding ``<rule_prefix>.<kind>`` for an emulator anomaly (its severity, title and references).

    Args:
        art: the artifact the finding is located in.
        a: the anomaly.
        rule_prefix: plugin id used in the rule id.
        offset: byte offset to report (None: the anomaly's place is not a file offset).
        evidence: the finding's evidence.
        title: title prefix for a kind without its own.
    """
    sev, kind_title = _ANOMALY.get(a.kind, (Severity.HIGH, title))
    return art.finding(
        f"{rule_prefix}.{a.kind}",
        sev,
        f"{kind_title}: {a.detail}",
        offset=offset,
        evidence=evidence,
        remediation=_REMEDIATE_DENIED,
        references=_REFS + _ANOMALY_REFS.get(a.kind, ()),
    )


def _scan_nested(art: Artifact, qualname: str, items: list[tuple[int, bytes]], out: Outcome) -> None:
    """Scan the bytes passed to a deny-listed loader (``pickle.loads(b'...')``) as a file."""
    for offset, data in items:
        if not scan_payload(art, data, name="nested.pkl", label=f"<{qualname} payload @{offset}>", out=out):
            return


def scan_payload(art: Artifact, data: bytes, *, name: str, label: str, out: Outcome) -> bool:
    """Scan bytes a loader would load (a nested pickle, a Keras layer's module) as a file of ``art``.

    Its findings and errors join ``out`` under ``label``. Returns ``False`` (with an error on
    ``out``) once the file's budget of nested payloads is spent: the caller stops there.
    """
    ctx = art.ctx
    if ctx.nested_pickles >= ctx.limits.max_nested_pickles:
        out.errors.append(
            f"more than {ctx.limits.max_nested_pickles} nested payloads; the rest were not scanned"
        )
        return False
    ctx.nested_pickles += 1
    out.absorb(ctx.scan(art.child(name, io.BytesIO(data), len(data), label=label)), member=label)
    return True


def analyse_pickle(
    art: Artifact,
    *,
    start: int = 0,
    strict: bool = True,
    multi: bool = True,
    rule_prefix: str = "scan.pickle",
    fmt: str = "pickle",
    reader: Reader | None = None,
) -> tuple[Outcome, PickleResult]:
    """Emulate and judge the pickle stream(s) in ``art`` from ``start``.

    Args:
        art: the artifact; its stream must be positioned at ``start`` (or pass ``reader``).
        start: offset of the first opcode.
        strict: a stream that does not parse is an error (False: it is "not a pickle" and the
            outcome is skipped, unless a denied global was reached before the failure).
        multi: after ``STOP``, parse further pickles in the same stream (pickle files may hold
            several); trailing bytes that do not parse give a low ``trailing-data`` finding.
        rule_prefix: plugin id for rule ids.
        fmt: format label (``pickle``; ``joblib`` is used automatically when joblib arrays are seen).
        reader: an existing reader to continue from.

    Returns:
        ``(outcome, first pickle's emulator result)``.
    """
    ctx = art.ctx
    rd = reader or Reader(art.stream, start=start)
    res = _next_pickle(art, rd)
    out = Outcome(format=fmt)
    if res.timed_out:  # never skipped, never "malformed": what was reached is judged, then error
        judge_result(art, res, out, rule_prefix=rule_prefix)
        out.errors.append(f"{ctx.time_limit_message()} ({res.error}, offset {res.error_offset})")
        _label(out, res, fmt)
        return out, res
    if not res.complete:
        raw: PickleResult | None = None
        if not strict and not res.limited:  # a stream past the emulator's limits is a pickle
            probe = Outcome()
            judge_result(art, res, probe, rule_prefix=rule_prefix, include_unknown=False)
            if not any(f.rule_id.endswith(".denied-global") for f in probe.findings):
                # The emulator stopped early; a loader that reads the stream differently may go
                # on. A denied global spelt out as protocol 0/1 writes it (``GLOBAL``/``INST``)
                # anywhere in the bytes keeps the file from being "not a pickle".
                at = max(start, res.error_offset or start)
                raw = _raw_denied_globals(art, _bytes_from(art, at), at)
                if raw is None:
                    if res.opcodes <= _NOT_A_PICKLE_OPCODES:  # trial 32: "hi" read as BINGET 105
                        return Outcome.skip("not a pickle (its first bytes are not a pickle stream)"), res
                    return Outcome.skip(f"does not parse as a complete pickle stream ({res.error})"), res
        judge_result(art, res, out, rule_prefix=rule_prefix)
        if raw is not None:
            judge_result(art, raw, out, rule_prefix=rule_prefix, include_unknown=False)
        out.errors.append(f"{res.error} (offset {res.error_offset})")
        out.findings.append(
            art.finding(
                f"{rule_prefix}.malformed",
                Severity.LOW,
                "Pickle stream could not be fully parsed",
                offset=res.error_offset,
                evidence={"reason": res.error, "opcodes": res.opcodes},
                remediation="The file is truncated or corrupt; obtain a complete copy before use.",
            )
        )
        _label(out, res, fmt)
        return out, res
    judge_result(art, res, out, rule_prefix=rule_prefix)
    joblib_seen = res.joblib_arrays + res.joblib_object_arrays
    seen = [res]  # every stream of the joblib reading, for the plain-pickle reading
    if multi:
        count = 1
        while not rd.at_eof():
            count += 1
            nxt = _next_pickle(art, rd)
            if nxt.timed_out:
                judge_result(art, nxt, out, rule_prefix=rule_prefix)
                out.errors.append(f"{ctx.time_limit_message()} ({nxt.error}, offset {nxt.error_offset})")
                break
            seen.append(nxt)
            if nxt.complete and count <= 4096:
                judge_result(art, nxt, out, rule_prefix=rule_prefix)
                joblib_seen += nxt.joblib_arrays + nxt.joblib_object_arrays
                continue
            # A loader that calls ``pickle.load`` until the file ends runs this stream up to
            # where it breaks: what it reaches before then counts, unknown globals included.
            judge_result(art, nxt, out, rule_prefix=rule_prefix)
            # in a pickle file (a protocol header, or named as one), spelt-out globals past the
            # trailing bytes count as they are; in anything else (text that happens to begin
            # like a pickle) only when a stream emulated from them calls them
            _judge_later_streams(art, nxt.start, out, rule_prefix, confirm=not (strict or res.protocol >= 2))
            out.findings.append(
                art.finding(
                    f"{rule_prefix}.trailing-data",
                    Severity.LOW,
                    "Bytes after the last pickle do not parse as a pickle",
                    offset=nxt.start,
                    evidence={"reason": nxt.error, "pickles": count - 1},
                    remediation="Loaders ignore trailing bytes; check why the file carries them.",
                )
            )
            break
    if joblib_seen:
        fmt = "joblib"
        _judge_plain_view(art, rd, res, seen, out, multi=multi, rule_prefix=rule_prefix)
    out.format = fmt
    _label(out, res, fmt)
    return out, res


#: The attribute line of a protocol 0/1 ``GLOBAL``/``INST`` (the module line and opcode precede
#: it): searched from its newline, so text without such lines costs one pass in C. Deny-listed
#: modules and attributes are short: 64 characters bound the work at each match.
_NAME_LINE = LazyPattern(rb"\n([A-Za-z_][\w.]{0,63}+)(?=\n)")
_MODULE_TAIL = LazyPattern(rb"[\w.]{1,65}\Z")
_IDENT_START = [chr(b).isascii() and (chr(b).isalpha() or chr(b) == "_") for b in range(256)]
#: String opcodes whose argument may name a module or attribute for ``STACK_GLOBAL``: the opcode
#: byte and its length prefix (``SHORT_BINUNICODE``/``SHORT_BINSTRING`` one byte, ``BINUNICODE``/
#: ``BINSTRING`` four, ``BINUNICODE8`` eight), or a protocol-0 ``UNICODE`` line.
_FRAMED_STRING = LazyPattern(rb"([\x8cU])(.)|([XT])(.{4})|(\x8d)(.{8})|V([A-Za-z_][\w.]{0,63}+)\n", re.DOTALL)
_IDENT_TEXT = LazyPattern(r"[A-Za-z_][\w.]{0,63}")
#: Bytes searched for spelt-out globals when a stream does not parse (a model file's pickle is
#: small; the search is linear).
MAX_RAW_SEARCH = 16 << 20
#: Strings after a candidate module name that are tried as its attribute (the module may be
#: memoised and fetched again just before the attribute: the emulation from it confirms).
_PAIR_WINDOW = 64
#: Identifier lines looked at by the text search at most.
_MAX_NAME_LINES = 1 << 20
#: Strings collected by :func:`_framed_strings` at most.
_MAX_STRINGS = 1 << 16


def _module_tail(data: bytes, end: int) -> re.Match[bytes] | None:
    """The :data:`_MODULE_TAIL` of ``data[:end]`` (``end``: a name line's newline) on its own line.

    The tail is at most 65 bytes: it is searched from 66 bytes back, or from the line's start if
    that is nearer. (The search ran from the file's start when no newline was within 66 bytes:
    the whole file again for each such line, quadratic.)
    """
    line_start = data.rfind(b"\n", max(0, end - 66), end) + 1
    return _MODULE_TAIL.search(data, max(line_start, end - 66), end)


def _framed_strings(data: bytes) -> list[tuple[int, str]]:
    """``(offset, text)`` of every identifier-like string opcode argument in ``data``."""
    out: list[tuple[int, str]] = []
    for m in _FRAMED_STRING.finditer(data):
        if len(out) >= _MAX_STRINGS:
            break
        if m.group(7) is not None:  # UNICODE line
            out.append((m.start(), m.group(7).decode("ascii")))
            continue
        size_bytes = m.group(2) or m.group(4) or m.group(6)
        n = int.from_bytes(size_bytes, "little")
        start = m.end()
        if not 0 < n <= 64:
            continue
        text = data[start : start + n].decode("latin-1")
        if _IDENT_TEXT.fullmatch(text):
            out.append((m.start(), text))
    return out


def _bytes_from(art: Artifact, start: int) -> bytes:
    """Up to :data:`MAX_RAW_SEARCH` bytes of ``art`` from ``start`` (for the byte searches)."""
    art.stream.seek(start)
    return art.stream.read(MAX_RAW_SEARCH)


def _raw_denied_globals(
    art: Artifact, data: bytes, start: int, *, confirm: bool = True
) -> PickleResult | None:
    r"""Denied globals spelt out in ``data`` (``art``'s bytes from ``start``) and used there.

    For a stream the emulator could not parse (a differential between it and a loader), from
    the opcode it stopped at (the bytes before were read as the unpickler reads them): the
    protocol 0/1 forms (``GLOBAL``/``INST`` lines) and, for ``STACK_GLOBAL``, two string
    arguments close together (a module name, then an attribute within :data:`_PAIR_WINDOW`
    strings). A candidate counts only when a stream emulated from it reaches a call of it
    (``cos\nsystem\n(S'id'\ntR``): in text, ``tacos\nburrito`` names ``os.burrito`` but calls
    nothing (``confirm=False``: every spelt-out one counts). Returns the denied ones as a
    :class:`PickleResult` to judge, or ``None``.
    """
    policy = art.ctx.policy
    found = PickleResult(start=start, error="found by a byte search of an unparsed stream")
    candidates: list[tuple[int, str, str, str]] = []
    for k, m in enumerate(_NAME_LINE.finditer(data)):
        if k >= _MAX_NAME_LINES or (k % 4096 == 4095 and art.ctx.timed_out()):
            break
        name = m.group(1).decode("ascii")
        tail = _module_tail(data, m.start())
        if tail is None:
            continue
        for j in range(tail.start(), m.start() - 1):  # each c/i of the tail may be the opcode
            if data[j] in b"ci" and _IDENT_START[data[j + 1]]:
                module = data[j + 1 : m.start()].decode("ascii")
                if policy.judge(module, name).kind is Verdictish.DENIED:
                    candidates.append((j, module, name, "GLOBAL" if data[j] == 0x63 else "INST"))
        if len(candidates) >= _MAX_CANDIDATES:
            break
    strings = _framed_strings(data)
    for i, (offset, module) in enumerate(strings):
        if len(candidates) >= _MAX_CANDIDATES or art.ctx.timed_out():
            break
        for _, name in strings[i + 1 : i + 1 + _PAIR_WINDOW]:
            if policy.judge(module, name).kind is Verdictish.DENIED:
                candidates.append((offset, module, name, "STACK_GLOBAL"))
                break
    for offset, module, name, opcode in candidates[:_MAX_CANDIDATES]:
        if art.ctx.timed_out():
            break
        if not confirm or _called_from(data, offset, module, name):
            found.globals.append(GlobalRef(module=module, name=name, offset=start + offset, opcode=opcode))
    return found if found.globals else None


def _judge_later_streams(art: Artifact, start: int, out: Outcome, rule_prefix: str, *, confirm: bool) -> None:
    """Deny-listed globals in pickles further on, past bytes that do not parse.

    A loader may read raw data between pickles (torch's old tar format: a pickle, a storage's
    bytes, the next pickle) where the emulator sees trailing garbage: a pickle is tried at each
    protocol 2-5 header after ``start`` (at most :data:`_MAX_CANDIDATES`) and the protocol 0/1
    and ``STACK_GLOBAL`` spellings are searched (:func:`_raw_denied_globals`). Only deny-listed
    globals are reported (raw data may look like anything else).
    """
    # after a pickle, in bytes a loader reads as it likes: a spelt-out deny-listed global counts
    # without a confirming emulation unless ``confirm`` (its arguments may come from the memo)
    data = _bytes_from(art, start)
    raw = _raw_denied_globals(art, data, start, confirm=confirm)
    if raw is not None:
        judge_result(art, raw, out, rule_prefix=rule_prefix, include_unknown=False)
    for k, m in enumerate(_PROTO_HEADER.finditer(data)):
        if k >= _MAX_CANDIDATES or art.ctx.timed_out():
            break
        piece = data[m.start() : m.start() + _CONFIRM_BYTES]
        res = emulate(io.BytesIO(piece), start=start + m.start(), max_value=1 << 20)
        if res.globals:
            judge_result(art, res, out, rule_prefix=rule_prefix, include_unknown=False)


#: A pickle's ``PROTO`` opcode for protocols 2-5.
_PROTO_HEADER = LazyPattern(rb"\x80[\x02-\x05]")
#: Candidates of :func:`_raw_denied_globals` emulated at most (each a short emulation).
_MAX_CANDIDATES = 256
#: Bytes emulated from a candidate to see it called.
_CONFIRM_BYTES = 1 << 16


def _called_from(data: bytes, offset: int, module: str, name: str) -> bool:
    """Whether a stream emulated from ``data[offset:]`` calls (or hands over) ``module.name``."""
    # the stream's memo was filled before the candidate: a GET of it is a value, not a failure
    res = emulate(io.BytesIO(data[offset : offset + _CONFIRM_BYTES]), max_value=1 << 20, lenient_memo=True)
    return any(
        ref.module == module and ref.name == name and (ref.ncalls or ref.npassed) for ref in res.globals
    )


def _next_pickle(art: Artifact, rd: Reader, *, joblib: bool = True) -> PickleResult:
    """The next pickle stream of ``rd``, emulated under this file's policy and limits."""
    ctx = art.ctx
    return emulate(
        art.stream,
        reader=rd,
        capture=ctx.policy.capture,
        capture_known=ctx.policy.capture_known,
        max_value=ctx.limits.max_value_bytes,
        deadline=ctx.deadline,
        joblib=joblib,
        fold=ctx.policy.allows,
    )


def _judge_plain_view(
    art: Artifact,
    rd: Reader,
    first: PickleResult,
    seen: list[PickleResult],
    out: Outcome,
    *,
    multi: bool,
    rule_prefix: str,
) -> None:
    """Read a joblib file again the way plain ``pickle.load`` does, and judge what only it reaches.

    ``joblib.load`` skips the array bytes written after each ``NumpyArrayWrapper``; ``pickle.load``
    (the wrapper class is importable wherever joblib is installed) reads them as opcodes. An
    attacker can put a payload there that the joblib reading never sees. Only globals the joblib
    reading did not resolve (by offset) are judged; the plain reading of real array bytes is
    garbage, so its parse failures and stream tricks are not reported.
    """
    ctx = art.ctx
    known = {g.offset for r in seen for g in r.globals}
    stream = art.stream
    resume = stream.tell()
    delta = rd.stream_delta(resume)
    try:
        stream.seek(first.start + delta)
        plain_rd = Reader(stream, start=first.start)
        for _ in range(4096 if multi else 1):
            plain = _next_pickle(art, plain_rd, joblib=False)
            extra = [g for g in plain.globals if g.offset not in known]
            if extra:
                view = PickleResult(start=plain.start, protocol=plain.protocol, globals=extra)
                judge_result(art, view, out, rule_prefix=rule_prefix)
            if plain.timed_out:
                out.errors.append(f"{ctx.time_limit_message()} ({plain.error}, offset {plain.error_offset})")
            if not plain.complete or plain_rd.at_eof():
                break
    finally:
        stream.seek(resume)


def _label(out: Outcome, res: PickleResult, fmt: str) -> None:
    if res.joblib_arrays or res.joblib_object_arrays or not JOBLIB_WRAPPERS.isdisjoint(out.globals):
        out.format = "joblib" if fmt == "pickle" else fmt
    else:
        out.format = fmt


@register("scanner")
class PickleScanner(Scanner):
    """Plain pickle streams, protocols 0-5, and plain joblib files.

    Also the last resort for streams no other scanner claims: anything that parses as a
    complete pickle is scanned as one; anything else is ``skipped`` (or ``error`` when its name
    says it is a model).
    """

    id: ClassVar[str] = "scan.pickle"
    title: ClassVar[str] = "Pickle opcode scanner"
    formats: ClassVar[tuple[str, ...]] = ("pickle", "joblib")
    priority: ClassVar[int] = 1000
    references: ClassVar[tuple[str, ...]] = (
        "https://docs.python.org/3/library/pickle.html",
        "https://github.com/mmaitre314/picklescan",
        "https://peps.python.org/pep-3154/",
    )
    threat_model: ClassVar[str] = (
        "The attacker controls the bytes of a model file the victim will load with pickle, "
        "joblib or torch.load(weights_only=False); the scanner sees the file, never runs it."
    )

    @classmethod
    def sniff(cls, head: bytes, name: str) -> bool:
        """Always willing: the last resort (it decides between pickle, error and skipped)."""
        return True

    def scan(self, artifact: Artifact) -> Outcome:
        """Emulate the stream; strict when it announces a protocol or is named like a pickle."""
        head = artifact.head(2)
        if has_protocol_header(head):
            return analyse_pickle(artifact)[0]
        named = is_model_name(artifact.name) or artifact.name.lower().endswith(_PICKLE_EXTS)
        out, res = analyse_pickle(artifact, strict=named)
        if named and not res.complete and res.opcodes <= _NOT_A_PICKLE_OPCODES:
            fmt = formats_by_suffix(artifact.name)
            if fmt is not None and all(f.rule_id.endswith(".malformed") for f in out.findings):
                # named for a format read by its magic bytes, with none of them: no pickle either
                suffix = artifact.name.rpartition(".")[2]
                return Outcome.error(
                    None,
                    f"named as {fmt} (.{suffix}), but its bytes are not {fmt} "
                    "(nor any other format Bastion reads, nor a pickle)",
                )
        return out
