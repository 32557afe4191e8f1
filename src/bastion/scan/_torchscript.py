"""Static analysis of TorchScript code members (``code/**/*.py``) — not a plugin.

Rule (why plain TorchScript is not flagged): ``torch.jit.load`` compiles these members with the
TorchScript compiler, whose resolver knows only ``torch``, ``ops``, ``__torch__``, ``math`` and
TorchScript's own builtins (``annotate``, ``uninitialized``, ``getattr`` on modules, ...). Python
builtins such as ``eval``, ``exec``, ``__import__`` or ``open`` and modules such as ``os`` do not
exist there, so code that uses them cannot be plain TorchScript and is flagged ``high``. What
plain TorchScript *can* reach beyond tensor maths is native code: operators and classes of a
custom library (``torch.ops.<ns>``, ``torch.classes.<ns>`` outside PyTorch's own namespaces,
``medium``) and the few ATen ops with side effects on the host (``from_file``, ``save``,
``load``; ``high``). The text is parsed with :func:`ast.parse` (parsing runs nothing); a member
that does not parse stays "not analysed" (``medium``).

Reference: torch/csrc/jit/serialization/import_source.cpp (the resolver), PyTorch docs
"TorchScript Language Reference" (https://pytorch.org/docs/stable/jit_language_reference.html).
"""

from __future__ import annotations

import ast
import re
from typing import NamedTuple

from bastion.core.severity import Severity

__all__ = ["SIDE_EFFECT_OPS", "STANDARD_OP_NAMESPACES", "CodeIssue", "analyse_torchscript"]

#: ``torch.ops`` namespaces that ship with PyTorch itself.
STANDARD_OP_NAMESPACES = frozenset(
    {
        "aten",
        "prim",
        "quantized",
        "_quantized",
        "prepacked",
        "_caffe2",
        "quantized_decomposed",
        "profiler",
        "_c10d_functional",
        "c10d",
        "_c10d_functional_autograd",
        "mkldnn",
        "mkldnn_prepacked",
        "onednn",
        "fbgemm",
        "xnnpack",
    }
)
#: ``torch.classes`` namespaces that ship with PyTorch itself.
STANDARD_CLASS_NAMESPACES = frozenset(
    {"quantized", "xnnpack", "mkldnn", "onednn", "_nnapi", "c10d", "dist_c10d"}
)
_DANGER_NAMES = frozenset(
    {
        "__import__",
        "eval",
        "exec",
        "compile",
        "open",
        "globals",
        "locals",
        "vars",
        "setattr",
        "delattr",
        "__builtins__",
        "breakpoint",
        "exit",
        "quit",
    }
)
_DANGER_ROOTS = frozenset(
    {
        "os",
        "sys",
        "subprocess",
        "builtins",
        "importlib",
        "socket",
        "shutil",
        "pty",
        "posix",
        "nt",
        "ctypes",
        "pickle",
        "marshal",
        "io",
        "pathlib",
        "runpy",
        "code",
        "codeop",
        "urllib",
        "http",
        "requests",
        "webbrowser",
        "multiprocessing",
        "threading",
        "signal",
        "pdb",
        "types",
        "inspect",
    }
)
SIDE_EFFECT_OPS = frozenset(
    {"from_file", "save", "load", "_load_for_mobile", "_save_for_mobile", "load_tensor"}
)
#: Module values TorchScript code can hold: a name bound to one (``t = torch``) or an attribute
#: taken by name (``getattr(torch, 'from_file')``) hides the chain the analysis reads.
_MODULE_ROOTS = frozenset({"torch", "ops", "classes"})
_OK_DUNDERS = frozenset(
    {
        "__torch__",
        "__parameters__",
        "__buffers__",
        "__annotations__",
        "__getstate__",
        "__setstate__",
        "__init__",
        "__len__",
        "__getitem__",
        "__setitem__",
        "__contains__",
        "__forward__",
        "__is__",
        "__isnot__",
        "__not__",
        "__derive_index",
        "__range_length",
        "__str__",
        "__hash__",
        "__eq__",
        "__iter__",
        "__next__",
        "__enter__",
        "__exit__",
        "__round_to_zero_floordiv",
        "__interpolate",
    }
)


