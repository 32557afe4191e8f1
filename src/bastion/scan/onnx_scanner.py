"""``scan.onnx``: ONNX models (protobuf), behind the ``onnx`` extra.

Threat model: an ONNX file cannot run Python when parsed, but it can (1) point its tensors'
external data at any file (``location: ../../etc/passwd`` or an absolute path), so that loading
it reads — and a runtime may expose — files outside the model folder; (2) use operators from a
non-standard domain, which a runtime resolves to native code from a custom-op library the
attacker also ships or expects to be registered. The scanner parses the protobuf with
``onnx.ModelProto.ParseFromString`` (parsing runs no code) and walks every graph, sub-graph and
model-local function.

Reference: ONNX IR spec (https://onnx.ai/onnx/repo-docs/IR.html), external data
(https://onnx.ai/onnx/repo-docs/ExternalData.html), CVE-2024-27318 (ONNX external-data path
traversal).
"""

from __future__ import annotations

import os
import re
from typing import Any, ClassVar

from bastion.core.errors import MissingExtraError, require
from bastion.core.registry import register
from bastion.core.severity import Severity
from bastion.scan.base import Artifact, NotThisFormat, Outcome, Scanner, starts_as_another_format

__all__ = ["STANDARD_DOMAINS", "OnnxScanner", "location_escapes"]

#: Operator domains defined by the ONNX standard ("" and "ai.onnx" are the default domain).
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training"})
_FIELD_TAGS = frozenset({0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0xA2, 0xCA})
_MAX_BYTES = (2 << 30) - 1
_DRIVE = re.compile(r"^[A-Za-z]:")
_EXTERNAL = 1  # onnx.TensorProto.EXTERNAL


def _text(value: str | bytes) -> str:
    """A protobuf string field as text (``bytes`` for invalid UTF-8 are kept as surrogate escapes).

    The Python protobuf gives ``bytes`` for a string field that is not valid UTF-8 (found by
    fuzzing: a location like that was an internal scanner error).
    """
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def location_escapes(location: str) -> str | None:
    """Why an external-data ``location`` leaves the model folder, or ``None``.

    Args:
        location: the ``location`` entry of a tensor's ``external_data``.
    """
    if not location:
        return "empty location"
    if "\x00" in location:
        return "NUL byte in location"
    if location.startswith(("/", "\\")) or _DRIVE.match(location):
        return "absolute path"
    if location.startswith("~"):
        return "home-directory path"
    depth = 0
    for part in re.split(r"[\\/]+", location):
        if part in ("", "."):
            continue
        if part == "..":
            depth -= 1
            if depth < 0:
                return "parent-directory component '..' leaves the model folder"
        else:
            depth += 1
    if ".." in re.split(r"[\\/]+", location):
        return "parent-directory component '..'"
    return None


def _link_escapes(art: Artifact, location: str) -> str | None:
    """Why a relative external-data file next to a top-level model resolves outside its folder.

    The path stays inside the folder as written, but a symbolic link there (shipped with the
    model: git and archives keep links) makes the runtime read whatever it points at. Allowed
    targets: the model's folder, and the folder of the model file's own target (a Hugging Face
    cache links every file of a snapshot into the same ``blobs`` folder). Members of containers
    and files whose external data is absent are not checked.
    """
    if art.member is not None or art.depth:
        return None
    folder = os.path.dirname(os.path.abspath(art.path))
    candidate = os.path.join(folder, *re.split(r"[\\/]+", location))
    if not os.path.lexists(candidate):
        return None
    target = os.path.realpath(candidate)
    roots = {os.path.realpath(folder), os.path.dirname(os.path.realpath(art.path))}
    for root in roots:
        try:
            if os.path.commonpath([root, target]) == root:
                return None
        except ValueError:  # different drives
            continue
    return f"symbolic link resolves outside the model folder, to {target!r}"


