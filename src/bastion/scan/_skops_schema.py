"""A skops ``schema.json`` written out as the pickle stream that does what ``skops.io.load`` does.

``skops.io.load`` rebuilds each node of the schema: it calls constructors with stored arguments
(``ConstructorFromReduceNode``, ``ReduceNode``, a ``DictNode``'s key types, a ``ListNode``'s
class, an array node's class, ``MaskedArray``), creates objects with ``cls.__new__`` and hands
them their state (``ObjectNode``: ``__setstate__`` or ``__dict__.update``), builds
``functools.partial`` and ``operator`` functions. Each of these is the same act as a pickle's
``REDUCE``, ``NEWOBJ`` or ``BUILD``, so the schema is compiled into those opcodes and handed to
the pickle emulator: the value checks the emulator makes on a call or a state (a protocol
attribute such as ``__array_interface__`` set on an object, a text codec with quadratic cost, an
allocation sized in gigabytes, a time zone that names a file path) then apply to skops files too
(red-team round 20). The stream is never unpickled; names are spelt with ``STACK_GLOBAL``.

skops resolves a node whose ``__id__`` it has seen before (a ``CachedNode``, a bare
``{"__id__": n}``, or any node reusing an id) to the node first seen with that id, in its own
construction order, whatever the rest of the referring node says; :func:`canonical_nodes` finds
that node and the stream refers to it with ``MEMOIZE``/``GET`` (red-team round 23: a reference
hid the arguments of a call, and a key type's class). A schema's ``protocol`` picks older node
readers: protocol 0's ``FunctionNode`` imports ``content.module_path``/``content.function``.

Source: skops 0.16 ``skops/io/_audit.py`` (``get_tree``), ``_general.py``, ``_numpy.py``,
``_scipy.py``, ``_sklearn.py``, ``old/`` (the nodes' ``__init__`` and ``_construct``).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_POOL_SIZE", "canonical_nodes", "compile_schema", "function_name"]

#: Nesting depth past which the schema is refused (skops's own recursive loader fails well before).
MAX_DEPTH = 200
#: ``SeedSequence(pool_size=...)`` words past which a stored seed state is an allocation bomb
#: (numpy writes 4; skops hands the stored value to ``SeedSequence(**state)``).
MAX_POOL_SIZE = 1 << 16

_PROTO = b"\x80\x04"
_MARK, _STOP, _NONE = b"(", b".", b"N"
_TRUE, _FALSE = b"\x88", b"\x89"
_EMPTY_TUPLE, _TUPLE, _TUPLE1, _EMPTY_LIST, _APPENDS = b")", b"t", b"\x85", b"]", b"e"
_EMPTY_DICT, _SETITEMS, _EMPTY_SET, _ADDITEMS = b"}", b"u", b"\x8f", b"\x90"
_STACK_GLOBAL, _REDUCE, _NEWOBJ, _BUILD = b"\x93", b"R", b"\x81", b"b"
_MEMOIZE, _POP = b"\x94", b"0"
_CONTAINERS = {("builtins", "list"), ("builtins", "set"), ("builtins", "tuple"), ("builtins", "dict")}
#: ``ReduceNode`` kin whose constructor skops fixes, whatever the node's own class says
_FIXED_CONSTRUCTOR = {
    "TreeNode": ("sklearn.tree._tree", "Tree"),
    "QuantileForestNode": ("quantile_forest._quantile_forest_fast", "QuantileForest"),
}


def _children(node: dict[str, Any], protocol: Any = None) -> Iterator[Any]:
    """A node's child states in the order skops's ``Node.__init__`` builds them (``get_tree`` calls)."""
    loader, content = node.get("__loader__"), node.get("content")
    if loader == "DictNode":
        yield node.get("key_types")
        if isinstance(content, dict):
            yield from content.values()
    elif loader in ("ListNode", "SetNode", "TupleNode"):
        if isinstance(content, list):
            yield from content
    elif loader == "DefaultDictNode" and isinstance(content, dict):
        yield from (content.get("main"), content.get("default_factory"))
    elif loader == "_DictWithDeprecatedKeysNode" and isinstance(content, dict):
        yield from (content.get("main"), content.get("_deprecated_key_to_new_key"))
    elif loader == "PartialNode" and isinstance(content, dict):
        yield from (content.get(k) for k in ("func", "args", "kwds", "namespace"))
    elif loader in ("ConstructorFromReduceNode", "ObjectNode", "RandomStateNode", "DTypeNode"):
        yield content
    elif loader == "MethodNode" and isinstance(content, dict):
        yield content.get("obj")
    elif loader == "OperatorFuncNode":
        yield node.get("attrs")
    elif loader == "NdArrayNode" and node.get("type") == "json":
        if isinstance(content, list):
            yield from content
        yield node.get("shape")
    elif loader == "MaskedArrayNode" and isinstance(content, dict):
        yield from (content.get("data"), content.get("mask"))
    elif loader == "RandomGeneratorNode" and isinstance(content, dict):
        if protocol == 0:  # the bit generator state is a raw dict: no node is built
            return
        yield content.get("bit_generator")
        if protocol != 1:  # protocol 1's reader never builds the seed sequence
            yield content.get("seed_seq")
    elif isinstance(node.get("__reduce__"), dict):  # ReduceNode: the attrs, then the arguments
        yield content
        yield node["__reduce__"].get("args")


def canonical_nodes(schema: Any) -> dict[Any, dict[str, Any]]:
    """``{__id__: the node skops memoises under it}``: the first node with that id, in skops's order.

    skops memoises a node when it starts building it (before its children), except a
    ``CachedNode`` and an id of ``0``/``None``; ``get_tree`` then answers any later state with
    that id with the memoised node.
    """
    first: dict[Any, dict[str, Any]] = {}
    protocol = schema.get("protocol") if isinstance(schema, dict) else None
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        ident = node.get("__id__")
        if ident is not None and _hashable(ident) and ident in first:
            continue  # skops returns the memoised node: this state's children are never read
        if ident and _hashable(ident) and node.get("__loader__") != "CachedNode":
            first[ident] = node
        stack.extend(reversed(list(_children(node, protocol))))
    return first


def _hashable(v: Any) -> bool:
    return isinstance(v, (int, str, float, bool))


def function_name(node: dict[str, Any], protocol: Any) -> tuple[Any, Any]:
    """``(module, name)`` a ``FunctionNode`` imports: protocol 0 reads them from ``content``."""
    content = node.get("content")
    if protocol == 0 and isinstance(content, dict) and "module_path" in content:
        return content.get("module_path"), content.get("function")
    return node.get("__module__"), node.get("__class__")


def _json_value(node: Any) -> Any:
    """A ``JsonNode``'s value (``None`` for anything else or bad JSON)."""
    if (
        isinstance(node, dict)
        and node.get("__loader__") == "JsonNode"
        and isinstance(node.get("content"), str)
    ):
        try:
            return json.loads(node["content"])
        except (ValueError, RecursionError):
            return None
    return None


