"""A skops ``schema.json`` written out as the pickle stream that does what ``skops.io.load`` does.

``skops.io.load`` rebuilds each node of the schema: it calls constructors with stored arguments
(``ConstructorFromReduceNode``, ``ReduceNode``, a ``DictNode``'s key types, a ``ListNode``'s
class), creates objects with ``cls.__new__`` and hands them their state (``ObjectNode``:
``__setstate__`` or ``__dict__.update``), builds ``functools.partial`` and ``operator``
functions. Each of these is the same act as a pickle's ``REDUCE``, ``NEWOBJ`` or ``BUILD``, so
the schema is compiled into those opcodes and handed to the pickle emulator: the value checks the
emulator makes on a call or a state (a protocol attribute such as ``__array_interface__`` set on
an object, a text codec with quadratic cost, an allocation sized in gigabytes, a time zone that
names a file path) then apply to skops files too (red-team round 20). The stream is never
unpickled; names are spelt with ``STACK_GLOBAL`` (no line syntax to break out of).

Source: skops 0.16 ``skops/io/_general.py``, ``_sklearn.py`` (the nodes' ``_construct``).
"""

from __future__ import annotations

import json
import struct
from typing import Any

__all__ = ["MAX_DEPTH", "compile_schema"]

#: Nesting depth past which the schema is refused (skops's own recursive loader fails well before).
MAX_DEPTH = 400

