"""Model-file scanner benchmark: Bastion vs picklescan and modelscan, side by side in one run.

Usage::

    .venv/bin/python benchmarks/scan.py [--peers /tmp/peer-scan/bin] [--work /tmp/bastion-scan-bench]
        [--size-mib 1024] [--small 1000] [--jobs 0] [--repeat 5] [--src OTHER/src] [--no-corpus]

Peers live in their own venv (``python3 -m venv /tmp/peer-scan && /tmp/peer-scan/bin/pip install
picklescan modelscan``). Large files are generated under ``--work`` (never in the repository).
Every tool runs as a subprocess under ``/usr/bin/time -v`` (wall seconds, peak RSS), as a user runs
it (``bastion scan PATH``, default options: no SHA-256 — the peers do not hash either — ``-j`` auto).
Every measurement is the median of ``--repeat`` runs, interleaved (one run of each tool in turn,
then again), so that a busy machine slows every tool alike. Prints JSON: per-workload wall time,
MB/s and peak RSS per tool, Bastion's throughput ratio over each peer (peer seconds / Bastion
seconds), Bastion with ``--hash`` (SHA-256 of every byte), Bastion's start-up floor (``bastion
version``) and a labelled corpus comparison (detections and false alarms per tool). ``--src``
runs the Bastion of another source tree (e.g. ``git archive HEAD src | tar -x -C /tmp/before``)
with this venv, for before/after tables. Bytecode is compiled first (``compileall``), as an
installed package has it.

``--instructions`` also counts, for the small-files workload, the instructions each tool runs
(``valgrind --tool=callgrind``; about a minute): the same count on every run whatever else the
machine does, where wall times on a shared 2-core machine swing by 2x from one second to the next.
Bastion's main process (start-up, its share of the files, the JSON) is the critical path of a
forked scan; its workers run in parallel with it. The ratios are peer instructions / Bastion's.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


class _Reduce:
    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.fn, self.args)


def _run_once(cmd: list[str]) -> dict[str, Any]:
    """One run under ``/usr/bin/time -v``: wall seconds, peak RSS, exit code, output tail."""
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return {
        "seconds": round(wall, 3),
        "peak_rss_mib": round(int(m.group(1)) / 1024, 1) if m else None,
        "exit": proc.returncode,
        "out": (proc.stdout + proc.stderr)[-2000:],
    }


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run by wall time (with its own RSS and exit code), plus every run's seconds."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    mid = dict(ordered[(len(ordered) - 1) // 2])
    mid["seconds"] = round(statistics.median(r["seconds"] for r in runs), 3)
    mid["runs_seconds"] = [r["seconds"] for r in runs]
    mid["max_peak_rss_mib"] = max((r["peak_rss_mib"] or 0) for r in runs)
    return mid


def _interleaved(cmds: dict[str, list[str]], repeat: int) -> dict[str, dict[str, Any]]:
    """Median of ``repeat`` runs per command, the commands run in turn (a, b, c, a, b, c …)."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cmds}
    for _ in range(max(1, repeat)):
        for name, cmd in cmds.items():
            runs[name].append(_run_once(cmd))
    return {name: _median_run(r) for name, r in runs.items()}


def _timed(cmd: list[str], repeat: int = 1) -> dict[str, Any]:
    """Median of ``repeat`` runs of one command."""
    return _interleaved({"cmd": cmd}, repeat)["cmd"]


def _bastion_cmd(src: Path | None) -> list[str]:
    if src is None:
        return [str(Path(PY).parent / "bastion")]
    code = f"import sys;sys.path.insert(0,{str(src)!r});from bastion.cli.main import run;sys.exit(run())"
    return [PY, "-c", code]


def _tools(peers: Path, jobs: int | None, src: Path | None = None) -> dict[str, Any]:
    def bastion(path: Path) -> list[str]:
        cmd = [*_bastion_cmd(src), "scan", str(path), "-f", "json", "-o", os.devnull]
        return cmd if jobs is None else [*cmd, "-j", str(jobs)]

    def picklescan(path: Path) -> list[str]:
        return [str(peers / "picklescan"), "--path", str(path)]

    def modelscan(path: Path) -> list[str]:
        return [str(peers / "modelscan"), "-p", str(path)]

    return {"bastion": bastion, "picklescan": picklescan, "modelscan": modelscan}


def _inprocess_seconds(path: Path, src: Path | None = None, digest: bool = False) -> float:
    code = (
        f"import time,sys;sys.path.insert(0,{str(src or REPO / 'src')!r});"
        # the pydantic contract is imported before the clock starts (the scan, not the import, is timed)
        "from bastion.scan import scan_paths;import bastion.core.scanning;t=time.perf_counter();"
        f"scan_paths([{str(path)!r}], digest={digest});print(time.perf_counter()-t)"
    )
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True).stdout
    return round(float(out.strip().splitlines()[-1]), 3)


