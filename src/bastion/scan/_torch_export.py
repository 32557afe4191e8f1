"""Static checks of ``torch.export`` archives (``.pt2``) — not a plugin.

``torch.export.load`` reads ``<archive>/models/*.json`` and evaluates parts of it:
``sympy.sympify`` parses each ``expr_str`` (a Python expression, evaluated with Python's
builtins: ``__import__('os').system(...)`` runs), every node ``target`` is resolved by
``getattr`` along ``torch.*``/``_operator.*``/``math.*`` and called when the module runs
(``torch.save``, ``torch.hub.load``), and ``ExportedProgram.module()`` pastes each
``guards_code`` string into Python source and runs it with ``exec``. An archive torch wrote holds
srepr-style sympy expressions (``Symbol('s77', positive=True, integer=True)``), ``torch.ops``
targets of PyTorch's own namespaces, and guard expressions over ``L['x'].size()[0]``; anything
else is reported. The JSON is parsed, never evaluated.

Reference: torch/_export/serde/serialize.py (``deserialize_operator``, ``_parse_sym_expr``),
torch/export/_unlift.py (guards code).
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any, NamedTuple

from bastion.core.severity import Severity
from bastion.scan._torchscript import SIDE_EFFECT_OPS, STANDARD_OP_NAMESPACES

__all__ = ["ExportIssue", "analyse_export_json", "is_export_archive", "is_graph_member", "native_members"]

#: sympy classes and functions torch writes in ``expr_str`` (srepr form).
_SYMPY_CALLS = frozenset(
    {
        "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Mod", "Abs",
        "FloorDiv", "CeilDiv", "CleanDiv", "PythonMod", "ModularIndexing", "Where", "IntTrueDiv",
        "FloatTrueDiv", "ToFloat", "TruncToInt", "TruncToFloat", "CeilToInt", "FloorToInt",
        "RoundToInt", "RoundDecimal", "PowByNatural", "FloatPow", "Identity", "Eq", "Ne", "Lt", "Le",
        "Gt", "Ge", "StrictLessThan", "LessThan", "GreaterThan", "StrictGreaterThan", "Equality",
        "Unequality", "And", "Or", "Not", "Piecewise", "ExprCondPair", "LShift", "RShift",
        "BitwiseFn_bitwise_and", "BitwiseFn_bitwise_or", "BitwiseFn_bitwise_xor", "floor", "ceiling",
        "sqrt", "exp", "log", "sin", "cos", "tan",
    }
)  # fmt: skip
#: Names that reach Python's builtins when a string is evaluated.
_DANGER = frozenset(
    {
        "eval", "exec", "compile", "open", "getattr", "setattr", "delattr", "globals", "locals", "vars",
        "chr", "ord", "bytes", "input", "breakpoint", "exit", "quit", "help", "memoryview", "type",
        "object", "super", "classmethod", "staticmethod", "property", "print", "dir", "id", "hash",
    }
)  # fmt: skip
_SYMBOL = re.compile(r"[A-Za-z_]\w{0,63}")
#: ``\d+(?:\.\d*)?``, not ``\d+\.?\d*`` (the same strings): that one split a run of digits
#: between its two ``\d`` every way before failing, quadratic on a long string of digits and a letter.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+|inf|nan)")
#: Calls a guard expression may make (on tensor sizes) and names it may use.
_GUARD_METHODS = frozenset({"size", "stride", "storage_offset", "dim", "numel"})
_GUARD_CALLS = frozenset({"Max", "Min", "max", "min", "abs", "int", "float", "round"})
_GUARD_NAMES = _GUARD_CALLS | {"L", "math", "torch", "True", "False"}
_GUARD_FUNCS = frozenset(
    {"floor", "ceil", "trunc", "sqrt", "log", "exp", "sym_max", "sym_min", "sym_int", "sym_float"}
)
#: Attributes a guard expression may read or call (size queries, math functions).
_GUARD_ATTRS = _GUARD_METHODS | _GUARD_FUNCS
#: ``torch.*`` functions export graphs call besides ``torch.ops``.
_TORCH_TARGETS = frozenset(
    {
        "torch.sym_float", "torch.sym_int", "torch.sym_max", "torch.sym_min", "torch.sym_not",
        "torch.sym_ite", "torch.sym_sqrt", "torch.sym_sum", "torch._check", "torch._check_is_size",
        "torch._assert", "torch._assert_async", "torch._assert_scalar",
    }
)  # fmt: skip
#: AST nodes of plain arithmetic and comparisons.
_ARITH = (
    ast.BinOp,
    ast.UnaryOp,
    ast.Compare,
    ast.BoolOp,
    ast.Load,
    ast.operator,
    ast.unaryop,
    ast.cmpop,
    ast.boolop,
)
_OP_NAMESPACES = STANDARD_OP_NAMESPACES | {"higher_order", "_higher_order_ops"}
_TARGET = re.compile(r"(?:_operator|math)\.\w+|torch\.ops\.(\w+)\.(\w+)(?:\.\w+)?")
_MAX_JSON = 64 << 20


class ExportIssue(NamedTuple):
    """One construct of an export archive's JSON: ``kind``, ``severity``, ``detail`` (what, where)."""

    kind: str
    severity: Severity
    detail: str