_PROTO = b"\x80\x04"
_MARK, _STOP, _NONE = b"(", b".", b"N"
_TRUE, _FALSE = b"\x88", b"\x89"
_EMPTY_TUPLE, _TUPLE, _EMPTY_LIST, _APPENDS = b")", b"t", b"]", b"e"
_EMPTY_DICT, _SETITEMS, _EMPTY_SET, _ADDITEMS = b"}", b"u", b"\x8f", b"\x90"
_STACK_GLOBAL, _REDUCE, _NEWOBJ, _BUILD = b"\x93", b"R", b"\x81", b"b"
_CONTAINERS = {("builtins", "list"), ("builtins", "set"), ("builtins", "tuple"), ("builtins", "dict")}


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray(_PROTO)
        #: ``(offset of an act, JSON path of the node that does it)``, in offset order
        self.sites: list[tuple[int, str]] = []

    def act(self, op: bytes, path: str) -> None:
        self.sites.append((len(self.out), path or "/"))
        self.out += op

    def text(self, s: str) -> None:
        data = s.encode("utf-8", "surrogatepass")
        self.out += b"X" + struct.pack("<I", len(data)) + data

    def value(self, v: Any, depth: int) -> None:
        """A plain JSON value (a ``JsonNode``'s content, a ``SliceNode``'s bounds)."""
        if depth > MAX_DEPTH:
            raise ValueError(f"schema.json nests values deeper than {MAX_DEPTH} levels")
        if v is None:
            self.out += _NONE
        elif v is True or v is False:
            self.out += _TRUE if v else _FALSE
        elif isinstance(v, int):
            n = (v.bit_length() + 8) // 8 if v else 0
            data = v.to_bytes(n, "little", signed=True)
            self.out += (b"\x8a" + bytes([n]) if n < 256 else b"\x8b" + struct.pack("<I", n)) + data
        elif isinstance(v, float):
            self.out += b"G" + struct.pack(">d", v)
        elif isinstance(v, str):
            self.text(v)
        elif isinstance(v, list):
            self.out += _EMPTY_LIST + _MARK
            for item in v:
                self.value(item, depth + 1)
            self.out += _APPENDS
        elif isinstance(v, dict):
            self.out += _EMPTY_DICT + _MARK
            for k, item in v.items():
                self.text(str(k))
                self.value(item, depth + 1)
            self.out += _SETITEMS
        else:  # pragma: no cover - json.loads yields only the types above
            self.out += _NONE

    def glob(self, module: Any, name: Any) -> None:
        self.text(str(module))
        self.text(str(name))
        self.out += _STACK_GLOBAL

    def items(self, nodes: Any, path: str, depth: int) -> int:
        """Each node of a list (or a dict's values), pushed in order; how many."""
        if isinstance(nodes, dict):
            nodes = list(nodes.values())
        if not isinstance(nodes, list):
            return 0
        for i, n in enumerate(nodes):
            self.node(n, f"{path}/{i}", depth + 1)
        return len(nodes)

    def as_tuple(self, node: Any, path: str, depth: int) -> None:
        """A node used as ``*args``: a tuple or list node's items as a tuple, else the value."""
        if isinstance(node, dict) and node.get("__loader__") in ("TupleNode", "ListNode"):
            self.out += _MARK
            self.items(node.get("content"), f"{path}/content", depth)
            self.out += _TUPLE
        else:
            self.node(node, path, depth)

    def node(self, node: Any, path: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ValueError(f"schema.json nests nodes deeper than {MAX_DEPTH} levels")
        if not isinstance(node, dict):
            self.value(node if isinstance(node, (str, int, float, bool)) else None, depth)
            return
        loader, module, name = node.get("__loader__"), node.get("__module__"), node.get("__class__")
        content = node.get("content")
        plain = (module, name) in _CONTAINERS
        if loader == "JsonNode":
            try:
                value = json.loads(content) if isinstance(content, str) else None
            except (ValueError, RecursionError):
                value = None
            self.value(value, depth)
        elif loader in ("TupleNode", "ListNode", "SetNode"):
            if not plain:  # gettype(module, name)(items): the class is called with the items
                self.glob(module, name)
            if loader != "TupleNode":
                self.out += _EMPTY_SET if loader == "SetNode" else _EMPTY_LIST
            self.out += _MARK
            self.items(content, f"{path}/content", depth)
            self.out += _TUPLE if loader == "TupleNode" else (_ADDITEMS if loader == "SetNode" else _APPENDS)
            if not plain:
                if loader != "TupleNode":
                    self.out += b"\x85"  # TUPLE1: (items,)
                self.act(_REDUCE, path)
        elif loader == "DictNode":
            if not plain:
                self.glob(module, name)
            self.out += _EMPTY_DICT + _MARK
            kt = node.get("key_types")
            kinds = kt.get("content") if isinstance(kt, dict) else None
            kinds = kinds if isinstance(kinds, list) else []
            if isinstance(content, dict):
                for i, (key, value) in enumerate(content.items()):
                    kind = kinds[i] if i < len(kinds) else None
                    # content[k_type(key)]: the key's type is called with the stored key
                    if isinstance(kind, dict) and (kind.get("__module__"), kind.get("__class__")) != (
                        "builtins",
                        "str",
                    ):
                        self.node(kind, f"{path}/key_types/content/{i}", depth + 1)
                        self.out += _MARK
                        self.text(str(key))
                        self.out += _TUPLE
                        self.act(_REDUCE, f"{path}/key_types/content/{i}")
                    else:
                        self.text(str(key))
                    self.node(value, f"{path}/content/{key}", depth + 1)
            self.out += _SETITEMS
            if not plain:
                self.out += b"\x85"
                self.act(_REDUCE, path)
        elif loader in ("FunctionNode", "TypeNode"):
            self.glob(module, name)
        elif loader == "ConstructorFromReduceNode":
            self.glob(module, name)
            self.as_tuple(content, f"{path}/content", depth + 1)
            self.act(_REDUCE, path)
        elif loader == "ObjectNode":
            # cls.__new__(cls), then __setstate__(attrs) or __dict__.update(attrs): NEWOBJ + BUILD
            self.glob(module, name)
            self.out += _EMPTY_TUPLE
            self.act(_NEWOBJ, path)
            if content is not None:
                self.node(content, f"{path}/content", depth + 1)
                self.act(_BUILD, path)
        elif loader == "PartialNode" and isinstance(content, dict):
            # partial(func, *args, **kwds), then its __dict__ updated with ``namespace``
            self.glob("functools", "partial")
            self.out += _MARK
            self.node(content.get("func"), f"{path}/content/func", depth + 1)
            self.as_tuple(content.get("args"), f"{path}/content/args", depth + 1)
            self.node(content.get("kwds"), f"{path}/content/kwds", depth + 1)
            self.out += _TUPLE
            self.act(_REDUCE, path)
            if content.get("namespace") is not None:
                self.node(content.get("namespace"), f"{path}/content/namespace", depth + 1)
                self.act(_BUILD, path)
        elif loader == "SliceNode" and isinstance(content, dict):
            self.out += _MARK
            for part in ("start", "stop", "step"):
                self.value(content.get(part), depth + 1)
            self.out += _TUPLE
        elif loader == "OperatorFuncNode":
            self.glob("operator", name)
            self.as_tuple(node.get("attrs"), f"{path}/attrs", depth + 1)
            self.act(_REDUCE, path)
        elif loader == "MethodNode" and isinstance(content, dict):
            self.node(content.get("obj"), f"{path}/content/obj", depth + 1)  # getattr(obj, func)
        elif isinstance(node.get("__reduce__"), dict):
            # ReduceNode and its kin (TreeNode, LossNode ...): constructor(*args), then the state
            self.glob(module, name)
            self.as_tuple(node["__reduce__"].get("args"), f"{path}/__reduce__/args", depth + 1)
            self.act(_REDUCE, path)
            if content is not None:
                self.node(content, f"{path}/content", depth + 1)
                self.act(_BUILD, path)
        else:
            # a node kind not modelled here (arrays, dtypes, random states, sparse matrices):
            # its sub-nodes are still rebuilt by the loader, so they are compiled, as a tuple
            self.out += _MARK
            for key, value in node.items():
                if isinstance(value, dict | list) and key != "key_types":
                    if isinstance(value, list):
                        self.items(value, f"{path}/{key}", depth)
                    else:
                        self.node(value, f"{path}/{key}", depth + 1)
            self.out += _TUPLE


def compile_schema(schema: Any) -> tuple[bytes, list[tuple[int, str]]]:
    """The pickle stream doing what ``skops.io.load`` does with ``schema``, and its acts' JSON paths.

    Args:
        schema: the parsed ``schema.json``.

    Returns:
        ``(stream, sites)``: a protocol-4 pickle ending in ``STOP``, and ``(offset, json_path)``
        of every call or state hand-over in it, in offset order (to place the emulator's findings).

    Raises:
        ValueError: the schema nests deeper than :data:`MAX_DEPTH`.
    """
    w = _Writer()
    w.node(schema, "", 0)
    w.out += _STOP
    return bytes(w.out), w.sites
