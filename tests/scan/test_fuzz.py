"""Fuzzing: mutated model files of every format never crash the scanner, stay under the time
cap, and never run anything (the payloads' marker file never appears)."""

from __future__ import annotations

import gzip
import json
import pickle
import tempfile
import time
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.core.scanning import Verdict
from bastion.scan import ScanLimits, scan_file

from ._factories import os_system_payload, zip_with
from ._formats import (
    CVE_2024_34359_TEMPLATE,
    cve_2024_3660_config,
    gguf_bytes,
    good_gguf,
    good_safetensors,
    saved_model_pb,
)

MARKER = Path(tempfile.gettempdir()) / "bastion-fuzz-canary"
PER_FILE_SECONDS = 2.0
LIMITS = ScanLimits(max_decompressed_bytes=8 << 20, max_depth=4, max_value_bytes=1 << 20)


def _seeds() -> dict[str, bytes]:
    import io

    evil = os_system_payload(MARKER)
    seeds = {
        "m.pkl": evil,
        "p0.pkl": pickle.dumps({"a": [1, 2.0, "x"]}, protocol=0),
        "m.safetensors": good_safetensors(),
        "m.gguf": good_gguf(),
        "t.gguf": gguf_bytes({"tokenizer.chat_template": CVE_2024_34359_TEMPLATE}),
        "saved_model.pb": saved_model_pb(["ReadFile", "MatMul"], function_ops=["PyFunc"]),
        "m.gz": gzip.compress(evil),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", evil)
        zf.writestr("archive/data/0", bytes(16))
        zf.writestr("archive/version", "3")
    seeds["m.pt"] = buf.getvalue()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("config.json", json.dumps(cve_2024_3660_config()))
        zf.writestr("metadata.json", "{}")
    seeds["m.keras"] = buf.getvalue()
    return seeds


SEEDS = _seeds()


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 32))]
    return name, bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=mutated())
def test_mutated_files_never_crash_or_execute(tmp_path: Path, case: tuple[str, bytes]) -> None:
    name, data = case
    p = tmp_path / name
    p.write_bytes(data)
    t0 = time.perf_counter()
    fr = scan_file(p, limits=LIMITS)
    assert time.perf_counter() - t0 < PER_FILE_SECONDS
    assert fr.verdict in set(Verdict)
    if fr.verdict is Verdict.ERROR:
        assert fr.reason
    assert "internal" not in (fr.reason or "")
    assert not MARKER.exists()


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=2048),
    name=st.sampled_from(
        ["x.pkl", "x.gguf", "x.safetensors", "saved_model.pb", "x.keras", "x.h5", "x.7z", "x.bin"]
    ),
)
def test_random_bytes_never_crash(data: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_bytes(data)
        fr = scan_file(p, limits=LIMITS)
    assert fr.verdict in set(Verdict)
    assert "internal" not in (fr.reason or "")


def test_zip_seed_is_detected(tmp_path: Path) -> None:
    """The fuzz seeds are meaningful: unmutated, each malicious seed is caught."""
    for name in ("m.pkl", "m.pt", "m.keras", "t.gguf", "saved_model.pb", "m.gz"):
        p = tmp_path / name
        p.write_bytes(SEEDS[name])
        assert scan_file(p).verdict == Verdict.MALICIOUS, name
    assert zip_with(tmp_path / "z.zip", {"a.txt": b"x"}).exists()
    assert not MARKER.exists()


@pytest.fixture(autouse=True)
def _no_canary() -> None:
    MARKER.unlink(missing_ok=True)


#: Memory cap per scanned file (Python allocations, tracemalloc peak): the limits keep every
#: value, decompression and nesting bounded, so a mutated file cannot make the scanner balloon.
PER_FILE_PEAK_BYTES = 64 << 20


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=mutated())
def test_mutated_files_stay_under_the_memory_cap(tmp_path: Path, case: tuple[str, bytes]) -> None:
    import tracemalloc

    name, data = case
    p = tmp_path / name
    p.write_bytes(data)
    tracemalloc.start()
    try:
        fr = scan_file(p, limits=LIMITS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PER_FILE_PEAK_BYTES, f"{name}: {peak} bytes"
    assert fr.verdict in set(Verdict)
    assert not MARKER.exists()
