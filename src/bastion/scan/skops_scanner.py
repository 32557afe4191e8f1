"""``scan.skops``: skops ``.skops`` archives (a zip of ``schema.json`` and ``.npy`` arrays).

Threat model: ``skops.io.load`` rebuilds every node of ``schema.json``: an ``ObjectNode`` imports
``__module__.__class__`` and instantiates it, a ``FunctionNode`` or ``TypeNode`` imports a callable
or type, a ``ConstructorFromReduceNode`` calls a constructor with stored arguments, a
``MethodNode`` binds a method by name and an ``OperatorFuncNode`` builds an ``operator`` function
(``attrgetter``/``methodcaller`` reach any attribute). skops refuses types it does not trust
unless the caller passes ``trusted=``, but the documented pattern
``load(f, trusted=get_untrusted_types(file=f))`` trusts whatever the file names. Every type and
callable the schema references is judged here by the same allow/deny rules as pickle globals:
a denied one is ``malicious``, one the allow-list does not know ``suspicious``. The ``.npy``
members go to the numpy scanner (object arrays are pickles). Nothing is imported or loaded.

Reference: https://skops.readthedocs.io/en/stable/persistence.html
"""

from __future__ import annotations

import bisect
import io
import json
from typing import TYPE_CHECKING, Any, ClassVar

from bastion.core.registry import register
from bastion.core.severity import Severity
from bastion.scan._zip import (
    ZIP_MAGICS,
    BadZip,
    MemberAction,
    member_errors,
    open_zip,
    read_document,
    walk_zip,
)
from bastion.scan.base import Artifact, NotThisFormat, Outcome, Scanner
from bastion.scan.pickle_scanner import allowed_by, anomaly_finding
from bastion.scan.pickle_vm import Anomaly, emulate
from bastion.scan.policy import Verdictish

if TYPE_CHECKING:
    import zipfile

__all__ = ["SkopsScanner"]

_MAX_NODES = 1_000_000
_REFS = ("https://skops.readthedocs.io/en/stable/persistence.html",)
_REMEDIATE = (
    "Do not load this file with trusted=get_untrusted_types(...); get the model from its "
    "publisher, or rebuild it from code you reviewed. Allow your own reviewed classes with "
    "--allow module.Class."
)


def _references(schema: Any, first: dict[Any, dict[str, Any]]) -> tuple[list[tuple[str, str, str, str]], int]:
    """``(loader, module, name, JSON path)`` of every node that names a type or callable, and the node count.

    Walks iteratively (a deeply nested schema cannot exhaust the stack); a ``MethodNode``'s
    method is recorded as ``Class.method`` of its object's module; a protocol-0 ``FunctionNode``
    by the ``content`` names it imports; a node whose ``__id__`` skops resolves to a node seen
    first elsewhere (a ``CachedNode``, a bare ``{"__id__": n}``) also by that node's names, at
    the referring path (a key type there is called: red-team round 23).
    """
    from bastion.scan._skops_schema import function_name  # on first use: every scan imports this module

    out: list[tuple[str, str, str, str]] = []
    protocol = schema.get("protocol") if isinstance(schema, dict) else None
    stack: list[tuple[Any, str]] = [(schema, "")]
    nodes = 0
    while stack:
        node, path = stack.pop()
        nodes += 1
        if nodes > _MAX_NODES:
            raise ValueError(f"schema.json has over {_MAX_NODES} nodes")
        if isinstance(node, dict):
            ident = node.get("__id__")
            canon = first.get(ident) if isinstance(ident, (int, str, float, bool)) else None
            for named in (node, canon) if canon is not None and canon is not node else (node,):
                loader = str(named.get("__loader__", ""))
                module, name = (
                    function_name(named, protocol)
                    if loader == "FunctionNode"
                    else (named.get("__module__"), named.get("__class__"))
                )
                if isinstance(module, str) and isinstance(name, str):
                    out.append((loader, module, name, path or "/"))
                    content = named.get("content")
                    if (
                        loader == "MethodNode"
                        and isinstance(content, dict)
                        and isinstance(content.get("func"), str)
                    ):
                        out.append((loader, module, f"{name}.{content['func']}", f"{path}/content/func"))
            for key, value in node.items():
                if isinstance(value, dict | list):
                    stack.append((value, f"{path}/{key}"))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if isinstance(value, dict | list):
                    stack.append((value, f"{path}/{i}"))
    return out, nodes


def _raw_bytes_members(schema: Any) -> set[str]:
    """Members skops reads only as raw bytes (``BytesNode``/``BytearrayNode`` ``file``), never loads.

    A member an array or sparse node also names (``np.load``, ``load_npz``) is not one of them.
    """
    raw: set[str] = set()
    loaded: set[str] = set()
    stack: list[Any] = [schema]
    seen = 0
    while stack and seen < _MAX_NODES:
        node = stack.pop()
        seen += 1
        if isinstance(node, dict):
            f = node.get("file")
            if isinstance(f, str):
                (raw if node.get("__loader__") in ("BytesNode", "BytearrayNode") else loaded).add(f)
            stack.extend(v for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, dict | list))
    return raw - loaded


