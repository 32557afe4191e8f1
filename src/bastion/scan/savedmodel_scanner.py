"""``scan.savedmodel``: TensorFlow SavedModel graphs (``saved_model.pb``, frozen ``.pb``), stdlib only.

Threat model: ``tf.saved_model.load`` runs the graph the file describes. Graph ops cannot run
Python by themselves, but some reach outside the computation: ``ReadFile``/``MatchingFiles``
read and list the host's files (and a model can return them in its outputs), ``WriteFile`` writes
them, and ``PyFunc``/``EagerPyFunc`` call back into Python. ``keras_metadata.pb`` carries the
Keras layer configs (``Lambda`` layers hold bytecode). The protobuf is decoded by a minimal
wire-format reader (:mod:`bastion.scan._protowire`), without TensorFlow: op names come from
``GraphDef.node[].op`` and ``GraphDef.library.function[].node_def[].op`` of every meta graph.
Rules are data: ``rules/tf_ops.toml``.

Reference: tensorflow/core/protobuf/saved_model.proto, meta_graph.proto,
tensorflow/core/framework/graph.proto, function.proto, node_def.proto.
"""

import codecs
import functools
import re
from typing import ClassVar, NamedTuple

from bastion.core._regex import LazyPattern
from bastion.core.registry import register
from bastion.core.severity import Severity
from bastion.scan._keras import check_keras_config
from bastion.scan._protowire import WireError, fields, strings
from bastion.scan.base import Artifact, NotThisFormat, Outcome, Scanner, starts_as_another_format
from bastion.scan.policy import shipped_rules_text

__all__ = ["OpRule", "SavedModelScanner", "graph_ops", "load_op_rules"]

_MAX_BYTES = 2 << 30


class OpRule(NamedTuple):
    """One TensorFlow op rule (from ``rules/tf_ops.toml``)."""

    id: str
    ops: frozenset[str]
    severity: Severity
    rationale: str
    reference: str


@functools.cache
def load_op_rules() -> tuple[str, tuple[OpRule, ...]]:
    """The shipped TensorFlow op rules: ``(version, rules)``."""
    import tomllib  # a SavedModel's first scan loads the rules (not every scan's start-up)

    text = shipped_rules_text("tf_ops.toml")
    doc = tomllib.loads(text)
    rules = tuple(
        OpRule(
            id=r["id"],
            ops=frozenset(r["ops"]),
            severity=Severity(r["severity"]),
            rationale=r["rationale"],
            reference=r["reference"],
        )
        for r in doc["rule"]
    )
    return str(doc["version"]), rules


def _attr_funcs(attr_map: memoryview, depth: int = 0) -> list[str]:
    """Function names an ``attr`` map entry refers to (``AttrValue.func``, ``AttrValue.list.func``).

    A call op (``PartitionedCall``, ``If``, ``While``, ``MapDataset`` ...) runs the function its
    attribute names; when no library function has that name, TensorFlow instantiates the
    *primitive op* of that name, so ``f: {name: "ReadFile"}`` runs ``ReadFile`` without any node
    of that op. Entry: key 1, value 2 (AttrValue: list 1, func 10; ListValue.func 9;
    NameAttrList: name 1, attr 2).
    """
    if depth > 32:
        raise WireError("attribute functions nested deeper than 32 levels")
    names: list[str] = []

    def name_attr_list(buf: memoryview) -> None:
        for n, wt, v in fields(buf):
            if wt == 2 and isinstance(v, memoryview):
                if n == 1:
                    names.append(bytes(v).decode("utf-8", "replace"))
                elif n == 2:
                    names.extend(_attr_funcs(v, depth + 1))

    for num, wt, value in fields(attr_map):
        if num != 2 or wt != 2 or not isinstance(value, memoryview):
            continue
        for anum, awt, aval in fields(value):
            if awt != 2 or not isinstance(aval, memoryview):
                continue
            if anum == 10:
                name_attr_list(aval)
            elif anum == 1:
                for lnum, lwt, lval in fields(aval):
                    if lnum == 9 and lwt == 2 and isinstance(lval, memoryview):
                        name_attr_list(lval)
    return names


def _nodes(buf: memoryview, where: str, acc: dict[str, list[str]]) -> None:
    """Add ``op -> [where]`` for a NodeDef (field 1 name, field 2 op, field 5 attr).

    Functions named by the node's attributes count as ops too (see :func:`_attr_funcs`).
    """
    name = ""
    op = ""
    called: list[str] = []
    for num, wt, value in fields(buf):
        if wt == 2 and isinstance(value, memoryview):
            if num == 1:
                name = bytes(value).decode("utf-8", "replace")
            elif num == 2:
                op = bytes(value).decode("utf-8", "replace")
            elif num == 5:
                called.extend(_attr_funcs(value))
    if op:
        acc.setdefault(op, []).append(f"{where}/{name}")
    for fn in called:
        acc.setdefault(fn, []).append(f"{where}/{name}[calls {fn}]")


