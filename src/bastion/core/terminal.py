r"""Text bound for a terminal: no control character from data ever reaches it raw.

Names, titles, paths, CSV headers and error messages that Bastion prints can come from someone
else: a cloned ``bastion.yaml``, a model file's pickle names, an incoming CSV, a store's rows.
A terminal obeys the control characters in them: ``ESC`` sequences set the window title, clear
the screen, erase the lines above (a file hiding its own critical finding), conceal what follows
or open links; ``BEL``, backspace and carriage return overwrite what was printed; bidirectional
overrides (``U+202E``) show text in another order than it is (red-team round 31, 01).

:func:`terminal_safe` writes each such character visibly as its Python escape (``ESC`` as the
four characters ``\x1b``, ``U+202E`` as ``\u202e``); every other character, newlines and tabs
included, is kept. The CLI's consoles (``bastion.cli._console``) pass every piece of text they
print through it, and :class:`SafeStream` does the same for a plain text stream (log records).
Machine formats keep exact values: JSON and SARIF escape control characters themselves, and
the HTML report is autoescaped.
"""

from __future__ import annotations

import re
from typing import Any

from bastion.core._regex import LazyPattern

__all__ = ["UNSAFE", "SafeStream", "terminal_safe"]

#: What a terminal may act on or that reorders or hides text: C0 controls but tab and newline,
#: DEL, C1 controls (``U+009B`` is CSI), the Arabic letter mark, zero-width space, the left-to-right
#: and right-to-left marks, line and paragraph separators, the bidi embeddings, overrides and
#: isolates (``U+202A``–``U+202E``, ``U+2066``–``U+2069``), the invisible operators, the
#: deprecated format characters, the byte-order mark and the interlinear annotation characters.
UNSAFE = LazyPattern(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f"
    "\ufeff\ufff9-\ufffb]"
)


def _escape(m: re.Match[str]) -> str:
    return ascii(m.group())[1:-1]


def terminal_safe(text: str) -> str:
    r"""``text`` with every character of :data:`UNSAFE` written as its escape (``\x1b``, ``\u202e``).

    Idempotent: the escapes are printable, so text made safe stays as it is.
    """
    if text.isascii() and text.isprintable():  # the common case, without the pattern
        return text
    return UNSAFE.sub(_escape, text) if UNSAFE.search(text) else text


class SafeStream:
    """A text stream that writes :func:`terminal_safe` text to ``stream``; anything else is ``stream``'s.

    For what reaches a terminal without Rich: the log handler's stream (a log record quotes file
    names and other data).
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        """Write :func:`terminal_safe` ``text``; return the length of ``text`` (as a stream does)."""
        self._stream.write(terminal_safe(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
