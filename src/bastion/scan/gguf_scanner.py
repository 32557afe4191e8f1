"""``scan.gguf``: GGUF model files (llama.cpp): header sanity and chat-template content (stdlib only).

Threat model: GGUF holds no code, but (1) its header is a list of length-prefixed keys,
strings, arrays and tensor descriptors that a reader trusts — a hostile count or length makes a
reader allocate or read far past the file (llama.cpp advisories GHSA-p5mv-gjc5-mwqv and
GHSA-8947-pfff-2f3c are heap overflows of this kind); (2) the ``tokenizer.chat_template`` key is a
Jinja2 template that inference servers render — an unsandboxed renderer runs whatever the template
reaches through ``__class__``/``__globals__``/``__subclasses__`` (CVE-2024-34359,
GHSA-56xg-wfcc-g829, llama-cpp-python). The scanner walks the header with bounds checks (values it
does not need are skipped, never held) and greps every chat template for sandbox-escape
constructs. Tensor bytes are never read.

Reference: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Callable
from typing import IO, Any, ClassVar

from bastion.core.registry import register
from bastion.core.severity import Severity
from bastion.scan.base import Artifact, NotThisFormat, Outcome, ScanContext, Scanner

__all__ = ["GGUF_MAGIC", "GgufScanner", "template_findings"]

GGUF_MAGIC = b"GGUF"
MAX_COUNT = 1 << 24
"""Largest tensor, key or array-element count accepted."""
MAX_KEY = 1 << 16
MAX_TEMPLATE = 1 << 20

# value type -> fixed byte width (strings = 8, arrays = 9 are variable)
_WIDTH = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
# ggml tensor type -> (block elements, block bytes)
_GGML = {
    0: (1, 4),
    1: (1, 2),
    2: (32, 18),
    3: (32, 20),
    6: (32, 22),
    7: (32, 24),
    8: (32, 34),
    9: (32, 36),
    10: (256, 84),
    11: (256, 110),
    12: (256, 144),
    13: (256, 176),
    14: (256, 210),
    15: (256, 292),
    24: (1, 1),
    25: (1, 2),
    26: (1, 4),
    27: (1, 8),
    28: (1, 8),
    30: (1, 2),
}

#: Attributes that lead from a value to the interpreter's internals: those Jinja2's sandbox refuses
#: (``jinja2.sandbox``: functions, methods, generators, coroutines, async generators), frames,
#: tracebacks and code objects (``gen.gi_frame.f_globals`` reaches a module's globals). Any name
#: starting with ``_`` is refused too. Chat templates never need them.
UNSAFE_ATTRIBUTES = frozenset(
    {
        "func_closure", "func_code", "func_dict", "func_defaults", "func_globals",
        "im_class", "im_func", "im_self",
        "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await",
        "ag_frame", "ag_code", "ag_await",
        "f_globals", "f_locals", "f_builtins", "f_back", "f_code", "tb_frame", "tb_next",
        "co_code", "co_consts",
        "mro",
    }
)  # fmt: skip

#: Chat-template constructs that reach Python objects from a Jinja2 template (sandbox escapes).
TEMPLATE_PATTERNS: tuple[tuple[str, str, Severity], ...] = (
    (
        "dunder-attribute",
        r"__(class|globals|subclasses|mro|bases?|builtins|import|init|dict|getattribute|code|func"
        r"|self|module|reduce(_ex)?)__",
        Severity.HIGH,
    ),
    ("import", r"\bimport\b|\bimportlib\b|\b__import__\b", Severity.HIGH),
    (
        "os-access",
        # ``_*os.x`` not preceded by a letter or digit, starting only where the leftmost such
        # match can start (the first underscore of a run, or the second after a letter or digit):
        # ``(?<![A-Za-z0-9])_*os`` tried every underscore of a run, quadratic on 50,000 of them.
        r"(?:(?<![A-Za-z0-9_])|(?<=[A-Za-z0-9]_))_*os\s*\.\s*\w"
        r"|\bsubprocess\b|\bpopen\b|\bsystem\s*\(|\bposix\b"
        r"|\bspawn[lv]p?e?\b|\bexec[lv]p?e?\b|\bfork\s*\(|\bf_globals\b|\bgi_frame\b",
        Severity.HIGH,
    ),
    ("code-exec", r"\beval\s*\(|\bexec\s*\(|\bcompile\s*\(", Severity.HIGH),
    ("file-access", r"\bopen\s*\(|\bread_text\b|\bwrite_text\b", Severity.HIGH),
    ("template-internals", r"\b(lipsum|cycler|joiner|namespace|self)\s*\.\s*_", Severity.HIGH),
    ("attr-filter", r"\|\s*attr\s*\(|\[\s*['\"]_", Severity.MEDIUM),
)


class _Regexes:
    """The template patterns, compiled on the first GGUF file (not at every scan's start-up)."""

    def __init__(self) -> None:
        self.patterns = tuple((k, re.compile(p, re.IGNORECASE), s) for k, p, s in TEMPLATE_PATTERNS)
        #: Obfuscations that only make sense when building a forbidden name out of pieces: ``%c``
        #: formatting (``'%c%cclass%c%c'|format(95, 95, 95, 95)``) and underscores glued on at run
        #: time.
        self.obfuscations = (
            # a ``%c`` anywhere and a ``format`` anywhere (two linear searches: one pattern with a
            # look-ahead over the rest of the text per ``%c`` would take quadratic time)
            ("char-format", (re.compile(r"%c"), re.compile(r"\bformat\b")), Severity.MEDIUM),
            (
                "underscore-build",
                (re.compile(r"""(['"])_+\1\s*[~+*]|[~+]\s*(['"])_+\2|\bset\s+\w+\s*=\s*(['"])_+\3"""),),
                Severity.MEDIUM,
            ),
        )
        self.literal = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", re.DOTALL)
        self.format = re.compile(r"""'([^']*)'\s*(?:\|\s*format\s*\(|%\s*\()([\d\s,]*)\)""")
        self.concat = re.compile(r"""'\s*[~+]\s*'""")
        self.parens = re.compile(r"""\(\s*('[^']*')\s*\)""")


@functools.cache
def _rx() -> _Regexes:
    return _Regexes()


def _decode_literal(body: str) -> str:
    r"""A Jinja2 string literal's value: Jinja decodes ``\x5f``, ``\u005f``, ``\137``, ``\N{...}``."""
    try:
        return body.encode("ascii", "backslashreplace").decode("unicode-escape")
    except (UnicodeDecodeError, UnicodeEncodeError):
        return body


def _render_format(m: re.Match[str]) -> str:
    """A literal whose only ``%`` directives are ``%c``, rendered with its integer arguments.

    Only ``%c`` is rendered (a ``%0999999999d`` would build a gigabyte string); anything else,
    a count mismatch or a code point out of range leaves the text as written.
    """
    parts = m.group(1).split("%c")
    try:
        args = [int(a) for a in re.split(r"[\s,]+", m.group(2)) if a]
    except ValueError:  # more digits than int() converts
        return m.group(0)
    if (
        len(args) != len(parts) - 1
        or any("%" in p for p in parts)
        or any(not 0 <= a < 0x110000 for a in args)
    ):
        return m.group(0)
    rendered = "".join(p + chr(a) for p, a in zip(parts, args, strict=False)) + parts[-1]
    return "'" + rendered.replace("'", "") + "'"


def _sub_literals(text: str, repl: Callable[[re.Match[str]], str]) -> str:
    r"""``_rx().literal.sub(repl, text)`` in linear time: the same replacements.

    ``sub`` tries a literal at every quote. An unterminated one reads to the end of the text and
    fails, and so does every later quote of its kind (each is the escaped ``\'`` of what that one
    read): ``\'\'\'…`` took quadratic time (a 1 MiB template, hours). Here a quote of a kind that
    failed once is not tried again; every other quote is tried as ``sub`` tries it.
    """
    literal = _rx().literal
    out: list[str] = []
    done = 0  # text[:done] is in out
    nxt = {"'": text.find("'"), '"': text.find('"')}  # each kind's next quote to try (-1: none)
    while True:
        live = [i for i in nxt.values() if i >= 0]
        if not live:
            break
        i = min(live)
        m = literal.match(text, i)
        if m is None:  # no later literal of this kind can close either
            nxt[text[i]] = -1
            continue
        out.append(text[done:i])
        out.append(repl(m))
        done = m.end()
        for q, j in nxt.items():
            if 0 <= j < done:
                nxt[q] = text.find(q, done)
    out.append(text[done:])
    return "".join(out)


def normalise_template(text: str) -> str:
    r"""The template with its string literals as Jinja2 sees them, for the pattern search.

    Decodes escapes in literals (``'\x5f\x5fclass\x5f\x5f'``), renders ``%``-formatting with
    integer arguments (``'%c%cclass%c%c'|format(95, 95, 95, 95)``), and joins literals glued by
    ``~``/``+`` (``'__cla' ~ 'ss__'``), so a forbidden name built from pieces is seen whole.
    Every literal is re-quoted with ``'``.
    """

    def requote(m: re.Match[str]) -> str:
        return "'" + _decode_literal(m.group(0)[1:-1]).replace("'", "") + "'"

    rx = _rx()
    out = _sub_literals(text, requote)
    out = rx.format.sub(_render_format, out)
    for _ in range(64):  # nested parentheses and chains: until nothing changes
        joined = rx.parens.sub(r"\1", rx.concat.sub("", out))
        if joined == out:
            break
        out = joined
    return out


#: Jinja2 filters and string methods that build text (an attribute name can be assembled with them).
_STRING_BUILDERS = frozenset(
    {
        "format",
        "replace",
        "join",
        "string",
        "lower",
        "upper",
        "reverse",
        "title",
        "capitalize",
        "trim",
        "center",
        "urlencode",
        "indent",
        "safe",
        "e",
        "escape",
    }
)


def computed_name_findings(text: str) -> list[tuple[str, Severity, str]]:
    """Attribute names a template builds at run time: ``x[<built string>]`` or ``x|attr(<built>)``.

    Parsed with Jinja2's parser (the template is never rendered). A chat template reads fields
    by fixed names (``message['content']``) or numbers (``messages[loop.index0 - 1]``); a key
    built from strings — a ``format``/``replace``/``join`` filter or method, ``~`` or ``+`` with
    a string, ``%`` formatting, or a variable set from any of these or from a string starting
    with ``_`` — is how ``__class__`` is reached without ever being written (``''['%sclass%s'
    |format(u, u)]``). Such a key is ``computed-attribute`` (high). A template Jinja2 cannot parse
    gives nothing here (the pattern checks still apply); one nested past Python's recursion limit
    is ``unanalysable-nesting`` (medium), never silently passed.
    """
    try:
        from jinja2 import Environment, TemplateSyntaxError, nodes
    except ImportError:  # pragma: no cover - jinja2 is a dependency
        return []
    try:
        tree = Environment().parse(text)
    except RecursionError:
        return [_TOO_DEEP]
    except (TemplateSyntaxError, ValueError, TypeError, MemoryError):
        return []
    try:
        return _computed_names(tree, nodes)
    except RecursionError:  # nested past Python's limit: not analysed, and said so
        return [_TOO_DEEP]


#: A template nested too deeply for the parser or the walk: not analysed for built names.
_TOO_DEEP = ("unanalysable-nesting", Severity.MEDIUM, "template nested too deeply to analyse")


def _computed_names(tree: Any, nodes: Any) -> list[tuple[str, Severity, str]]:
    """:func:`computed_name_findings` on a parsed template (``nodes``: ``jinja2.nodes``)."""

    def builds_text(node: object, names: set[str]) -> bool:
        if isinstance(node, nodes.Const):
            return isinstance(node.value, str) and node.value.startswith("_")
        if isinstance(node, nodes.Name):
            return node.name in names
        if isinstance(node, (nodes.Filter, nodes.Test)):
            return node.name in _STRING_BUILDERS or builds_text(node.node, names)
        if isinstance(node, nodes.Call):
            callee = node.node
            return isinstance(callee, nodes.Getattr) and callee.attr in _STRING_BUILDERS
        if isinstance(node, nodes.Concat):
            return True
        if isinstance(node, (nodes.Add, nodes.Mod)):
            sides = (node.left, node.right)
            return any(isinstance(x, nodes.Const) and isinstance(x.value, str) for x in sides) or any(
                builds_text(x, names) for x in sides
            )
        if isinstance(node, nodes.CondExpr):
            return builds_text(node.expr1, names) or builds_text(node.expr2, names)
        return False

    built: set[str] = set()  # variables set from built text ({% set u = 'XX'|replace('X', '_') %})
    # a block assignment ({% set g %}_{{''}}_globals_{{''}}_{% endset %}) is rendered text
    for block in tree.find_all(nodes.AssignBlock):
        if isinstance(block.target, nodes.Name):
            built.add(block.target.name)
    for _ in range(4):  # a variable may be built from another: a few passes settle it
        for a in tree.find_all(nodes.Assign):
            if isinstance(a.target, nodes.Name) and builds_text(a.node, built):
                built.add(a.target.name)
    hits: list[tuple[str, Severity, str]] = []
    hits += _compute_bombs(tree, nodes)
    for node in tree.find_all(nodes.Getattr):  # ``x._os``, ``gen.gi_frame.f_globals``
        if node.attr.startswith("_") or node.attr in UNSAFE_ATTRIBUTES:
            hits.append(("unsafe-attribute", Severity.HIGH, f"line {node.lineno}: .{node.attr}"))
            break
    for node in tree.find_all((nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Getitem):
            key = node.arg
        elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args:
            key = node.args[0]
        else:
            continue
        if isinstance(key, nodes.Const) and not (isinstance(key.value, str) and key.value.startswith("_")):
            continue
        if builds_text(key, built):
            hits.append(("computed-attribute", Severity.HIGH, f"line {node.lineno}: a key built at run time"))
            break
    return hits


#: A constant factor, exponent or loop count past which rendering is a denial of service.
MAX_TEMPLATE_FACTOR = 100_000
MAX_TEMPLATE_ITERATIONS = 10_000_000


def _compute_bombs(tree: Any, nodes: Any) -> list[tuple[str, Severity, str]]:
    """Constructs that make one rendering take gigabytes or minutes (``template-compute``, medium).

    Jinja2's sandbox caps a single ``range`` at 100,000 items but not ``'x' * 1500000000``, a
    large ``**``, a ``%``/``format`` width, ``center``/``indent`` widths, ``range`` loops nested
    in each other or a macro calling itself; llama.cpp-based servers render the chat template on
    every request, so such a template lets any client stall or exhaust the server (red-team
    rounds 23 and 25). Constants are folded through arithmetic and ``{% set %}``. Chat templates
    loop over ``messages`` and never need any of these.
    """
    env: dict[str, int] = {}

    def fold(n: Any, depth: int = 0) -> int | None:
        if depth > 32:
            return None
        if isinstance(n, nodes.Const) and isinstance(n.value, int) and not isinstance(n.value, bool):
            return int(n.value)
        if isinstance(n, nodes.Name):
            return env.get(n.name)
        if isinstance(n, nodes.Neg):
            v = fold(n.node, depth + 1)
            return -v if v is not None else None
        if isinstance(n, (nodes.Add, nodes.Sub, nodes.Mul, nodes.Pow, nodes.FloorDiv)):
            a, b = fold(n.left, depth + 1), fold(n.right, depth + 1)
            if a is None or b is None:
                return None
            if isinstance(n, nodes.Pow):
                return a ** min(b, 64) if b >= 0 and abs(a) < 1 << 16 else _HUGE
            if isinstance(n, nodes.Mul):
                return max(-_HUGE, min(a * b, _HUGE))
            if isinstance(n, nodes.FloorDiv):
                return a // b if b else None
            return a + b if isinstance(n, nodes.Add) else a - b
        return None

    for _ in range(4):  # a variable may be set from another: a few passes settle it
        for a in tree.find_all(nodes.Assign):
            if isinstance(a.target, nodes.Name):
                v = fold(a.node)
                if v is not None:
                    env[a.target.name] = v

    def big(n: Any) -> int | None:
        v = fold(n)
        return v if v is not None and abs(v) > MAX_TEMPLATE_FACTOR else None

    hit = "template-compute", Severity.MEDIUM
    for op in tree.find_all((nodes.Mul, nodes.Pow)):
        v = big(op.right) if isinstance(op, nodes.Pow) else (big(op.left) or big(op.right))
        if v is not None:
            what = "a power" if isinstance(op, nodes.Pow) else "a product"
            return [(*hit, f"line {op.lineno}: {what} by {v:,}")]
    for mod in tree.find_all(nodes.Mod):  # '%0999999999d' % 1
        width = _format_width(mod.left, nodes)
        if width > MAX_TEMPLATE_FACTOR:
            return [(*hit, f"line {mod.lineno}: a %-format width of {width:,}")]
    for flt in tree.find_all(nodes.Filter):
        if flt.name in _WIDTH_FILTERS:
            for arg in (*flt.args, *(kw.value for kw in flt.kwargs)):
                v = big(arg)
                if v is not None:
                    return [(*hit, f"line {flt.lineno}: |{flt.name} with {v:,}")]
        width = _format_width(flt.node, nodes) if flt.name == "format" else 0
        if width > MAX_TEMPLATE_FACTOR:
            return [(*hit, f"line {flt.lineno}: a format width of {width:,}")]
    for macro in tree.find_all(nodes.Macro):  # a macro calling itself (twice: exponential)
        calls = [
            c
            for c in macro.find_all(nodes.Call)
            if isinstance(c.node, nodes.Name) and c.node.name == macro.name
        ]
        if calls:
            return [(*hit, f"line {macro.lineno}: macro {macro.name!r} calls itself")]

    def range_count(it: Any) -> int:
        while isinstance(it, nodes.Filter) and it.node is not None:  # range(..)|list
            it = it.node
        if isinstance(it, nodes.Name) and it.name in ranges:  # {% set r = range(100000)|list %}
            return ranges[it.name]
        if isinstance(it, nodes.Call) and isinstance(it.node, nodes.Name) and it.node.name == "range":
            bounds = [fold(a) for a in it.args]
            if bounds and all(b is not None for b in bounds):
                start, stop = (0, bounds[0]) if len(bounds) == 1 else (bounds[0], bounds[1])
                return max(0, min(int(stop or 0) - int(start or 0), 100_000))  # the sandbox's range cap
            return 100_000  # a bound the template computes: as many as the sandbox allows
        return 1

    ranges: dict[str, int] = {}
    for a in tree.find_all(nodes.Assign):
        if isinstance(a.target, nodes.Name):
            n = range_count(a.node)
            if n > 1:
                ranges[a.target.name] = n

    def deepest(node: Any, outer: int) -> int:
        worst = outer
        for child in node.iter_child_nodes():
            inner = outer * range_count(child.iter) if isinstance(child, nodes.For) else outer
            worst = max(worst, deepest(child, inner))
            if worst > MAX_TEMPLATE_ITERATIONS:
                break
        return worst

    total = deepest(tree, 1)
    if total > MAX_TEMPLATE_ITERATIONS:
        return [(*hit, f"range loops nested to {total:,} iterations")]
    return []


def _format_width(node: Any, nodes: Any) -> int:
    """The largest ``%``-directive width in a string literal (``'%0999999999d'``: 999,999,999); 0 if none."""
    if not (isinstance(node, nodes.Const) and isinstance(node.value, str)):
        return 0
    return max((int(w) for w in re.findall(r"%[-+ #0]*(\d{6,})", node.value)), default=0)


#: Filters whose numeric argument is a width the result is padded to.
_WIDTH_FILTERS = frozenset({"center", "indent", "wordwrap", "truncate", "filesizeformat"})
_HUGE = 1 << 62


class _Bad(Exception):
    pass


def template_findings(text: str) -> list[tuple[str, Severity, str]]:
    """Sandbox-escape constructs in a Jinja2 chat template.

    The patterns are searched in the template as written and in :func:`normalise_template`'s
    form of it (escapes decoded, ``%c`` formatting rendered, concatenated literals joined); ``%c``
    formatting and underscores glued on at run time are reported by themselves (medium).

    Args:
        text: the template source.

    Returns:
        ``(kind, severity, matched text)`` per construct found, worst first.
    """
    hits: list[tuple[str, Severity, str]] = []
    normal = normalise_template(text)
    for kind, pattern, sev in _rx().patterns:
        m = pattern.search(text) or pattern.search(normal)
        if m:
            hits.append((kind, sev, m.group(0)))
    for kind, patterns, sev in _rx().obfuscations:  # every pattern of the kind must match
        found = [rx.search(text) for rx in patterns]
        if all(found):
            hits.append((kind, sev, " … ".join(m.group(0) for m in found if m)))
    hits += computed_name_findings(text)
    hits.sort(key=lambda h: h[1], reverse=True)
    return hits


class _Cursor:
    def __init__(self, fh: IO[bytes], size: int) -> None:
        self.fh = fh
        self.size = size
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise _Bad(f"value of {n} bytes at offset {self.pos} runs past the end of the file")
        data = self.fh.read(n)
        if len(data) != n:
            raise _Bad(f"file ends at offset {self.pos + len(data)}")
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise _Bad(f"value of {n} bytes at offset {self.pos} runs past the end of the file")
        self.pos += n
        self.fh.seek(self.pos)

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def string_len(self) -> int:
        n = self.u64()
        if self.pos + n > self.size:
            raise _Bad(f"string of {n} bytes at offset {self.pos - 8} runs past the end of the file")
        return n


@register("scanner")
class GgufScanner(Scanner):
    """GGUF (llama.cpp) files: header bounds and chat templates."""

    id: ClassVar[str] = "scan.gguf"
    title: ClassVar[str] = "GGUF header and chat-template checker"
    formats: ClassVar[tuple[str, ...]] = ("gguf",)
    priority: ClassVar[int] = 30
    sniff_first_bytes: ClassVar[bytes | None] = b"G"  # ``GGUF``
    references: ClassVar[tuple[str, ...]] = (
        "https://github.com/ggml-org/ggml/blob/master/docs/gguf.md",
        "https://github.com/advisories/GHSA-56xg-wfcc-g829",
        "https://nvd.nist.gov/vuln/detail/CVE-2024-34359",
    )
    threat_model: ClassVar[str] = (
        "The attacker ships a GGUF file whose header overflows a reader or whose chat template "
        "escapes the Jinja2 sandbox of the inference server that renders it."
    )

    @classmethod
    def sniff(cls, head: bytes, name: str) -> bool:
        """The ``GGUF`` magic."""
        return head.startswith(GGUF_MAGIC)

    def scan(self, artifact: Artifact) -> Outcome:
        """Walk the header with bounds checks and check every chat template.

        Raises:
            NotThisFormat: never in practice (the magic decides).
        """
        fh = artifact.stream
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(0)
        cur = _Cursor(fh, size)
        out = Outcome(format="gguf")
        try:
            if cur.take(4) != GGUF_MAGIC:
                raise NotThisFormat
            version = cur.u32()
            if version not in (2, 3):
                return Outcome.error("gguf", f"unsupported GGUF version {version} (2 and 3 are scanned)")
            n_tensors, n_kv = cur.u64(), cur.u64()
            if n_tensors > MAX_COUNT or n_kv > MAX_COUNT:
                self._header(artifact, out, f"implausible counts: {n_tensors} tensors, {n_kv} keys", 8)
                return out
            alignment = 32
            for _ in range(n_kv):
                key_at = cur.pos
                klen = cur.string_len()
                if klen > MAX_KEY:
                    raise _Bad(f"key of {klen} bytes at offset {key_at}")
                key = cur.take(klen).decode("utf-8", "replace")
                vtype = cur.u32()
                value_at = cur.pos
                if key.startswith("tokenizer.chat_template") and vtype == 8:
                    n = cur.string_len()
                    if n > MAX_TEMPLATE:
                        self._header(artifact, out, f"chat template {key!r} of {n} bytes", value_at)
                        cur.skip(n)
                    else:
                        self._template(artifact, out, key, cur.take(n).decode("utf-8", "replace"), value_at)
                elif key == "general.alignment" and vtype == 4:
                    alignment = cur.u32()
                    if alignment == 0 or alignment & (alignment - 1):
                        raise _Bad(f"general.alignment {alignment} is not a power of two")
                else:
                    self._skip_value(cur, vtype, artifact.ctx, depth=0)
            tensors: list[tuple[int, int, str]] = []
            for _ in range(n_tensors):
                nlen = cur.string_len()
                if nlen > MAX_KEY:
                    raise _Bad(f"tensor name of {nlen} bytes at offset {cur.pos - 8}")
                tname = cur.take(nlen).decode("utf-8", "replace")
                ndim = cur.u32()
                if ndim > 8:
                    raise _Bad(f"tensor {tname!r} has {ndim} dimensions")
                count = 1
                for _ in range(ndim):
                    count *= cur.u64()
                ttype = cur.u32()
                offset = cur.u64()
                block = _GGML.get(ttype)
                nbytes = -1 if block is None else -(-count // block[0]) * block[1]
                tensors.append((offset, nbytes, tname))
            data_start = -(-cur.pos // alignment) * alignment
        except _Bad as exc:
            if not out.findings:
                return Outcome.error("gguf", f"malformed GGUF header: {exc}")
            return self._err(out, exc)
        data = size - data_start
        for offset, nbytes, tname in tensors:
            if offset > data or (nbytes >= 0 and offset + nbytes > data):
                self._header(
                    artifact,
                    out,
                    f"tensor {tname!r} data [{offset}, +{nbytes}) lies outside the {data}-byte data section",
                    data_start,
                )
        return out

    @staticmethod
    def _err(out: Outcome, exc: Exception) -> Outcome:
        out.errors.append(f"malformed GGUF header: {exc}")
        return out

    def _skip_value(self, cur: _Cursor, vtype: int, ctx: ScanContext, *, depth: int) -> None:
        if vtype in _WIDTH:
            cur.skip(_WIDTH[vtype])
        elif vtype == 8:
            cur.skip(cur.string_len())
        elif vtype == 9:
            if depth > 2:
                raise _Bad("arrays nested too deep")
            etype, count = cur.u32(), cur.u64()
            if count > MAX_COUNT * 4:
                raise _Bad(f"array of {count} elements at offset {cur.pos - 12}")
            if etype in _WIDTH:
                cur.skip(_WIDTH[etype] * count)
            else:
                for i in range(count):
                    if not i & 0xFFFF:  # millions of strings: mind the file's time limit
                        ctx.check_time()
                    self._skip_value(cur, etype, ctx, depth=depth + 1)
        else:
            raise _Bad(f"unknown value type {vtype} at offset {cur.pos - 4}")

    @staticmethod
    def _header(art: Artifact, out: Outcome, what: str, offset: int) -> None:
        out.findings.append(
            art.finding(
                "scan.gguf.header-bounds",
                Severity.HIGH,
                f"GGUF header field out of bounds: {what}",
                offset=offset,
                evidence={"detail": what},
                remediation="Readers without bounds checks overflow on such headers; do not load this file.",
                references=("https://github.com/advisories/GHSA-p5mv-gjc5-mwqv",),
            )
        )

    @staticmethod
    def _template(art: Artifact, out: Outcome, key: str, text: str, offset: int) -> None:
        hits = template_findings(text)
        if not hits:
            return
        kind, sev, matched = hits[0]
        out.findings.append(
            art.finding(
                "scan.gguf.chat-template-injection",
                sev,
                f"GGUF chat template {key!r} contains {kind} construct {matched!r}",
                offset=offset,
                evidence={
                    "key": key,
                    "constructs": [{"kind": k, "match": m} for k, _, m in hits],
                    "length": len(text),
                },
                remediation="Chat templates are rendered by the inference server; render them only in a "
                "sandboxed Jinja2 environment, or replace this template with a reviewed one.",
                references=(
                    "https://github.com/advisories/GHSA-56xg-wfcc-g829",
                    "https://nvd.nist.gov/vuln/detail/CVE-2024-34359",
                ),
            )
        )