def _walk_graph(graph: Any, where: str, visit_node: Any, visit_tensor: Any) -> None:
    for t in graph.initializer:
        visit_tensor(t, f"{where}/initializer:{t.name}")
    for st in graph.sparse_initializer:
        visit_tensor(st.values, f"{where}/sparse_initializer:{st.values.name}")
        visit_tensor(st.indices, f"{where}/sparse_initializer:{st.indices.name}")
    for i, node in enumerate(graph.node):
        node_where = f"{where}/node[{i}]:{node.name or node.op_type}"
        visit_node(node, node_where)
        _walk_attributes(node.attribute, node_where, visit_node, visit_tensor)


def _walk_attributes(attrs: Any, where: str, visit_node: Any, visit_tensor: Any) -> None:
    for a in attrs:
        if a.HasField("t"):
            visit_tensor(a.t, f"{where}/{a.name}")
        for j, t in enumerate(a.tensors):
            visit_tensor(t, f"{where}/{a.name}[{j}]")
        if a.HasField("sparse_tensor"):
            visit_tensor(a.sparse_tensor.values, f"{where}/{a.name}.values")
            visit_tensor(a.sparse_tensor.indices, f"{where}/{a.name}.indices")
        if a.HasField("g"):
            _walk_graph(a.g, f"{where}/{a.name}", visit_node, visit_tensor)
        for j, g in enumerate(a.graphs):
            _walk_graph(g, f"{where}/{a.name}[{j}]", visit_node, visit_tensor)


