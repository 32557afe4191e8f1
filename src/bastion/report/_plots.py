"""Plots of ``CheckResult.series`` as inline SVG, drawn with matplotlib's Agg backend.

matplotlib is imported lazily, inside :func:`series_svg`, and only the object-oriented API is
used (no pyplot state), so rendering is safe to call repeatedly and leaves no open figures.
"""

from __future__ import annotations

import html
import io
import logging
import math
import re
from collections.abc import Mapping
from typing import Any, cast

from bastion.core.results import Series

logger = logging.getLogger(__name__)

_RC: dict[str, Any] = {
    "svg.fonttype": "none",  # text stays text: smaller, selectable, no glyph definitions
    "svg.hashsalt": "bastion",  # deterministic clip-path ids
    "text.usetex": False,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial", "sans-serif"],
    "font.size": 9.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
}

_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_ID = re.compile(r'\bid="([^"]+)"')


def _axis_key(s: Series) -> tuple[str, str, bool, bool]:
    return (s.x_label, s.y_label, s.log_x, s.log_y)


def _points(series: Series) -> tuple[list[float], list[float]]:
    n = min(len(series.x), len(series.y))
    if len(series.x) != len(series.y):
        logger.warning(
            "series has %d x and %d y values; plotting the first %d", len(series.x), len(series.y), n
        )
    xs = [float(v) for v in series.x[:n]]
    ys = [math.nan if v is None else float(v) for v in series.y[:n]]
    return xs, ys


def _namespace_ids(svg: str, prefix: str) -> str:
    """Prefix every ``id`` in ``svg`` (and references to it) so several SVGs can share a page."""
    ids = set(_ID.findall(svg))
    if not ids:
        return svg
    svg = _ID.sub(lambda m: f'id="{prefix}-{m.group(1)}"', svg)

    def ref(m: re.Match[str]) -> str:
        name = m.group(2)
        return f"{m.group(1)}#{prefix}-{name}" if name in ids else m.group(0)

    return re.sub(r'(url\(|href=")#([^)"]+)', ref, svg)


def series_svg(series: Mapping[str, Series], *, title: str = "", id_prefix: str = "plot") -> str:
    """Draw ``series`` in one figure and return it as an ``<svg>`` element.

    Series that share axes (same labels and log scales) are drawn on one subplot with a legend;
    series with other axes get their own subplot, side by side (up to three per row). Log axes
    mask non-positive values; ``None`` in ``y`` leaves a gap.

    Args:
        series: curves by name.
        title: the figure's title.
        id_prefix: prefix for the SVG's element ids, unique per page.

    Returns:
        The SVG markup, starting with ``<svg`` (no XML declaration), or ``""`` when ``series`` is empty.
    """
    if not series:
        return ""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    groups: dict[tuple[str, str, bool, bool], list[tuple[str, Series]]] = {}
    for name, s in series.items():
        groups.setdefault(_axis_key(s), []).append((name, s))
    n = len(groups)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    with matplotlib.rc_context(rc=cast(Any, _RC)):
        fig = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        for i, (key, members) in enumerate(groups.items()):
            ax = axes[i // cols][i % cols]
            x_label, y_label, log_x, log_y = key
            for name, s in members:
                xs, ys = _points(s)
                # A leading '_' would hide the curve from the legend.
                label = " " + name if name.startswith("_") else name
                ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, label=label)
            if log_x:
                ax.set_xscale("log", nonpositive="mask")
            if log_y:
                ax.set_yscale("log", nonpositive="mask")
            # Labels are data: a stray '$' must not be read as TeX (tick labels still use mathtext).
            ax.set_xlabel(x_label, parse_math=False)
            ax.set_ylabel(y_label, parse_math=False)
            legend = ax.legend(fontsize=8, frameon=False)
            for text in legend.get_texts():
                text.set_parse_math(False)
        for j in range(n, rows * cols):
            axes[j // cols][j % cols].set_visible(False)
        if title:
            fig.suptitle(title, parse_math=False)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    start = text.find("<svg")
    svg = text[start:] if start >= 0 else text
    svg = _COMMENT.sub("", svg)  # matplotlib echoes every text as a comment; drop them
    label = html.escape(title or ", ".join(series), quote=True)
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{label}" ', 1)
    return _namespace_ids(svg, id_prefix)
