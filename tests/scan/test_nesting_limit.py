"""Values nested deeper than the emulator's recursive checks follow: a limit, never a crash.

Compiled with mypyc, the emulator's recursion has no ``RecursionError`` to stop it: before
``MAX_NESTING``, these streams (a few hundred KB each) overflowed the C stack and killed the
scanning process; pure Python they stopped at the interpreter's recursion limit as "malformed"
(and a stream not named as a pickle could then be skipped as not one).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.core.scanning import Verdict
from bastion.scan import scan_file
from bastion.scan.pickle_vm import MAX_NESTING, emulate

#: Far past what a C stack holds of an unbounded recursion (a dtype level costs two frames, and
#: its stream is slower to emulate).
_DEEP = {"torch.Size": 100_000, "dtype": 20_000, "hidden call": 100_000}


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _unicode(text: str) -> bytes:
    return b"X" + len(text).to_bytes(4, "little") + text.encode()


def torch_size_chain(depth: int) -> bytes:
    """``torch.FloatTensor(torch.Size(torch.Size(...(3))))``: sized by :func:`_product`."""
    out = b"\x80\x02" + _global("torch", "FloatTensor") + _global("torch", "Size") + b"q\x010"
    out += b"h\x01" * depth + b"K\x03" + b"\x85R" * depth  # each level: TUPLE1, REDUCE
    return out + b"\x85R."


def dtype_chain(depth: int) -> bytes:
    """``numpy.ndarray((1,), dtype)`` with a dtype whose one field's dtype is such a dtype ..."""
    out = b"\x80\x02" + _global("numpy", "dtype") + b"q\x010" + _global("numpy", "ndarray") + b"K\x01\x85"
    # dtype('V8', False, True), BUILD with the state (3, '|', None, ('f',), {'f': (<sub>, 0)}, 8, 1, 16)
    level = b"h\x01" + _unicode("V8") + b"\x89\x88\x87R"
    level += b"(K\x03" + _unicode("|") + b"N" + _unicode("f") + b"\x85}" + _unicode("f")
    close = b"K\x00\x86sK\x08K\x01K\x10tb"
    leaf = b"h\x01" + _unicode("f8") + b"\x89\x88\x87R"
    return out + level * depth + leaf + close * depth + b"\x86R."


def hidden_call_chain(depth: int) -> bytes:
    """``f(f, Tensor, (f, Tensor, (...), None), None)``, ``f`` torch's ``_rebuild_from_type_v2``."""
    out = b"\x80\x02" + _global("torch._tensor", "_rebuild_from_type_v2") + b"q\x01"
    out += _global("torch", "Tensor") + b"q\x0200"
    out += b"h\x01" + b"(h\x01h\x02" * (depth + 1) + b")" + b"Nt" * (depth + 1)
    return out + b"R."


CHAINS: dict[str, tuple[Callable[[int], bytes], str]] = {
    "torch.Size": (torch_size_chain, "torch.Size nested over"),
    "dtype": (dtype_chain, "numpy dtypes nested over"),
    "hidden call": (hidden_call_chain, "arguments nested over"),
}


@pytest.mark.parametrize("kind", sorted(CHAINS))
def test_nesting_within_the_limit_is_followed(kind: str) -> None:
    make, message = CHAINS[kind]
    res = emulate(io.BytesIO(make(MAX_NESTING - 8)))
    assert not res.limited and message not in (res.error or ""), res.error


@pytest.mark.parametrize("kind", sorted(CHAINS))
@pytest.mark.parametrize("deep", [False, True])
def test_nesting_past_the_limit_is_a_limit_not_a_crash(kind: str, deep: bool) -> None:
    make, message = CHAINS[kind]
    res = emulate(io.BytesIO(make(_DEEP[kind] if deep else MAX_NESTING + 8)))
    assert res.limited and not res.complete, res.error
    assert message in (res.error or "")


@pytest.mark.parametrize("kind", sorted(CHAINS))
def test_a_file_nested_too_deep_is_never_safe_nor_skipped(kind: str, tmp_path: Path) -> None:
    make, _ = CHAINS[kind]
    path = tmp_path / "model.bin"  # not named as a pickle: a malformed stream could be skipped
    path.write_bytes(make(_DEEP[kind]))
    result = scan_file(path)
    assert result.verdict in (Verdict.ERROR, Verdict.MALICIOUS), result