def _graph(buf: memoryview, where: str, acc: dict[str, list[str]]) -> int:
    """Walk a GraphDef; returns the node count."""
    count = 0
    for num, _, value in fields(buf):
        if not isinstance(value, memoryview):
            continue
        if num == 1:  # node
            _nodes(value, where, acc)
            count += 1
        elif num == 2:  # library: FunctionDefLibrary
            for fnum, _, fn in fields(value):
                if fnum != 1 or not isinstance(fn, memoryview):
                    continue
                fname = "function"
                for n, _, v in fields(fn):
                    if n == 1 and isinstance(v, memoryview):  # signature: OpDef.name
                        names = strings(v, 1)
                        fname = names[0] if names else fname
                    elif n == 3 and isinstance(v, memoryview):  # node_def
                        _nodes(v, f"{where}/function:{fname}", acc)
                        count += 1
    return count


def graph_ops(data: bytes, *, saved_model: bool) -> tuple[dict[str, list[str]], int]:
    """Op names of a serialised SavedModel (or of a bare GraphDef).

    Args:
        data: the protobuf bytes.
        saved_model: parse as ``SavedModel`` (meta graphs in field 2) rather than ``GraphDef``.

    Returns:
        ``({op name: [node locations]}, node count)``.

    Raises:
        WireError: the bytes are not a well-formed message.
    """
    buf = memoryview(data)
    acc: dict[str, list[str]] = {}
    if not saved_model:
        return acc, _graph(buf, "graph", acc)
    count = 0
    for i, (num, wt, value) in enumerate(fields(buf)):
        if num == 2 and wt == 2 and isinstance(value, memoryview):  # meta_graphs
            for mnum, mwt, mval in fields(value):
                if mnum == 2 and mwt == 2 and isinstance(mval, memoryview):  # graph_def
                    count += _graph(mval, f"meta_graph[{i}]", acc)
    return acc, count


_TEXT_TOKEN = LazyPattern(
    r"""\s+|\#[^\n]*|(?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')|(?P<word>[A-Za-z_][\w.]*)|(?P<p>.)""",
    re.DOTALL,
)


def _unescape(literal: str) -> str:
    body = literal[1:-1].encode("utf-8", "backslashreplace")
    try:
        return codecs.escape_decode(body)[0].decode("utf-8", "replace")
    except ValueError as exc:
        raise WireError(f"bad escape in string {literal[:40]!r}") from exc


def text_graph_ops(text: str) -> tuple[dict[str, list[str]], int]:
    r"""Op names of a text-format SavedModel or GraphDef (``saved_model.pbtxt``, ``graph.pbtxt``).

    Tokenises the text format (comments, adjacent string literals joined, C escapes such as
    ``\x46`` decoded): every ``op`` value is an op; every ``name`` directly inside a ``func``
    message is a function an attribute calls (a primitive op when no function has that name).

    Returns:
        ``({op name: [node locations]}, node count)``.

    Raises:
        WireError: an unterminated string or a bad escape.
    """
    acc: dict[str, list[str]] = {}
    stack: list[str] = []
    count = 0
    field = ""
    pending = ""  # the field a following "{" opens
    values: list[str] = []

    def flush() -> None:
        nonlocal field, values
        if field and values:
            value = "".join(values)
            if field == "op":
                acc.setdefault(value, []).append(f"text:{'/'.join(stack)}")
            elif field == "name" and stack and stack[-1] == "func":
                acc.setdefault(value, []).append(f"text:{'/'.join(stack)}[calls {value}]")
        field, values = "", []

    for m in _TEXT_TOKEN.finditer(text):
        if m.group("str") is not None:
            values.append(_unescape(m.group("str")))
            continue
        word, punct = m.group("word"), m.group("p")
        if word is None and punct is None:
            continue  # whitespace or comment
        if values:
            flush()
        if word is not None:
            field = pending = word
        elif punct in "{<":
            stack.append(pending)
            if pending in ("node", "node_def"):
                count += 1
            field = pending = ""
        elif punct in "}>":
            if stack:
                stack.pop()
            field = pending = ""
        elif punct in "\"'":
            raise WireError("unterminated string")
    flush()
    return acc, count