def is_export_archive(names: list[str]) -> bool:
    """Whether zip member ``names`` are a ``torch.export`` archive's.

    The ``.pt2`` layout (``<root>/models/...`` beside ``archive_format``/``byteorder``), or the
    older one ``torch.export.load`` falls back to (``serialized_exported_program.json``).
    """
    low = [n.lower() for n in names]
    if any(n.endswith("serialized_exported_program.json") for n in low):
        return True
    return any(re.match(r"(?:[^/]+/)?models/", n) for n in low) and any(
        n.endswith(("archive_format", "archive_version", "/byteorder")) for n in low
    )


def is_graph_member(name: str) -> bool:
    """Whether ``torch.export.load`` reads a member as a graph.

    Anything under ``models/`` (any depth, any suffix), and any JSON of the archive (the older
    layout's program).
    """
    low = name.lower()
    return bool(re.match(r"(?:[^/]+/)?models/.", low)) or low.endswith(".json")


#: Members of an export archive that hold native code (AOTInductor: loaded with ``dlopen``).
_NATIVE = re.compile(r"(?:^|/)aotinductor/|\.(?:so|dylib|dll|pyd|o|cpp|cubin)$", re.IGNORECASE)


def native_members(names: list[str]) -> list[str]:
    """Members ``torch.export.load`` would load as native code (any ``aotinductor/`` file, ``.so``, …)."""
    return [n for n in names if _NATIVE.search(n)]


