"""Regular expressions the scanner runs on a file's content take linear time, with the same matches.

A running ``re`` search cannot be interrupted by the per-file time limit: a pattern (or a way of
calling one) that is quadratic on some input lets a hostile file stall the scan for hours. Each
pattern rewritten for that is compared here with the one it replaced (hypothesis, on text made
of the pattern's own characters), and timed on the input that was quadratic: four times the
input must take less than eight times as long (a quadratic search takes sixteen).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.scan import _torch_export, pickle_scanner, pickle_vm
from bastion.scan.gguf_scanner import _rx, _sub_literals, normalise_template
from bastion.scan.savedmodel_scanner import text_graph_ops
from bastion.scan.signing import _hide_digests


def _seconds(run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        with contextlib.suppress(Exception):  # the time to fail is what is measured
            run()
        best = min(best, time.perf_counter() - start)
    return best


def _linear(run: Callable[[int], object], n: int) -> None:
    """``run(4 * n)`` takes less than eight times ``run(n)`` (quadratic: sixteen times)."""
    small, large = _seconds(lambda: run(n)), _seconds(lambda: run(4 * n))
    assert large < 8 * small + 0.002, f"{n}: {small:.4f}s, {4 * n}: {large:.4f}s"


def _span(m: re.Match[str] | re.Match[bytes] | None) -> tuple[int, int] | None:
    return m.span() if m else None


# -- protocol-0 FLOAT lines (pickle_vm._C_FLOAT_LINE) and torch.export numbers (_NUMBER) --------

_OLD_C_FLOAT = re.compile(rb"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)", re.IGNORECASE)
_OLD_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+|inf|nan)")
_NUMBER_TEXT = st.text(alphabet="0123456789.eE+-infaty x", max_size=14)


@settings(max_examples=1000)
@given(_NUMBER_TEXT)
def test_float_line_pattern_matches_as_the_quadratic_one_did(text: str) -> None:
    new, line = pickle_vm._C_FLOAT_LINE.compiled(), text.encode()
    assert _span(new.fullmatch(line)) == _span(_OLD_C_FLOAT.fullmatch(line))
    assert _span(new.search(line)) == _span(_OLD_C_FLOAT.search(line))


@settings(max_examples=1000)
@given(_NUMBER_TEXT)
def test_export_number_pattern_matches_as_the_quadratic_one_did(text: str) -> None:
    new = _torch_export._NUMBER
    assert _span(new.fullmatch(text)) == _span(_OLD_NUMBER.fullmatch(text))
    assert _span(new.search(text)) == _span(_OLD_NUMBER.search(text))


def test_number_patterns_are_linear_on_digits_then_a_letter() -> None:
    # the old patterns: 20,000 digits and a letter took 11 s each
    _linear(lambda n: pickle_vm._C_FLOAT_LINE.fullmatch(b"1" * n + b"x"), 25_000)
    _linear(lambda n: pickle_vm._C_FLOAT_LINE.fullmatch(b"1" * n + b"." + b"1" * n + b"x"), 25_000)
    _linear(lambda n: _torch_export._NUMBER.fullmatch("1" * n + "x"), 25_000)


# -- GGUF chat templates: string literals (gguf_scanner._sub_literals) --------------------------


def _mark(m: re.Match[str]) -> str:
    return f"<{m.start()}:{m.group()}>"


@settings(max_examples=1000)
@given(st.text(alphabet="'\"\\a_\n", max_size=20))
def test_template_literals_are_replaced_as_sub_replaced_them(text: str) -> None:
    assert _sub_literals(text, _mark) == _rx().literal.sub(_mark, text)


def test_template_literals_are_linear_on_escaped_quotes() -> None:
    # ``sub`` tried each escaped quote as a literal to the end: 10,000 characters took 0.5 s
    _linear(lambda n: normalise_template("\\'" * n), 25_000)
    _linear(lambda n: normalise_template('"' + "\\'\\\"" * n), 25_000)


# -- protocol 0/1 GLOBAL lines in unparsed bytes (pickle_scanner._module_tail) -----------------


def _old_tail(data: bytes, end: int) -> re.Match[bytes] | None:
    line_start = data.rfind(b"\n", max(0, end - 66), end) + 1
    return pickle_scanner._MODULE_TAIL.search(data, line_start, end)


_PIECES = st.sampled_from([b"a", b"_", b".", b"\n", b" ", b"c", b"\x00", b"a" * 20, b"." * 20])


@settings(max_examples=1000)
@given(st.lists(_PIECES, max_size=24).map(b"".join), st.data())
def test_module_tail_is_found_as_before(data: bytes, draw: st.DataObject) -> None:
    end = draw.draw(st.integers(0, len(data)))
    assert _span(pickle_scanner._module_tail(data, end)) == _span(_old_tail(data, end))


def test_module_tails_are_linear_in_the_lines_far_from_a_newline() -> None:
    # each name line with no newline in the 66 bytes before it searched from the file's start:
    # 2,000 of them (210 KB) took 116 s
    def run(n: int) -> None:
        data = (b"x" * 100 + b"\nabc\n") * n
        for m in pickle_scanner._NAME_LINE.finditer(data):
            pickle_scanner._module_tail(data, m.start())

    _linear(run, 250)


# -- signature verification messages (signing._hide_digests) -----------------------------------


@settings(max_examples=1000)
@given(st.lists(st.sampled_from(["Digest(", "Digest", "(", ")", "x", "'"]), max_size=12).map("".join))
def test_digests_are_hidden_as_before(text: str) -> None:
    assert _hide_digests(text) == re.sub(r"Digest\([^)]*\)", "<digest>", text)


def test_hiding_digests_is_linear() -> None:
    # ``Digest(`` repeated: each read to the end of the text (40,000 characters, 0.2 s)
    _linear(lambda n: _hide_digests("Digest(" * n), 15_000)
    _linear(lambda n: _hide_digests("Digest(" * n + ")"), 15_000)


# -- text-format SavedModel: the tokeniser stops at the first unterminated string --------------


def test_text_graph_tokeniser_stays_linear_on_escaped_quotes() -> None:
    # ``_TEXT_TOKEN.finditer`` alone is quadratic on ``"\"\"\"…`` (each escaped quote is tried as
    # a string); text_graph_ops raises at the first unterminated one, so it reads the text once
    _linear(lambda n: text_graph_ops('"' + '\\"' * n), 25_000)
    _linear(lambda n: text_graph_ops('op: "' + '\\"' * n + '\n"a"'), 25_000)