def _instructions(cmd: list[str]) -> dict[str, Any]:
    """Instructions ``cmd``'s main process runs under callgrind, and how many processes it ran.

    (A forked worker's own count starts from its parent's at the fork, so only the main
    process's count is reported.)
    """
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%p", *cmd],
            capture_output=True,
            text=True,
            check=False,
        )
    pids = list(dict.fromkeys(re.findall(r"^==(\d+)==", proc.stderr, re.MULTILINE)))  # the main one first
    counts = dict(re.findall(r"==(\d+)== I\s+refs:\s+([\d,]+)", proc.stderr))
    if not pids or pids[0] not in counts:
        raise RuntimeError(f"no callgrind count for {cmd[0]}: {proc.stderr[-500:]}")
    return {"main": int(counts[pids[0]].replace(",", "")), "processes": len(counts), "exit": proc.returncode}


def make_raw_pickle(path: Path, size: int) -> None:
    """One ``bytes`` object of ``size`` bytes (BINBYTES8), protocol 4, written in chunks."""
    with path.open("wb") as fh:
        fh.write(b"\x80\x04\x8e" + size.to_bytes(8, "little"))
        chunk = bytes(range(256)) * 4096
        left = size
        while left:
            n = min(left, len(chunk))
            fh.write(chunk[:n])
            left -= n
        fh.write(b"\x94.")