class CodeIssue(NamedTuple):
    """One construct found in TorchScript code.

    Attributes:
        kind: ``python-builtin``, ``python-module``, ``dunder-access``, ``side-effect-op``,
            ``import``, ``custom-op``, ``custom-class`` or ``unparsed``.
        severity: high for what plain TorchScript cannot contain or host side effects; medium
            for custom native code and unparsed members.
        detail: the construct (``os.system``, ``torch.ops.mylib.run``).
        line: 1-based line number (0 when unknown).
    """

    kind: str
    severity: Severity
    detail: str
    line: int


#: TorchScript's own name mangling of generated classes (``__torch__.___torch_mangle_3.Conv``).
_MANGLED = re.compile(r"___torch_mangle_\d+")


def _dotted(node: ast.AST) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def _is_module_value(node: ast.AST) -> bool:
    """``torch``, ``ops``, ``classes`` or a short attribute chain of them (``torch.ops.aten``)."""
    parts = _dotted(node)
    return parts is not None and parts[0] in _MODULE_ROOTS and len(parts) <= 3


def analyse_torchscript(text: str) -> list[CodeIssue]:
    """Find constructs that plain TorchScript code does not contain.

    Args:
        text: one code member's source.

    Returns:
        Issues in source order (empty for plain TorchScript).
    """
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return [CodeIssue("unparsed", Severity.MEDIUM, f"{type(exc).__name__}: {exc}"[:200], 0)]
    issues: list[CodeIssue] = []
    seen: set[tuple[str, str]] = set()
    # names the code binds itself (arguments, assignments) shadow builtins: not a reach-out
    local = {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
    local |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}

    def add(kind: str, sev: Severity, detail: str, node: ast.AST) -> None:
        if (kind, detail) in seen or len(issues) >= 50:
            return
        seen.add((kind, detail))
        issues.append(CodeIssue(kind, sev, detail, getattr(node, "lineno", 0)))

    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or "."]
            for m in mods:
                if not (m == "torch" or m.startswith(("torch.", "__torch__"))):
                    add("import", Severity.HIGH, m, node)
        elif isinstance(node, ast.Name) and node.id not in local:
            if node.id in _DANGER_NAMES:
                add("python-builtin", Severity.HIGH, node.id, node)
            elif node.id in _DANGER_ROOTS:
                add("python-module", Severity.HIGH, node.id, node)
        elif isinstance(node, ast.Assign) and _is_module_value(node.value):
            add("module-alias", Severity.HIGH, ast.unparse(node.value)[:80], node)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and node.args
            and (
                _is_module_value(node.args[0])
                or any(isinstance(a, ast.Constant) and a.value in SIDE_EFFECT_OPS for a in node.args[1:])
            )
        ):
            add("dynamic-attribute", Severity.HIGH, ast.unparse(node)[:80], node)
        elif isinstance(node, ast.Attribute):
            parts = _dotted(node)
            if node.attr in SIDE_EFFECT_OPS and not (parts and parts[0] in _MODULE_ROOTS):
                # ``t.from_file(...)``, ``x.save(...)``: whatever the base, the op name is the danger
                # (a chain spelt from torch/ops/classes is judged below)
                add("side-effect-op", Severity.HIGH, "." + node.attr, node)
            if (
                node.attr.startswith("__")
                and node.attr not in _OK_DUNDERS
                and not _MANGLED.fullmatch(node.attr)
            ):
                add("dunder-access", Severity.HIGH, node.attr, node)
            if not parts:
                continue
            parts = parts[1:] if parts[0] == "torch" else parts if parts[0] in ("ops", "classes") else []
            if len(parts) >= 2 and parts[0] == "ops":
                ns = parts[1]
                if ns not in STANDARD_OP_NAMESPACES:
                    add("custom-op", Severity.MEDIUM, "torch.ops." + ns, node)
                elif len(parts) >= 3 and parts[2] in SIDE_EFFECT_OPS:
                    add("side-effect-op", Severity.HIGH, "torch.ops." + ".".join(parts[1:3]), node)
            elif len(parts) >= 2 and parts[0] == "classes" and parts[1] not in STANDARD_CLASS_NAMESPACES:
                add("custom-class", Severity.MEDIUM, "torch.classes." + parts[1], node)
            elif (len(parts) == 1 and parts[0] in SIDE_EFFECT_OPS) or (
                parts and parts[0] in ("_C", "hub", "package")
            ):
                add("side-effect-op", Severity.HIGH, "torch." + parts[0], node)
    return issues
