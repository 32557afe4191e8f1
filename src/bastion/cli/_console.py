r"""The CLI's Rich consoles: every character they print from data is terminal-safe.

Rich passes control characters through (``markup=False`` does not stop ``ESC``), and a
``rich.markup.escape`` only escapes markup. :class:`SafeConsole` is the one place people's output
goes through: the text of every segment it renders, except the control segments Rich makes
itself (cursor moves of a progress bar), passes through :func:`bastion.core.terminal.terminal_safe`,
so an ``ESC`` in a project name, a pickle's global name, a CSV header or an error message is shown
as ``\x1b`` (red-team round 31, 01). Styling is added after rendering, so colours still work.

Markup is off unless a print asks for it (``markup=True``, with the data in it escaped by
``rich.markup.escape``): a ``[`` in a file name is text, never a tag.

Imported only when a console is built (it imports Rich).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment
from rich.text import Text

from bastion.core.terminal import UNSAFE, terminal_safe

__all__ = ["SafeConsole"]


class SafeConsole(Console):
    """A Rich ``Console`` that never writes a control character it did not make itself.

    Text is made safe twice over: strings as they become ``Text`` (:meth:`render_str`, before
    layout, so table columns are as wide as what is shown) and every rendered segment
    (:meth:`render`, whatever built it). Markup is off by default.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("markup", False)
        super().__init__(*args, **kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        """``Console.render_str`` of :func:`terminal_safe` ``text``."""
        return super().render_str(terminal_safe(text), **kwargs)

    def render(self, renderable: RenderableType, options: ConsoleOptions | None = None) -> Iterable[Segment]:
        """``Console.render``, with the text of every segment but Rich's control segments made safe."""
        for seg in super().render(renderable, options):
            if seg.control is None and UNSAFE.search(seg.text):
                yield Segment(terminal_safe(seg.text), seg.style, None)
            else:
                yield seg