def _expr_problem(text: str) -> tuple[Severity, str] | None:
    """Why ``sympify(text)`` may do more than build a sympy expression, or ``None``."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return Severity.HIGH, "not a Python expression (sympify would still evaluate it)"
    for node in ast.walk(tree):
        if isinstance(node, (ast.Expression, ast.keyword, *_ARITH)):
            continue
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str) and not (
                _SYMBOL.fullmatch(node.value) or _NUMBER.fullmatch(node.value)
            ):
                return Severity.HIGH, f"string {node.value[:40]!r}"
            continue
        if isinstance(node, ast.Name):
            if node.id in _DANGER or node.id.startswith("_"):
                return Severity.HIGH, f"name {node.id!r}"
            continue
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                return Severity.HIGH, "a call of a computed callable"
            name = node.func.id
            if name in _DANGER or name.startswith("_"):
                return Severity.HIGH, f"call of {name!r}"
            if name not in _SYMPY_CALLS and not name.startswith("OpaqueUnaryFn_"):
                return Severity.MEDIUM, f"call of {name!r}, not a sympy function torch writes"
            continue
        return Severity.HIGH, f"{type(node).__name__} (attribute access, subscript, lambda or comprehension)"
    return None


def _guard_problem(text: str) -> tuple[Severity, str] | None:
    """Why a ``guards_code`` string is more than a guard expression over input sizes, or ``None``."""
    if any(c in text for c in "\n\r#;\\") or "__" in text:
        return (
            Severity.HIGH,
            "newline, comment, ';', backslash or '__' (pasted into source and run with exec)",
        )
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return Severity.HIGH, "not a Python expression (pasted into source and run with exec)"
    for node in ast.walk(tree):
        if isinstance(node, (ast.Expression, ast.Subscript, *_ARITH)):
            continue
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str) and not _SYMBOL.fullmatch(node.value):
                return Severity.HIGH, f"string {node.value[:40]!r}"
            continue
        if isinstance(node, ast.Name):
            if node.id not in _GUARD_NAMES:
                return Severity.HIGH, f"name {node.id!r}"
            continue
        if isinstance(node, ast.Attribute):
            if node.attr not in _GUARD_ATTRS:
                return Severity.HIGH, f"attribute {node.attr!r}"
            continue
        if isinstance(node, ast.Call):
            func = node.func
            ok = (isinstance(func, ast.Name) and func.id in _GUARD_CALLS) or (
                isinstance(func, ast.Attribute) and func.attr in _GUARD_ATTRS
            )
            if not ok or node.keywords:
                return Severity.HIGH, "a call that is not a size query or arithmetic"
            continue
        return Severity.HIGH, f"{type(node).__name__}"
    return None


def _target_problem(target: str) -> tuple[Severity, str] | None:
    if target in _TORCH_TARGETS or target.startswith("#"):  # '#': registered extension operators
        return None
    m = _TARGET.fullmatch(target)
    if m is None:
        return (
            Severity.HIGH,
            f"target {target[:80]!r} (resolved by getattr along torch/_operator/math and called)",
        )
    ns, op = m.group(1), m.group(2)
    if op is not None and op in SIDE_EFFECT_OPS:  # aten::from_file / save read or write a chosen file
        return Severity.HIGH, f"operator torch.ops.{ns}.{op}, which reads or writes files"
    if ns is not None and ns not in _OP_NAMESPACES:
        return Severity.MEDIUM, f"custom operator namespace torch.ops.{ns}"
    return None


def analyse_export_json(data: bytes, member: str) -> list[ExportIssue]:
    """Issues of one ``models/*.json`` member (at most 50); unreadable JSON is one issue."""
    if len(data) > _MAX_JSON:
        return [
            ExportIssue("unanalysed", Severity.MEDIUM, f"{member}: over {_MAX_JSON >> 20} MiB, not analysed")
        ]
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return [ExportIssue("unanalysed", Severity.MEDIUM, f"{member}: not JSON ({type(exc).__name__})")]
    issues: list[ExportIssue] = []
    seen: set[str] = set()
    todo: list[Any] = [doc]
    nodes = 0
    while todo and len(issues) < 50:
        v = todo.pop()
        nodes += 1
        if nodes > 5_000_000:
            issues.append(ExportIssue("unanalysed", Severity.MEDIUM, f"{member}: too large to analyse"))
            break
        if isinstance(v, list):
            todo.extend(v)
            continue
        if not isinstance(v, dict):
            continue
        for key, val in v.items():
            found: tuple[Severity, str] | None = None
            kind = ""
            if key == "expr_str" and isinstance(val, str):
                kind, found = "export-expression", _expr_problem(val)
            elif key in ("target", "as_operator") and isinstance(val, str):
                # a node's callee, and an operator handed to a higher-order op (with_effects calls it)
                kind, found = "export-target", _target_problem(val)
            elif key == "guards_code" and isinstance(val, list):
                for g in val:
                    p = _guard_problem(g) if isinstance(g, str) else (Severity.HIGH, "not a string")
                    if p is not None and (g_key := f"guard:{g!r}") not in seen:
                        seen.add(g_key)
                        issues.append(ExportIssue("export-guard-code", p[0], f"{p[1]}: {str(g)[:80]!r}"))
                continue
            if found is not None and (k := f"{kind}:{val}") not in seen:
                seen.add(k)
                issues.append(ExportIssue(kind, found[0], f"{found[1]}: {str(val)[:80]!r}"))
            if isinstance(val, (dict, list)):
                todo.append(val)
    return issues