@register("scanner")
class SavedModelScanner(Scanner):
    """TensorFlow SavedModel and frozen-graph protobufs: file-I/O and py_func ops."""

    id: ClassVar[str] = "scan.savedmodel"
    title: ClassVar[str] = "TensorFlow SavedModel graph scanner"
    formats: ClassVar[tuple[str, ...]] = ("savedmodel", "tf-graphdef", "keras-metadata")
    priority: ClassVar[int] = 35
    sniff_first_bytes: ClassVar[bytes | None] = b""  # names only
    sniff_suffixes: ClassVar[tuple[str, ...]] = (".pb", ".pbtxt")
    references: ClassVar[tuple[str, ...]] = (
        "https://www.tensorflow.org/guide/saved_model",
        "https://github.com/tensorflow/tensorflow/blob/master/SECURITY.md",
    )
    threat_model: ClassVar[str] = (
        "The attacker ships a SavedModel whose graph reads or writes the host's files or calls "
        "back into Python when the victim loads and runs it."
    )

    @classmethod
    def sniff(cls, head: bytes, name: str) -> bool:
        """A ``.pb`` or ``.pbtxt`` name (protobufs have no magic bytes).

        TensorFlow loads ``saved_model.pbtxt`` (text format) when there is no ``saved_model.pb``.
        """
        return name.lower().endswith((".pb", ".pbtxt"))

    def scan(self, artifact: Artifact) -> Outcome:
        """Decode the protobuf and judge its ops.

        Bytes that start as another format (a pickle, a zip …) are read as that format too: when
        they are no protobuf of this kind they go on to that format's scanner; when they are, the
        file is a polyglot (:meth:`ScanContext.also_by_magic`).

        Raises:
            NotThisFormat: a ``.pb`` that is neither a SavedModel, a GraphDef nor Keras metadata.
        """
        artifact.stream.seek(0)
        data = artifact.stream.read(_MAX_BYTES + 1)
        if len(data) > _MAX_BYTES:
            return Outcome.error("savedmodel", "protobuf larger than 2 GiB cannot be a valid message")
        if not starts_as_another_format(data[:8]):
            return self._decoded(artifact, data)
        out = self._decoded(artifact, data)
        if out.errors and not out.findings:  # no protobuf of this kind: a pickle (zip ...) named .pb
            raise NotThisFormat("the bytes are another format's, not a protobuf")
        return artifact.ctx.also_by_magic(artifact, out, "scan.savedmodel")

    def _decoded(self, artifact: Artifact, data: bytes) -> Outcome:
        """:meth:`scan` of ``data`` as the protobuf its name says."""
        low = artifact.name.lower()
        if low == "keras_metadata.pb":
            return self._keras_metadata(artifact, data)
        if low == "fingerprint.pb":
            try:
                list(fields(memoryview(data)))
            except WireError as exc:
                return Outcome.error("savedmodel", f"fingerprint.pb is not a protobuf: {exc}")
            return Outcome(format="savedmodel-fingerprint")
        if low.endswith(".pbtxt"):
            saved = low == "saved_model.pbtxt"
            try:
                ops, count = text_graph_ops(data.decode("utf-8"))
            except (UnicodeDecodeError, WireError) as exc:
                if saved:
                    return Outcome.error(
                        "savedmodel", f"saved_model.pbtxt is not a text-format protobuf: {exc}"
                    )
                raise NotThisFormat from exc
        else:
            saved = low == "saved_model.pb"
            try:
                ops, count = graph_ops(data, saved_model=saved)
            except WireError as exc:
                if saved:
                    return Outcome.error("savedmodel", f"saved_model.pb is not a well-formed protobuf: {exc}")
                raise NotThisFormat from exc
        if count == 0 and not saved:
            raise NotThisFormat
        out = Outcome(format="savedmodel" if saved else "tf-graphdef")
        version, rules = load_op_rules()
        for rule in rules:
            hit = sorted(op for op in ops if op in rule.ops)
            if not hit:
                continue
            places = [p for op in hit for p in ops[op]]
            out.findings.append(
                artifact.finding(
                    f"scan.savedmodel.{rule.id.removeprefix('tf.')}-op",
                    rule.severity,
                    f"TensorFlow graph uses {', '.join(hit)} ({rule.rationale.split(':')[0]})",
                    evidence={
                        "ops": hit,
                        "nodes": places[:20],
                        "count": len(places),
                        "rule": rule.id,
                        "rationale": rule.rationale,
                        "rules_version": f"tf-ops@{version}",
                    },
                    remediation="Do not load this SavedModel unless these ops are expected; "
                    "re-export the model without file-I/O or py_func ops.",
                    references=(rule.reference,),
                )
            )
        return out

    def _keras_metadata(self, art: Artifact, data: bytes) -> Outcome:
        out = Outcome(format="keras-metadata")
        try:
            for num, wt, node in fields(memoryview(data)):
                if num != 1 or wt != 2 or not isinstance(node, memoryview):
                    continue
                for _, swt, value in fields(node):
                    if swt == 2 and isinstance(value, memoryview) and bytes(value[:1]) == b"{":
                        check_keras_config(
                            art, out, bytes(value), source="keras_metadata.pb", prefix="scan.savedmodel"
                        )
        except WireError as exc:
            return Outcome.error("keras-metadata", f"keras_metadata.pb is not a well-formed protobuf: {exc}")
        if out.errors:
            out.errors = [e for e in out.errors if "not valid JSON" not in e]
        return out
