"""LazyPattern: compiled on first use, the same answers as the compiled pattern."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core._regex import LazyPattern
from bastion.core.terminal import terminal_safe


def test_not_compiled_until_used() -> None:
    lazy = LazyPattern(r"a(b+)")
    assert lazy._compiled is None
    assert lazy.pattern == r"a(b+)"
    m = lazy.search("xxabbb")
    assert m is not None and m.group(1) == "bbb"
    assert lazy.compiled() is lazy._compiled is re.compile(r"a(b+)")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab.\n_x", max_size=20))
def test_methods_answer_as_the_compiled_pattern(text: str) -> None:
    for pattern, flags in ((r"a(b*)", 0), (r"^x[\w.]*$", re.MULTILINE), (r"(?:^|\.)_x", re.DOTALL)):
        lazy, real = LazyPattern(pattern, flags), re.compile(pattern, flags)
        for name in ("search", "match", "fullmatch"):
            got, want = getattr(lazy, name)(text), getattr(real, name)(text)
            assert (got and (got.span(), got.groups())) == (want and (want.span(), want.groups()))
        assert lazy.findall(text) == real.findall(text)
        assert [m.span() for m in lazy.finditer(text)] == [m.span() for m in real.finditer(text)]
        assert lazy.sub("-", text) == real.sub("-", text)
        got, want = lazy.search(text, 2, 5), real.search(text, 2, 5)
        assert (got and got.span()) == (want and want.span())


def test_bytes_patterns() -> None:
    lazy = LazyPattern(rb"X(.{4})|\x8c(.)", re.DOTALL)
    assert [m.span() for m in lazy.finditer(b"\x8caXabcd")] == [(0, 2), (2, 7)]


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_terminal_safe_fast_path_changes_nothing(text: str) -> None:
    """Printable ASCII skips the pattern; the result is the pattern's result all the same."""
    unsafe = re.compile(
        "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f"
        "\ufeff\ufff9-\ufffb]"
    )
    assert terminal_safe(text) == unsafe.sub(lambda m: ascii(m.group())[1:-1], text)