def make_torch_zip(path: Path, size: int) -> None:
    """A ``torch.save`` checkpoint holding one float32 tensor of ``size`` bytes."""
    import torch

    torch.save({"w": torch.zeros(size // 4, dtype=torch.float32)}, path)


def make_small(folder: Path, n: int) -> None:
    """``n`` small harmless model files (pickled state dicts and arrays), one folder."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        obj = {"layer": i, "w": rng.standard_normal((16, 16)).astype(np.float32), "names": ["a", "b"]}
        (folder / f"m{i:04d}.pkl").write_bytes(pickle.dumps(obj, protocol=4))


def make_corpus(folder: Path) -> dict[str, bool]:
    """Labelled files: ``name -> malicious?`` (harmless real models and public bypasses)."""
    import joblib
    import numpy as np
    import torch
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    folder.mkdir(parents=True, exist_ok=True)
    labels: dict[str, bool] = {}
    marker = "/tmp/bastion-bench-pwned"
    x, y = load_iris(return_X_y=True)
    est = LogisticRegression(max_iter=300).fit(x, y)
    joblib.dump(est, folder / "logreg.joblib")
    joblib.dump(est, folder / "logreg-z3.joblib", compress=3)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    torch.save(net.state_dict(), folder / "state_dict.pt")
    np.save(folder / "weights.npy", np.arange(6.0))
    np.savez(folder / "arrays.npz", a=np.arange(3))
    (folder / "plain.pkl").write_bytes(pickle.dumps({"a": [1, 2, 3]}))
    harmless = (
        "logreg.joblib",
        "logreg-z3.joblib",
        "state_dict.pt",
        "weights.npy",
        "arrays.npz",
        "plain.pkl",
    )
    labels.update(dict.fromkeys(harmless, False))

    evil = pickle.dumps(_Reduce(os.system, f"touch {marker}"))
    payloads = {
        "os_system.pkl": evil,
        # GHSA-655q-fx9r-782v-style bypasses of a deny-list: other spawners/resolvers
        "runpy.pkl": pickle.dumps(_Reduce(__import__("runpy").run_path, marker)),
        "pydoc_locate.pkl": pickle.dumps(_Reduce(__import__("pydoc").locate, "os.system")),
        "timeit.pkl": pickle.dumps(_Reduce(__import__("timeit").timeit, "print(1)")),
        "pty_spawn.pkl": pickle.dumps(_Reduce(__import__("pty").spawn, "id")),
        "unknown_callable.pkl": b"\x80\x04\x8c\x05mylib\x94\x8c\x03run\x94\x93)R.",
        "nested_loads.pkl": pickle.dumps(_Reduce(pickle.loads, evil)),
    }
    for name, data in payloads.items():
        (folder / name).write_bytes(data)
        labels[name] = True
    (folder / "evil.gz").write_bytes(gzip.compress(evil))
    labels["evil.gz"] = True
    with tarfile.open(folder / "evil.tar", "w") as tf:
        info = tarfile.TarInfo("model.pkl")
        info.size = len(evil)
        tf.addfile(info, io.BytesIO(evil))
    labels["evil.tar"] = True
    joblib.dump(_Reduce(os.system, f"touch {marker}"), folder / "evil-z3.joblib", compress=3)
    labels["evil-z3.joblib"] = True
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zin, zipfile.ZipFile(folder / "evil.pt", "w") as zout:
        for info2 in zin.infolist():
            data = evil if info2.filename.endswith("data.pkl") else zin.read(info2)
            zout.writestr(info2.filename, data)
    labels["evil.pt"] = True
    (folder / "misnamed.bin").write_bytes(evil)
    labels["misnamed.bin"] = True
    return labels


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def main() -> None:
    """Generate the workloads, run every tool, print the JSON report."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--peers", type=Path, default=Path("/tmp/peer-scan/bin"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/bastion-scan-bench"))
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=None, help="Pass -j N to bastion (default: its own).")
    ap.add_argument("--repeat", type=int, default=5, help="Interleaved runs per measurement (median).")
    ap.add_argument("--src", type=Path, default=None, help="Run the Bastion of this source tree.")
    ap.add_argument("--no-corpus", action="store_true", help="Skip the labelled corpus comparison.")
    ap.add_argument(
        "--instructions", action="store_true", help="Also count instructions (callgrind) on the small files."
    )
    args = ap.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    size = args.size_mib << 20
    src: Path | None = args.src.resolve() if args.src else None
    subprocess.run([PY, "-m", "compileall", "-q", str(src or REPO / "src")], capture_output=True, check=False)
    tools = _tools(args.peers, args.jobs, src)
    rep = args.repeat
    report: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "size_mib": args.size_mib,
        "bastion_src": str(src or REPO / "src"),
        "repeat": rep,
        "workloads": {},
    }
    floor = _timed([*_bastion_cmd(src), "version"], rep)
    report["bastion_startup_seconds"] = floor["seconds"]
    report["bastion_startup_peak_rss_mib"] = floor["peak_rss_mib"]

    raw = work / "big.pkl"
    if not raw.exists() or raw.stat().st_size < size:
        make_raw_pickle(raw, size)
    tz = work / "big.pt"
    if not tz.exists() or tz.stat().st_size < size:
        make_torch_zip(tz, size)
    small = work / "small"
    if not small.exists() or len(list(small.iterdir())) != args.small:
        shutil.rmtree(small, ignore_errors=True)
        make_small(small, args.small)
    total_small = sum(p.stat().st_size for p in small.iterdir())

    for label, path, nbytes in (
        ("raw_pickle", raw, raw.stat().st_size),
        ("torch_zip", tz, tz.stat().st_size),
        ("small_files", small, total_small),
    ):
        row: dict[str, Any] = {"bytes": nbytes}
        cmds = {tool: cmd(path) for tool, cmd in tools.items()}
        cmds["bastion_hash"] = [*tools["bastion"](path), "--hash"]
        for tool, r in _interleaved(cmds, rep).items():
            r["mb_per_s"] = round(nbytes / 1e6 / r["seconds"], 1)
            r.pop("out")
            row[tool] = r
        row["bastion_minus_startup_seconds"] = round(row["bastion"]["seconds"] - floor["seconds"], 3)
        row["bastion_in_process_seconds"] = _inprocess_seconds(path, src)
        row["bastion_in_process_hash_seconds"] = _inprocess_seconds(path, src, digest=True)
        for peer in ("picklescan", "modelscan"):
            row[f"throughput_ratio_vs_{peer}"] = _ratio(row[peer]["seconds"], row["bastion"]["seconds"])
            row[f"hash_throughput_ratio_vs_{peer}"] = _ratio(
                row[peer]["seconds"], row["bastion_hash"]["seconds"]
            )
        report["workloads"][label] = row
        if args.instructions and label == "small_files" and shutil.which("valgrind"):
            ins: dict[str, Any] = {
                tool: _instructions(cmd) for tool, cmd in cmds.items() if tool != "bastion_hash"
            }
            ins["bastion_one_worker"] = _instructions([*tools["bastion"](path), "-j", "1"])
            for peer in ("picklescan", "modelscan"):
                for mode in ("bastion", "bastion_one_worker"):
                    ins[f"{mode}_main_ratio_vs_{peer}"] = _ratio(ins[peer]["main"], ins[mode]["main"])
            row["instructions"] = ins

    if args.no_corpus:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    corpus = work / "corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    labels = make_corpus(corpus)
    table: dict[str, Any] = {}
    for tool, cmd in tools.items():
        det = fa = err = 0
        per: dict[str, int] = {}
        for name, bad in sorted(labels.items()):
            r = _timed(cmd(corpus / name))
            per[name] = r["exit"]
            flagged = r["exit"] == 1
            if bad and flagged:
                det += 1
            if not bad and r["exit"] != 0:
                fa += 1
            if r["exit"] not in (0, 1):
                err += 1
        table[tool] = {
            "detected": det,
            "malicious": sum(labels.values()),
            "false_alarms": fa,
            "harmless": len(labels) - sum(labels.values()),
            "other_exit_codes": err,
            "exit_codes": per,
        }
    report["corpus"] = table
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
