"""Coverage-guided fuzzing of the model-file scanner with atheris (libFuzzer for Python).

Usage::

    python scripts/fuzz_scan.py CORPUS_DIR [libFuzzer flags, e.g. -runs=100000 -max_total_time=600]

Each input is written to a file and scanned with ``bastion.scan.scan_file`` under tight
:class:`~bastion.scan.ScanLimits` (2 s, 8 MiB decompressed, depth 4). The first input byte picks
the file name (``.pkl``, ``.pt``, ``.gguf``, ``saved_model.pb`` …) so that both name- and
magic-based dispatch are reached; the rest is the file. The bastion.scan modules are
instrumented, so libFuzzer keeps inputs that reach new scanner code. A crash is any of:

- an exception out of ``scan_file`` (the scanner must turn every problem into an ``error``
  verdict with a reason);
- an ``error`` verdict without a reason, or an "internal scanner error";
- a scan past 10 s (``-timeout`` of libFuzzer; the file's own limit is 2 s);
- the marker file that the seed payloads would create appearing (something was executed).

libFuzzer writes a crashing input as ``crash-<sha1>`` in the working folder. The seeds should be
real model files of every format (the tests write them: ``tests/scan/test_fuzz_atheris.py``).
Source: atheris, https://github.com/google/atheris (Apache-2.0).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import tempfile

import atheris

# The pure-Python pickle emulator, not the mypyc-compiled one: atheris instruments Python code
# only, and uninstrumented the emulator would give libFuzzer no coverage to follow. (Set
# BASTION_PURE_PYTHON=0 to fuzz the compiled one for crashes, without that guidance.)
os.environ.setdefault("BASTION_PURE_PYTHON", "1")

with atheris.instrument_imports(include=["bastion.scan"]):
    import bastion.scan as _pkg
    from bastion.core.scanning import Verdict
    from bastion.scan import ScanLimits, scan_file

    for _mod in pkgutil.iter_modules(_pkg.__path__, "bastion.scan."):  # lazily imported ones too
        importlib.import_module(_mod.name)

#: the marker the seed payloads name (``os.system("touch …")``): it must never appear
MARKER = os.path.join(tempfile.gettempdir(), "bastion-fuzz-canary")
NAMES = (
    "x.pkl",
    "x.pt",
    "x.bin",
    "x.gguf",
    "x.safetensors",
    "saved_model.pb",
    "x.keras",
    "x.npy",
    "x.gz",
    "x",
    "x.npz",
    "x.joblib",
    "x.tar",
    "x.onnx",
    "x.h5",
    "x.skops",
    "x.7z",
    "saved_model.pbtxt",
)
LIMITS = ScanLimits(max_decompressed_bytes=8 << 20, max_depth=4, max_value_bytes=1 << 20, max_seconds=2)
WORK = tempfile.mkdtemp(prefix="bastion-fuzz-")


def one_input(data: bytes) -> None:
    """Scan one fuzzer input as a file; raise on any of the crash conditions above."""
    if not data:
        return
    path = os.path.join(WORK, NAMES[data[0] % len(NAMES)])
    with open(path, "wb") as fh:
        fh.write(data[1:])
    fr = scan_file(path, limits=LIMITS)
    if fr.verdict not in set(Verdict):
        raise AssertionError(f"unknown verdict {fr.verdict!r}")
    if fr.verdict is Verdict.ERROR and not fr.reason:
        raise AssertionError("error verdict without a reason")
    # the engine's marker of a scanner that raised (a library's own text may say "internal":
    # HDF5's "bad rank for btree internal nodes" is a reason, not a crash)
    if "internal scanner error" in (fr.reason or ""):
        raise AssertionError(f"internal scanner error: {fr.reason}")
    if os.path.exists(MARKER):
        raise AssertionError("the payload's marker file appeared: something was executed")


def main() -> None:
    if os.path.exists(MARKER):
        os.unlink(MARKER)
    argv = [sys.argv[0], "-timeout=10", "-rss_limit_mb=2048", *sys.argv[1:]]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