def _check_schema(art: Artifact, info: zipfile.ZipInfo, schema: Any, out: Outcome) -> None:
    from bastion.scan._skops_schema import canonical_nodes, compile_schema  # on first use (~7M instructions)

    memoised = canonical_nodes(schema)  # the nodes skops memoises: for the names and the stream
    try:
        refs, _ = _references(schema, memoised)
    except (ValueError, RecursionError) as exc:
        out.errors.append(f"schema.json is not a readable skops schema: {type(exc).__name__}: {exc}"[:300])
        return
    try:
        compiled: Any = compile_schema(schema, first=memoised)
    except ValueError as exc:
        out.errors.append(str(exc))
        compiled = None
    except RecursionError:  # pragma: no cover - MAX_DEPTH stops well before the interpreter's limit
        out.errors.append("schema.json nests nodes too deeply to be checked")
        compiled = None
    # the types skops calls as key types, references resolved (a tzfile reached through an id)
    called = {f"{m}.{n}": p for m, n, p in compiled[3]} if compiled is not None else {}
    refs += [("TypeNode", q.rpartition(".")[0], q.rpartition(".")[2], p) for q, p in called.items()]
    policy = art.ctx.policy
    at = art.child(info.filename, io.BytesIO(), info.file_size)  # findings located in schema.json
    first: dict[str, tuple[str, str, str, str]] = {}
    count: dict[str, int] = {}
    for loader, module, name, path in refs:
        q = f"{module}.{name}"
        first.setdefault(q, (loader, module, name, path))
        count[q] = count.get(q, 0) + 1
    out.add_globals(first)
    for q, (loader, module, name, path) in first.items():
        j = policy.judge(module, name)
        evidence: dict[str, object] = {
            "type": q,
            "node": loader,
            "json_path": path,
            "occurrences": count[q],
            "rules_version": policy.version,
        }
        if j.kind is Verdictish.ALLOWED and j.rule is not None and policy.reports(j.rule):
            # a project file's scan.allow entry, or --allow in a scan gate: see judge_result
            entry, suffix, what, source, remediation = allowed_by(j.rule.id)
            evidence.update(allow_entry=entry, source=source)
            out.findings.append(
                at.finding(
                    f"scan.skops.{suffix}",
                    Severity.INFO,
                    f"{q} is allowed only by {what} {entry}",
                    evidence=evidence,
                    remediation=remediation,
                    references=_REFS,
                )
            )
        elif j.kind is Verdictish.DENIED and j.rule is not None:
            evidence.update(rule=j.rule.id, rationale=j.rule.rationale, matched=j.matched)
            out.findings.append(
                at.finding(
                    "scan.skops.denied-type",
                    j.rule.severity,
                    f"skops schema makes the loader import denied {q}",
                    evidence=evidence,
                    remediation=_REMEDIATE,
                    references=(j.rule.reference, *_REFS),
                )
            )
        elif (
            j.kind is Verdictish.ALLOWED
            and j.rule is not None
            and not j.rule.call
            and (loader != "TypeNode" or "/key_types/" in path or q in called)
        ):
            evidence["json_path"] = called.get(q, path)
            # allowed only as a class reference; skops calls it (ConstructorFromReduceNode,
            # ObjectNode, DictNode key types): numpy.memmap(path, 'w+') truncated a chosen file
            evidence.update(rule=j.rule.id, rationale=j.rule.rationale)
            out.findings.append(
                at.finding(
                    "scan.skops.reference-only-called",
                    Severity.HIGH,
                    f"skops schema makes the loader call {q}; the allow-list accepts it only as a "
                    "class reference",
                    evidence=evidence,
                    remediation=_REMEDIATE,
                    references=(j.rule.reference, *_REFS),
                )
            )
        elif j.kind is Verdictish.UNKNOWN:
            out.findings.append(
                at.finding(
                    "scan.skops.unknown-type",
                    Severity.MEDIUM,
                    f"skops schema makes the loader import {q}, which the allow-list does not know",
                    evidence=evidence,
                    remediation=_REMEDIATE,
                    references=_REFS,
                )
            )
    if compiled is not None:
        _check_values(art, at, compiled, out)


