"""The HTML report in a real headless Chromium: no console errors, plots laid out, nothing fetched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.mark.browser
def test_report_renders_in_chromium(report_html: str, chromium_page: Any, tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    path.write_text(report_html, encoding="utf-8")
    page = chromium_page
    console_errors: list[str] = []
    page_errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    page.on("request", lambda req: requests.append(req.url))

    page.goto(path.as_uri(), wait_until="load")

    assert console_errors == []
    assert page_errors == []
    assert requests == [path.as_uri()]  # self-contained: nothing else was loaded
    figures = page.query_selector_all("figure[data-plot]")
    svgs = page.query_selector_all("figure[data-plot] svg")
    assert len(figures) == 3 and len(svgs) == 3
    for svg in svgs:
        box = svg.bounding_box()
        assert box is not None and box["width"] > 50 and box["height"] > 50
    # The hostile title is shown as text, and no script element exists.
    assert page.locator("script").count() == 0
    assert "<script>alert(1)</script>" in page.inner_text("body")
    assert page.title().startswith("Bastion assess: st-mary-diagnostics")
