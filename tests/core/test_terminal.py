"""Terminal-safe text: control and bidi characters written as escapes (red-team round 31, 01)."""

from __future__ import annotations

import io

import pytest

from bastion.core.terminal import SafeStream, terminal_safe


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b]0;PWNED\x07", "\\x1b]0;PWNED\\x07"),
        ("a\rb\x08c\x00", "a\\rb\\x08c\\x00"),
        ("del\x7f c1\x9b[2J", "del\\x7f c1\\x9b[2J"),
        (
            "\u202eevil\u202c \u2066x\u2069 \u200f\u061c\ufeff",
            "\\u202eevil\\u202c \\u2066x\\u2069 \\u200f\\u061c\\ufeff",
        ),
        ("lines\nand\ttabs stay", "lines\nand\ttabs stay"),
        ("ïris モデル 🙂 a\u00a0b", "ïris モデル 🙂 a\u00a0b"),
    ],
)
def test_terminal_safe(raw: str, shown: str) -> None:
    assert terminal_safe(raw) == shown
    assert terminal_safe(shown) == shown  # idempotent


def test_safe_stream_writes_safe_text() -> None:
    buf = io.StringIO()
    stream = SafeStream(buf)
    assert stream.write("WARNING x: evil\x1b[2J.pkl\n") == len("WARNING x: evil\x1b[2J.pkl\n")
    stream.flush()
    assert buf.getvalue() == "WARNING x: evil\\x1b[2J.pkl\n"
