"""Regression trial of the guard's list-based request path (the defects it found, each pinned)."""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from tests.guard.helpers import MemorySink, make_config

from bastion.core.capability import Capability
from bastion.guard import app as guard_app
from bastion.guard.access import KeySpec
from bastion.guard.app import Guard, _request_id
from bastion.guard.config import ExtractionSpec
from bastion.guard.extraction import ExtractionDetector
from bastion.targets.base import Target


class _Fixed(Target):
    """A model answering what ``out(x)`` returns: probabilities, or labels when ``labels_only``."""

    kind = "numpy"

    def __init__(
        self, out: Callable[[np.ndarray], np.ndarray], classes: int, *, labels_only: bool = False
    ) -> None:
        caps = {Capability.BATCHED} | (set() if labels_only else {Capability.PROBABILITIES})
        super().__init__(name="digits", input_shape=(64,), num_classes=classes, capabilities=frozenset(caps))
        self.out = out

    def _predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.out(x)

    def _predict_label(self, x: np.ndarray) -> np.ndarray:
        return self.out(x)


def _ask(target: Target, keys: dict[str, tuple[str, KeySpec]], rows: int) -> tuple[int, dict, dict]:
    sink = MemorySink()
    g = Guard(make_config(keys), target=target, store=sink)
    body = json.dumps({"instances": [[0.5] * 64] * rows}).encode()
    reply = g.handle("digits", {"Authorization": f"Bearer {keys['alice'][0]}"}, body)
    return reply.status, reply.body, sink.records[-1]


def test_finite_huge_scores_are_judged_per_value_not_by_their_batch_sum(
    keys: dict[str, tuple[str, KeySpec]],
) -> None:
    """One row of 1e308 was answered, two such rows were a 'NaN or infinity' backend failure."""
    huge = _Fixed(lambda x: np.tile([1e308] + [0.0] * 9, (len(x), 1)), 10)
    for rows in (1, 2, 17):
        status, body, rec = _ask(huge, keys, rows)
        assert status == 200 and body["output"] == "probabilities", rows
        assert rec["decision"] == "allow" and rec["output"]["labels"] == [0] * rows
        mean = rec["output"]["mean_confidence"]  # finite: the audit record stays valid (strict) JSON
        assert math.isfinite(mean) and math.isclose(mean, 1e308, rel_tol=1e-12)
    nan = _Fixed(lambda x: np.tile([0.5, 0.5] + [0.0] * 7 + [np.nan], (len(x), 1)), 10)
    status, body, rec = _ask(nan, keys, 2)
    assert body.get("degraded") is True and rec["reason"] == "backend failed: ValueError"


@pytest.mark.parametrize(
    "labels",
    [[-1, 1, 2], [0, 10, 2], [0.0, 1.0, 2.0], [[0], [1], [2]], [0, 1]],
    ids=["negative", "past-last", "float", "2d", "short"],
)
def test_a_label_only_model_with_labels_outside_its_classes_is_a_backend_failure(
    labels: list, keys: dict[str, tuple[str, KeySpec]]
) -> None:
    """A -1 label indexed ``np.eye`` from the end: the caller got class 9 as a real answer."""
    status, body, rec = _ask(_Fixed(lambda x: np.asarray(labels), 10, labels_only=True), keys, 3)
    assert body.get("degraded") is True and body.get("predictions") is None
    assert rec["decision"] == "fallback" and rec["reason"] == "backend failed: ValueError"
    ok = _Fixed(lambda x: np.array([9, 0, 3], dtype=np.int64), 10, labels_only=True)
    status, body, rec = _ask(ok, keys, 3)
    assert status == 200 and body == {
        "predictions": [9, 0, 3],
        "output": "label",
        "request_id": body["request_id"],
    }


def test_ties_give_the_first_maximum_as_argmax(keys: dict[str, tuple[str, KeySpec]]) -> None:
    row = [0.05, 0.3, 0.3, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05]
    status, _body, rec = _ask(_Fixed(lambda x: np.tile(row, (len(x), 1)), 10), keys, 2)
    assert status == 200 and rec["output"]["labels"] == [int(np.argmax(row))] * 2 == [1, 1]


def _feed(det: ExtractionDetector, key: str, labels: list[int], start: float) -> list[str]:
    rules: list[str] = []
    rng = np.random.default_rng(len(key))
    for i, lab in enumerate(labels):
        z = rng.normal(size=(1, det.dims)) * 3  # a new cell nearly every time: high novelty
        cell = int(rng.integers(0, 1 << 40))
        alerts = det.observe(key, z=z, cells=[cell], labels=[lab], margins=[1.0], ood=[False], now=start + i)
        rules += [a.rule for a in alerts]
    return rules


@pytest.mark.parametrize("classes", [1, 2])
def test_benign_keys_of_a_one_or_two_class_model_are_not_flagged_for_coverage(classes: int) -> None:
    """With C <= 2 one class alone is >= class_coverage (0.45): every key was flagged at 40 rows."""
    det = ExtractionDetector(ExtractionSpec(), num_classes=classes, dims=3)
    assert not det.coverage_rules
    for k in ("a", "b", "c", "d"):  # each key one class only; their union as many as there are
        assert _feed(det, k, [hash(k) % classes] * 80, 0.0) == []
    # the 10-class model keeps both rules: one key asking every class, and keys covering them together
    det10 = ExtractionDetector(ExtractionSpec(), num_classes=10, dims=3)
    assert det10.coverage_rules and "class-coverage" in _feed(det10, "thief", list(range(10)) * 6, 0.0)
    spread = [
        r
        for i, k in enumerate("pqr")
        for r in _feed(det10, k, [(3 * i + j % 3) % 10 for j in range(30)], 0.0)
    ]
    assert "distributed" in spread


def test_a_child_forked_while_the_id_lock_is_held_still_makes_request_ids() -> None:
    """The pool's lock was inherited locked when a parent thread held it at the fork: a hang."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with guard_app._ID_LOCK:
            held.set()
            release.wait(5)

    th = threading.Thread(target=hold)
    th.start()
    assert held.wait(5)
    r, w = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.write(w, _request_id().encode())
            finally:
                os._exit(0)
        os.close(w)
        deadline = time.monotonic() + 10
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        if done[0] == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung on the request-id lock")
        child = os.read(r, 64).decode()
    finally:
        release.set()
        th.join(5)
        os.close(r)
    assert len(child) == 32 and child != _request_id()