@register("scanner")
class OnnxScanner(Scanner):
    """ONNX models: external-data locations and non-standard operator domains."""

    id: ClassVar[str] = "scan.onnx"
    title: ClassVar[str] = "ONNX model scanner"
    formats: ClassVar[tuple[str, ...]] = ("onnx",)
    priority: ClassVar[int] = 40
    sniff_first_bytes: ClassVar[bytes | None] = b"\x08"  # ``ir_version``'s tag, or an ONNX name
    sniff_suffixes: ClassVar[tuple[str, ...]] = (".onnx", ".ort")
    references: ClassVar[tuple[str, ...]] = (
        "https://onnx.ai/onnx/repo-docs/ExternalData.html",
        "https://nvd.nist.gov/vuln/detail/CVE-2024-27318",
        "https://onnxruntime.ai/docs/reference/operators/add-custom-op.html",
    )
    threat_model: ClassVar[str] = (
        "The attacker ships an ONNX file whose external data reads files outside the model "
        "folder, or whose custom operators run native code from a library they control."
    )

    @classmethod
    def sniff(cls, head: bytes, name: str) -> bool:
        """A ``.onnx``/``.ort`` name, or a ModelProto start (``ir_version`` then a known field).

        Named bytes that carry another format's magic (pickle, zip, gzip, npy ...) and do not
        parse as ONNX go on to that format's scanner (:meth:`scan`).
        """
        if name.lower().endswith((".onnx", ".ort")):
            return True
        return len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 30 and head[2] in _FIELD_TAGS

    def scan(self, artifact: Artifact) -> Outcome:
        """Parse the ModelProto and check it.

        Raises:
            NotThisFormat: the bytes are not an ONNX model and the name does not say they are.
        """
        named = artifact.name.lower().endswith((".onnx", ".ort"))
        try:
            onnx = require("onnx", "onnx")
        except MissingExtraError as exc:
            return Outcome.error("onnx", str(exc))
        artifact.stream.seek(0)
        data = artifact.stream.read(_MAX_BYTES + 1)
        if len(data) > _MAX_BYTES:
            return Outcome.error("onnx", "ONNX protobuf larger than 2 GiB cannot be parsed")
        # bytes that start as another format: that format's, unless they also parse as ONNX
        # (a polyglot: both readings are scanned)
        foreign = starts_as_another_format(data[:8])
        model = onnx.ModelProto()
        try:
            model.ParseFromString(data)
        except Exception as exc:
            if named and not foreign:
                return Outcome.error("onnx", f"not a valid ONNX protobuf: {type(exc).__name__}: {exc}")
            raise NotThisFormat from exc
        if not model.HasField("graph") or model.ir_version <= 0:
            if named and not foreign:
                return Outcome.error("onnx", "ONNX file without a graph or IR version")
            raise NotThisFormat
        out = self._check(artifact, model)
        return artifact.ctx.also_by_magic(artifact, out, "scan.onnx") if foreign else out

    def _check(self, art: Artifact, model: Any) -> Outcome:
        out = Outcome(format="onnx")
        local_functions = {(_text(f.domain), _text(f.name)) for f in model.functions}
        custom: dict[str, dict[str, Any]] = {}
        escapes: list[tuple[str, str, str]] = []
        external: list[str] = []  # every external-data location

        def visit_node(node: Any, where: str) -> None:
            domain, op_type = _text(node.domain), _text(node.op_type)
            if domain in STANDARD_DOMAINS or (domain, op_type) in local_functions:
                return
            entry = custom.setdefault(domain, {"ops": {}, "nodes": 0, "first": where})
            entry["ops"][op_type] = None
            entry["nodes"] += 1

        def visit_tensor(t: Any, where: str) -> None:
            if t.data_location != _EXTERNAL:
                return
            location = ""
            for kv in t.external_data:
                if _text(kv.key) == "location":
                    location = _text(kv.value)
            external.append(location)
            why = location_escapes(location) or _link_escapes(art, location)
            if why:
                escapes.append((where, location, why))

        _walk_graph(model.graph, "graph", visit_node, visit_tensor)
        for f in model.functions:
            for i, node in enumerate(f.node):
                where = f"function:{f.domain}.{f.name}/node[{i}]"
                visit_node(node, where)
                _walk_attributes(node.attribute, where, visit_node, visit_tensor)
            # default attribute values of the function (a runtime inlines them into its body)
            _walk_attributes(
                f.attribute_proto, f"function:{f.domain}.{f.name}/default", visit_node, visit_tensor
            )
        for i, info in enumerate(model.training_info):
            for part in ("initialization", "algorithm"):
                if info.HasField(part):
                    _walk_graph(getattr(info, part), f"training_info[{i}].{part}", visit_node, visit_tensor)
        if external and not escapes:
            files = sorted(set(external))
            out.findings.append(
                art.finding(
                    "scan.onnx.external-data",
                    Severity.LOW,
                    f"ONNX model keeps tensors in {len(files)} external file(s), outside this file's "
                    "hash and signature",
                    evidence={"locations": files[:20], "tensors": len(external)},
                    remediation="Sign the folder as a whole, or save the model with its weights inside "
                    "(onnx.save(model, path, save_as_external_data=False)); Bastion's loaders refuse it.",
                    references=("https://onnx.ai/onnx/repo-docs/ExternalData.html",),
                )
            )
        for where, location, why in escapes[:50]:
            out.findings.append(
                art.finding(
                    "scan.onnx.external-data-escape",
                    Severity.HIGH,
                    f"ONNX tensor reads external data outside the model folder: {location!r}",
                    evidence={"tensor": where, "location": location, "reason": why, "count": len(escapes)},
                    remediation="Do not load this model; external data must be a relative path "
                    "inside the model's folder.",
                    references=(
                        "https://onnx.ai/onnx/repo-docs/ExternalData.html",
                        "https://nvd.nist.gov/vuln/detail/CVE-2024-27318",
                    ),
                )
            )
        for domain, entry in sorted(custom.items()):
            ops = sorted(entry["ops"])
            out.findings.append(
                art.finding(
                    "scan.onnx.custom-domain",
                    Severity.MEDIUM,
                    f"ONNX graph uses operators from non-standard domain {domain!r}",
                    evidence={
                        "domain": domain,
                        "op_types": ops[:50],
                        "nodes": entry["nodes"],
                        "first_node": entry["first"],
                    },
                    remediation="Custom operators run native code from a custom-op library; "
                    "check that library's provenance, or export with standard operators.",
                    references=("https://onnxruntime.ai/docs/reference/operators/add-custom-op.html",),
                )
            )
        return out