def _check_values(art: Artifact, at: Artifact, compiled: Any, out: Outcome) -> None:
    """The emulator's checks on what the loader calls and hands over (see :mod:`._skops_schema`).

    A ``dunder-state`` (``__array_interface__`` in an ``ObjectNode``'s state), ``codec-call``,
    ``allocation-bomb`` or ``file-path-argument`` found in the compiled stream becomes
    ``scan.skops.<kind>``, located in ``schema.json`` by the JSON path of the node that acts.
    """
    stream, sites, problems, _ = compiled
    ctx = art.ctx
    res = emulate(
        io.BytesIO(stream),
        capture=ctx.policy.capture,
        max_value=ctx.limits.max_value_bytes,
        deadline=ctx.deadline,
        joblib=False,
        fold=ctx.policy.allows,
    )
    if not res.complete:
        if res.timed_out:
            out.errors.append(f"{ctx.time_limit_message()} (checking schema.json's values)")
        else:  # the stream is ours: a failure means the values could not all be checked
            out.errors.append(f"schema.json's values could not be checked: {res.error}"[:300])
    offsets = [o for o, _ in sites]
    found = [
        (a, sites[i][1] if (i := bisect.bisect_right(offsets, a.offset) - 1) >= 0 else "/")
        for a in res.anomalies
    ]
    found += [(Anomaly(kind, -1, "schema", detail), path) for kind, detail, path in problems]
    for a, path in found:
        out.findings.append(
            anomaly_finding(
                at,
                a,
                rule_prefix="scan.skops",
                offset=None,
                evidence={"json_path": path, "detail": a.detail, "node_act": a.opcode},
                title="skops schema trick",
            )
        )


@register("scanner")
class SkopsScanner(Scanner):
    """skops archives: every type and callable ``schema.json`` makes the loader import."""

    id: ClassVar[str] = "scan.skops"
    title: ClassVar[str] = "skops archive scanner"
    formats: ClassVar[tuple[str, ...]] = ("skops",)
    priority: ClassVar[int] = 16
    sniff_first_bytes: ClassVar[bytes | None] = b"P"  # zip magic
    references: ClassVar[tuple[str, ...]] = _REFS
    threat_model: ClassVar[str] = (
        "The attacker ships a .skops file whose schema names a type or callable of their choice; "
        "the victim trusts the file's own list of untrusted types and loads it."
    )

    @classmethod
    def sniff(cls, head: bytes, name: str) -> bool:
        """Zip magic; the member list decides (a top-level ``schema.json``)."""
        return head.startswith(ZIP_MAGICS)

    def scan(self, artifact: Artifact) -> Outcome:
        """Judge the schema's types and dispatch the array members.

        Raises:
            NotThisFormat: a zip without a top-level ``schema.json`` (or not named ``.skops``
                and without ``.npy`` members beside it).
        """
        try:
            zf = open_zip(artifact)
        except BadZip as exc:
            if artifact.name.lower().endswith(".skops"):
                return Outcome.error("skops", f"corrupt zip archive: {exc}")
            raise NotThisFormat from exc
        with zf:
            names = set(zf.namelist())
            skops_like = artifact.name.lower().endswith(".skops") or any(n.endswith(".npy") for n in names)
            if "schema.json" not in names or not skops_like:
                raise NotThisFormat
            out = Outcome(format="skops")
            info = zf.getinfo("schema.json")
            try:
                text = read_document(artifact, zf, info, out)
            except member_errors() as exc:  # walk_zip reports it too (it reads the member again)
                text = None
                out.errors.append(f"member 'schema.json' is unreadable: {exc}")
            schema: Any = None
            if text is not None:
                try:
                    schema = json.loads(text)
                except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                    out.errors.append(
                        f"schema.json is not a readable skops schema: {type(exc).__name__}: {exc}"[:300]
                    )
            # raw bytes skops never loads itself (a BytesNode's b"abc"): not judged as model files
            raw = _raw_bytes_members(schema) if schema is not None else set()

            def check(art: Artifact, _zf: zipfile.ZipFile, member: zipfile.ZipInfo, o: Outcome) -> None:
                if schema is not None:
                    _check_schema(art, member, schema, o)

            def raw_member(art: Artifact, zf_: zipfile.ZipFile, member: zipfile.ZipInfo, o: Outcome) -> None:
                # skops reads it as bytes, but another loader may open the same file (np.load
                # reads every member of a zip as an array: a pickled object array runs, red-team
                # round 25): scanned, keeping what is at least medium; a raw blob's parse errors
                # and "malformed" notes are not the file's (b"abc" is no broken pickle)
                data = read_document(art, zf_, member, o)
                if data is None:
                    return
                sub = art.ctx.scan(art.child(member.filename, io.BytesIO(data), len(data)))
                kept = [f for f in sub.findings if f.severity >= Severity.MEDIUM]
                if kept:
                    o.findings.extend(kept)
                    o.add_globals(sub.globals)

            def classify(name: str) -> MemberAction:
                if name == "schema.json":
                    return check
                return raw_member if name in raw else "dispatch"

            walk_zip(artifact, zf, out, plugin_id=self.id, classify=classify)
            return out
