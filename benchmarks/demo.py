"""Benchmark: assess the built clinic example (target: standard budget ≤ 180 s on 2 cores).

Run: ``OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/demo.py [--budget standard]``

Builds the example under a temporary folder (or ``--dir``), runs ``bastion.assess`` without storing,
and prints one JSON line: wall seconds of the build and of the assessment, per-check seconds, and
whether the target was met. Exit status 1 when the assessment took longer than ``--limit`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


def main() -> int:
    """Build, assess, report timings; non-zero exit when over the limit."""
    from bastion import api
    from bastion.core.settings import load_settings

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--budget", default="standard", choices=["quick", "standard", "thorough"])
    ap.add_argument("--limit", type=float, default=180.0, help="seconds allowed for the assessment")
    ap.add_argument("--dir", type=Path, default=None, help="where to build (default: a temp folder)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        dest = args.dir or Path(tmp) / "clinic"
        t0 = time.perf_counter()
        cfg = api.build_demo(dest)
        build_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        report = api.assess(cfg, settings=load_settings(budget=args.budget), store=False)
        assess_s = time.perf_counter() - t1
    per_check: dict[str, float] = {}
    for c in report.checks:
        per_check[c.id] = round(per_check.get(c.id, 0.0) + c.seconds, 2)
    out = {
        "benchmark": "demo",
        "budget": args.budget,
        "cpu_count": os.cpu_count(),
        "build_seconds": round(build_s, 2),
        "assess_seconds": round(assess_s, 2),
        "limit_seconds": args.limit,
        "ratio_to_limit": round(assess_s / args.limit, 3),
        "status": report.run.status,
        "checks_ok": sum(c.status == "ok" for c in report.checks),
        "findings": len(report.findings),
        "per_check_seconds": per_check,
    }
    print(json.dumps(out))
    return 0 if assess_s <= args.limit and report.run.status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