class _Writer:
    def __init__(self, schema: Any, first: dict[Any, dict[str, Any]] | None = None) -> None:
        self.out = bytearray(_PROTO)
        #: ``(offset of an act, JSON path of the node that does it)``, in offset order
        self.sites: list[tuple[int, str]] = []
        #: ``(anomaly kind, detail, JSON path)`` the compiler finds itself
        self.problems: list[tuple[str, str, str]] = []
        self.protocol = schema.get("protocol") if isinstance(schema, dict) else None
        self.first = canonical_nodes(schema) if first is None else first
        #: ``(module, name, json_path)`` of every type skops calls as a key type (after references)
        self.called: list[tuple[str, str, str]] = []
        self.memo: dict[int, int] = {}  # id(canonical node) -> its pickle memo index
        self.building: set[int] = set()  # canonical nodes being compiled (a reference to one: a cycle)
        self.next_memo = 0

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

    def opaque(self) -> None:
        """A value the loader builds from a file member (an array): a call's result, size unknown."""
        self.glob("numpy", "asarray")
        self.out += _EMPTY_TUPLE + _REDUCE

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
        target = self.resolve(node)
        if (
            isinstance(target, dict)
            and target is node
            and node.get("__loader__") in ("TupleNode", "ListNode")
        ):
            self.out += _MARK
            self.items(node.get("content"), f"{path}/content", depth)
            self.out += _TUPLE
        else:
            self.node(node, path, depth)

    def resolve(self, node: Any) -> Any:
        """The node skops uses for ``node``: the memoised one when its ``__id__`` was seen first elsewhere."""
        if isinstance(node, dict):
            ident = node.get("__id__")
            if ident is not None and _hashable(ident):
                return self.first.get(ident, node)
        return node

    def node(self, node: Any, path: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ValueError(f"schema.json nests nodes deeper than {MAX_DEPTH} levels")
        target = self.resolve(node)
        if isinstance(target, dict) and isinstance(target.get("__id__"), (int, str, float, bool)):
            key = id(target)
            if key in self.memo:  # a reference to a node already built: the same object
                self.out += b"j" + struct.pack("<I", self.memo[key])  # LONG_BINGET
                return
            if key in self.building:
                raise ValueError(f"schema.json node at {path or '/'} refers to a node that encloses it")
            if target.get("__id__") in self.first:
                self.building.add(key)
                self._build(target, path, depth)
                self.building.discard(key)
                self.out += _MEMOIZE
                self.memo[key] = self.next_memo
                self.next_memo += 1
                return
        if isinstance(node, dict) and node.get("__loader__") == "CachedNode":
            self.out += _NONE  # an id never seen: skops refuses the file
            return
        self._build(node, path, depth)

    def _build(self, node: Any, path: str, depth: int) -> None:
        if not isinstance(node, dict):
            self.value(node if isinstance(node, (str, int, float, bool)) else None, depth)
            return
        loader, module, name = node.get("__loader__"), node.get("__module__"), node.get("__class__")
        content = node.get("content")
        plain = (module, name) in _CONTAINERS
        if loader == "JsonNode":
            self.value(_json_value(node), depth)
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
                    self.out += _TUPLE1  # (items,)
                self.act(_REDUCE, path)
        elif loader == "DictNode":
            self._dict(node, path, depth, plain)
        elif loader == "FunctionNode":
            self.glob(*function_name(node, self.protocol))
        elif loader == "TypeNode":
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
        elif loader == "NdArrayNode":
            self._array(node, path, depth)
        elif loader == "MaskedArrayNode" and isinstance(content, dict):
            self.glob("numpy.ma", "MaskedArray")  # np.ma.MaskedArray(data, mask)
            self.out += _MARK
            self.node(content.get("data"), f"{path}/content/data", depth + 1)
            self.node(content.get("mask"), f"{path}/content/mask", depth + 1)
            self.out += _TUPLE
            self.act(_REDUCE, path)
        elif loader == "RandomStateNode":
            self.glob(module, name)  # cls(), then set_state(content)
            self.out += _EMPTY_TUPLE
            self.act(_REDUCE, path)
            self.node(content, f"{path}/content", depth + 1)
            self.act(_BUILD, path)
        elif loader == "RandomGeneratorNode" and isinstance(content, dict):
            self._generator(node, content, path, depth)
        elif loader in ("DefaultDictNode", "_DictWithDeprecatedKeysNode", "DTypeNode") or (
            loader in ("BytesNode", "BytearrayNode", "SparseMatrixNode")
        ):
            # defaultdict(**main) + its factory (kept, called only later), a dtype of an array,
            # bytes read from a member, scipy's load_npz (no pickles): the children, as a tuple
            self.out += _MARK
            for i, child in enumerate(_children(node, self.protocol)):
                self.node(child, f"{path}/content/{i}", depth + 1)
            self.out += _TUPLE
        elif isinstance(node.get("__reduce__"), dict):
            # ReduceNode and its kin (TreeNode, LossNode ...): constructor(*args), then the state
            self.glob(*_FIXED_CONSTRUCTOR.get(str(loader), (module, name)))
            self.as_tuple(node["__reduce__"].get("args"), f"{path}/__reduce__/args", depth + 1)
            self.act(_REDUCE, path)
            if content is not None:
                self.node(content, f"{path}/content", depth + 1)
                self.act(_BUILD, path)
        else:  # a loader skops does not know: it refuses the file
            self.out += _NONE

    def _dict(self, node: dict[str, Any], path: str, depth: int, plain: bool) -> None:
        module, name, content = node.get("__module__"), node.get("__class__"), node.get("content")
        if not plain:
            self.glob(module, name)
        kt = node.get("key_types")
        resolved = self.resolve(kt)
        kinds: list[Any] = []
        # skops builds every key type before any value: they are compiled first (and popped),
        # so that a value referring to a key type finds it built, as skops does
        self.out += _MARK
        if (
            isinstance(resolved, dict)
            and resolved.get("__loader__") in ("ListNode", "TupleNode")
            and ((resolved.get("__module__"), resolved.get("__class__")) in _CONTAINERS)
        ):
            if resolved is not kt:
                self.node(kt, f"{path}/key_types", depth + 1)  # the referred list, built once
            items = resolved.get("content")
            kinds = items if isinstance(items, list) else []
            for i, kind in enumerate(kinds):
                self.node(kind, f"{path}/key_types/content/{i}", depth + 1)
        elif kt is not None:
            # key types that are not a plain list (a call's result: bytearray(3 << 30), a class
            # called with the keys): built by skops, then each item called with a key
            self.node(kt, f"{path}/key_types", depth + 1)
            self.problems.append(
                (
                    "dynamic-callable",
                    "DictNode key types are not a list of types: skops calls what they hold with each key",
                    f"{path}/key_types",
                )
            )
        self.out += b"1"  # POP_MARK: the key types stay in the memo for the calls below
        self.out += _EMPTY_DICT + _MARK
        if isinstance(content, dict):
            for i, (key, value) in enumerate(content.items()):
                kind = self.resolve(kinds[i]) if i < len(kinds) else None
                # content[k_type(key)]: the key's type is called with the stored key
                if isinstance(kind, dict) and (kind.get("__module__"), kind.get("__class__")) != (
                    "builtins",
                    "str",
                ):
                    kname = (
                        function_name(kind, self.protocol)
                        if kind.get("__loader__") == "FunctionNode"
                        else (
                            kind.get("__module__"),
                            kind.get("__class__"),
                        )
                    )
                    self.called.append((str(kname[0]), str(kname[1]), f"{path}/key_types/content/{i}"))
                    self.node(kinds[i], f"{path}/key_types/content/{i}", depth + 1)
                    self.out += _MARK
                    self.text(str(key))
                    self.out += _TUPLE
                    self.act(_REDUCE, f"{path}/key_types/content/{i}")
                else:
                    self.text(str(key))
                self.node(value, f"{path}/content/{key}", depth + 1)
        self.out += _SETITEMS
        if not plain:
            self.out += _TUPLE1
            self.act(_REDUCE, path)

    def _array(self, node: dict[str, Any], path: str, depth: int) -> None:
        module, name = node.get("__module__"), node.get("__class__")
        if node.get("type") == "json":
            shape = _json_value(self.resolve(node.get("shape")))
            # np.array(items, dtype="O") materialises what the items hold; a 1-d shape fills a
            # preallocated object array item by item instead
            call = not (isinstance(shape, list) and len(shape) == 1)
            if call:
                self.glob("numpy", "array")
            self.out += _EMPTY_LIST + _MARK
            self.items(node.get("content"), f"{path}/content", depth)
            self.out += _APPENDS
            self.node(node.get("shape"), f"{path}/shape", depth + 1)
            self.out += _POP
            if call:
                self.out += _TUPLE1
                self.act(_REDUCE, path)
            return
        # np.load(member, allow_pickle=False); a class outside numpy is then called with the
        # array (bytearray(<0-d int array>) allocates that many bytes: red-team round 23)
        call = (module, name) != ("numpy", "ndarray") and module != "numpy"
        if call:
            self.glob(module, name)
        self.opaque()
        if call:
            self.out += _TUPLE1
            self.act(_REDUCE, path)

    def _generator(self, node: dict[str, Any], content: dict[str, Any], path: str, depth: int) -> None:
        """``SeedSequence(**seed_seq_state)``, a bit generator from its state, ``cls(bit_generator=…)``."""
        seed = self.resolve(content.get("seed_seq"))
        pool = None
        if (
            isinstance(seed, dict)
            and seed.get("__loader__") == "DictNode"
            and isinstance(seed.get("content"), dict)
        ):
            pool = _json_value(self.resolve(seed["content"].get("pool_size")))
        elif isinstance(seed, dict):
            value = _json_value(seed)
            pool = value.get("pool_size") if isinstance(value, dict) else None
        if isinstance(pool, int) and not isinstance(pool, bool) and not 0 <= pool <= MAX_POOL_SIZE:
            self.problems.append(
                (
                    "allocation-bomb",
                    f"numpy SeedSequence(pool_size={pool:,}) from a stored seed state (numpy writes 4)",
                    f"{path}/content/seed_seq",
                )
            )
        self.out += _MARK
        self.node(content.get("bit_generator"), f"{path}/content/bit_generator", depth + 1)
        self.node(content.get("seed_seq"), f"{path}/content/seed_seq", depth + 1)
        self.out += _TUPLE


def compile_schema(
    schema: Any, *, first: dict[Any, dict[str, Any]] | None = None
) -> tuple[bytes, list[tuple[int, str]], list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """The pickle stream doing what ``skops.io.load`` does with ``schema``, with what it found.

    Args:
        schema: the parsed ``schema.json``.
        first: :func:`canonical_nodes` of ``schema``, when the caller has it already.

    Returns:
        ``(stream, sites, problems, called)``: a protocol-4 pickle ending in ``STOP``;
        ``(offset, json_path)`` of every call or state hand-over in it, in offset order (to place
        the emulator's findings); ``(anomaly kind, detail, json_path)`` found while compiling (a
        seed state sized to exhaust memory, key types that are not a list);
        ``(module, name, json_path)`` of each type called as a ``DictNode`` key type.

    Raises:
        ValueError: the schema nests deeper than :data:`MAX_DEPTH`, or a node refers to a node
            that encloses it (skops recurses without end on such a file).
    """
    # (two different full nodes sharing an ``__id__`` are not refused: skops's own dumps hold
    # them, an id reused by a temporary object; the stream follows what skops builds instead)
    w = _Writer(schema, first)
    w.node(schema, "", 0)
    w.out += _STOP
    return bytes(w.out), w.sites, w.problems, w.called
