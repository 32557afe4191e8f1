"""Benchmark of ``bastion guard`` on the clinic digits model; prints JSON.

1. In-process overhead: the guard app and the bare model app (same route, same model) called
   through ASGI without a network, interleaved rounds, every control on, 10,000 stored queries
   per key, durable SQLite audit. Reports p50/p95 per request and the added p50.
2. HTTP throughput on 127.0.0.1: both apps under uvicorn in their own processes, 8 client
   threads, interleaved rounds; reports the ratio guard / bare.
4. HopSkipJump sessions (the real ``evasion.hopskipjump`` loop, many seeds and inputs): share of
   runs flagged before the attack converges; and output hardening: a label-only thief's clone
   fidelity against the bare model vs against a flagged (hardened) key.
3. Extraction detection (simulated clock, in process, through ``Guard.handle``): natural-data
   thief, synthetic thief, a thief split across 10 keys (round-robin and one class per key), a
   sybil thief on 5 keys padding each natural row with near-copies in its own cell, and
   200 benign clients (≤ 200 queries each, one or two classes, neighbourhoods with repeats,
   one query every 20–60 s).

5. Group commit (``--only-commit [--audit-db URL]``): the guard app under 8 concurrent in-process
   clients, its audit records group-committed (the app's path) vs one commit per request
   (``Guard.handle``), interleaved; CPU per request, requests/s and records per transaction.
   SQLite by default; pass a PostgreSQL URL to measure there (a commit is a server round trip).

Usage: ``python benchmarks/guard.py [--clinic /tmp/guard-clinic] [--quick] [--only-sessions]
[--only-http] [--only-extraction] [--only-commit [--audit-db URL]] [--rounds N] [--seconds S]``.
``--only-http`` runs part 2 alone (``--rounds`` interleaved rounds of ``--seconds`` each) and
``--only-extraction`` part 3 alone; ``GUARD_BENCH_PYSPY=out.svg`` records the guard server with py-spy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def _setup(clinic: Path, work: Path) -> dict[str, Any]:
    from bastion import api
    from bastion.examples.clinic import build_clinic
    from bastion.guard.access import new_key

    cfg_path = build_clinic(clinic)
    prof = work / "profile"
    # honeytokens on: 20 records planted; their rows stay in the work folder (the "data owner's" copy)
    info = api.guard_fit(
        cfg_path, asset="digits", out=prof, honeytokens=20, honeytokens_out=work / "honeytokens.npz"
    )
    keys = {f"k{i}": new_key(f"k{i}", ["digits"]) for i in range(400)}
    return {"cfg_path": cfg_path, "profile": info, "keys": keys}


def _guard_config(setup: dict[str, Any], db: str, port: int = 0) -> dict[str, Any]:
    return {
        "version": 1,
        "name": "digits",
        "model": {"config": str(setup["cfg_path"]), "asset": "digits"},
        "profile": {"path": setup["profile"]["path"], "sha256": setup["profile"]["sha256"]},
        "keys": [spec.model_dump() for _, spec in setup["keys"].values()],
        "limits": {"rate": 1e6, "burst": 1e6, "daily_quota": 10**9},
        "audit": {"db": db},
        "server": {"port": port},
        "canaries": [{"id": "trap", "sha256": "ab" * 32}],
    }


def _data(setup: dict[str, Any]) -> dict[str, np.ndarray]:
    from bastion.core.config import load_config
    from bastion.data import load_dataset

    cfg = load_config(setup["cfg_path"])
    ds = load_dataset(
        cfg.dataset("digit-images"), base_dir=Path(setup["cfg_path"]).parent, input_shape=(1, 8, 8)
    )
    hold = np.concatenate([ds.split("test").x, ds.split("population").x])
    yh = np.concatenate([ds.split("test").y, ds.split("population").y])
    train = ds.split("train").x
    return {"hold": hold.reshape(len(hold), -1), "y": yh, "train": train.reshape(len(train), -1)}


# -- 1. in-process overhead -------------------------------------------------------------------------
def bench_inprocess(setup: dict[str, Any], work: Path, n: int, rounds: int) -> dict[str, Any]:
    """Per-request time through ASGI, bare vs guard, interleaved rounds."""
    import httpx

    from bastion.guard.app import build_guard, create_app, create_bare_app
    from bastion.guard.config import GuardConfig

    cfg = GuardConfig.model_validate(_guard_config(setup, f"sqlite:///{work / 'inproc.db'}"))
    guard = build_guard(cfg)
    guard_app = create_app(cfg, guard=guard)
    bare_app = create_bare_app(guard.target, name="digits")
    secret = setup["keys"]["k0"][0]
    hdr = {"Authorization": f"Bearer {secret}"}
    rows = _data(setup)["hold"]
    bodies = [
        json.dumps({"instances": [rows[i % len(rows)].reshape(1, 8, 8).tolist()]}).encode() for i in range(n)
    ]
    # 10,000 stored queries for the key first (bounded state; detectors keep working)
    for i in range(10_000):
        guard.handle("digits", hdr, bodies[i % len(bodies)])
    guard.policy.keys.clear()  # the warm-up key is not a thief for the timing runs
    guard.limiter._factor.clear()

    async def timed(app: Any) -> list[float]:
        out = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as c:
            for b in bodies:
                t0 = time.perf_counter()
                r = await c.post("/v1/models/digits/predict", content=b, headers=hdr)
                out.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
        return out

    bare: list[float] = []
    guarded: list[float] = []
    for _ in range(rounds):
        bare += asyncio.run(timed(bare_app))
        guarded += asyncio.run(timed(guard_app))
    guard.store.close()  # type: ignore[attr-defined]
    p50b, p50g = statistics.median(bare) * 1e3, statistics.median(guarded) * 1e3
    return {
        "requests_per_app": len(bare),
        "stored_queries_per_key": guard.extraction.stats["k0"].n if guard.extraction else 0,
        "bare_p50_ms": round(p50b, 3),
        "guard_p50_ms": round(p50g, 3),
        "added_p50_ms": round(p50g - p50b, 3),
        "bare_p95_ms": round(float(np.quantile(bare, 0.95)) * 1e3, 3),
        "guard_p95_ms": round(float(np.quantile(guarded, 0.95)) * 1e3, 3),
        "target_added_p50_ms": 1.0,
    }


# -- 2. HTTP throughput -----------------------------------------------------------------------------
_BARE = """
import sys, hashlib, uvicorn
from pathlib import Path
from bastion.core.config import load_config
from bastion.targets import build_target
from bastion.guard.app import create_bare_app
cfg_path = Path(sys.argv[1]); cfg = load_config(cfg_path); a = cfg.asset("digits")
data = (cfg_path.parent / a.path).read_bytes()
sha = hashlib.sha256(data).hexdigest()
t = build_target(a, base_dir=cfg_path.parent, verified_bytes=data, verified_sha256=sha)
uvicorn.run(create_bare_app(t, name="digits"), host="127.0.0.1", port=int(sys.argv[2]), log_level="error")
"""


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.post(url, content=b"{}", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not start")


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux ``/proc``; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load(url: str, hdr: dict[str, str], bodies: list[bytes], seconds: float, threads: int) -> float:
    import httpx

    count = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        with httpx.Client(timeout=10) as c:
            j = i
            while time.monotonic() < stop:
                r = c.post(url, content=bodies[j % len(bodies)], headers=hdr)
                assert r.status_code == 200, r.text
                j += threads
                with lock:
                    count[0] += 1

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return count[0] / seconds


def bench_http(setup: dict[str, Any], work: Path, seconds: float, rounds: int) -> dict[str, Any]:
    """Requests per second over HTTP, bare vs guard, each in its own process."""
    gport, bport = _port(), _port()
    gcfg = _guard_config(setup, f"sqlite:///{work / 'http.db'}", gport)
    # Detectors all run, but answers stay full probabilities (as bare) so the comparison is like for like.
    gcfg["response"] = {"harden_at": "critical"}
    (work / "guard.yaml").write_text(json.dumps(gcfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    serve = [sys.executable, "-m", "bastion.cli", "guard", "serve", "-c", str(work / "guard.yaml")]
    spy = os.environ.get("GUARD_BENCH_PYSPY")  # profile the guard server (py-spy on PATH or in the venv)
    if spy:
        exe = Path(sys.executable).with_name("py-spy")
        serve = [
            str(exe),
            "record",
            "-o",
            spy,
            "-f",
            os.environ.get("GUARD_BENCH_PYSPY_FORMAT", "speedscope"),
            "-r",
            "200",
            "--",
            *serve,
        ]
    procs = [
        subprocess.Popen(serve, env=env),
        subprocess.Popen([sys.executable, "-c", _BARE, str(setup["cfg_path"]), str(bport)], env=env),
    ]
    try:
        gurl = f"http://127.0.0.1:{gport}/v1/models/digits/predict"
        burl = f"http://127.0.0.1:{bport}/v1/models/digits/predict"
        _wait(gurl)
        _wait(burl)
        rows = _data(setup)["hold"]
        bodies = [json.dumps({"instances": [r.reshape(1, 8, 8).tolist()]}).encode() for r in rows[:500]]
        hdrs = [{"Authorization": f"Bearer {setup['keys']['k0'][0]}"}]
        bare, guarded = [], []
        cpu: dict[str, list[float]] = {"bare": [], "guard": []}  # server CPU ms per request

        def timed_load(which: str, proc: Any, url: str) -> float:
            c0 = _cpu_s(proc.pid)
            rps = _load(url, hdrs[0], bodies, seconds, 8)
            cpu[which].append((_cpu_s(proc.pid) - c0) / max(1.0, rps * seconds) * 1e3)
            return rps

        for _ in range(rounds):
            bare.append(timed_load("bare", procs[1], burl))
            guarded.append(timed_load("guard", procs[0], gurl))
    finally:
        for p in procs:
            if spy and p is procs[0]:
                import signal

                p.send_signal(signal.SIGINT)  # py-spy writes its profile on Ctrl-C
                p.wait(30)
                continue
            p.terminate()
            p.wait(10)
    b, g = statistics.median(bare), statistics.median(guarded)
    return {
        "bare_rps": round(b, 1),
        "guard_rps": round(g, 1),
        "ratio": round(g / b, 3),
        "ratios_per_round": [round(gi / bi, 3) for bi, gi in zip(bare, guarded, strict=True)],
        # CPU of the server process per answered request (the guard's under py-spy is not measured)
        "bare_server_cpu_ms_per_request": round(statistics.median(cpu["bare"]), 3),
        "guard_server_cpu_ms_per_request": None if spy else round(statistics.median(cpu["guard"]), 3),
        "rounds": rounds,
        "seconds_per_round": seconds,
        "target_ratio": 0.7,
    }


# -- 5. group commit --------------------------------------------------------------------------------
def bench_group_commit(setup: dict[str, Any], work: Path, db: str | None, rounds: int) -> dict[str, Any]:
    """The app's group-committed audit vs a commit per request, 8 concurrent clients, in process."""
    import types

    import httpx

    from bastion.guard.app import build_guard, create_app
    from bastion.guard.config import GuardConfig

    cfg = GuardConfig.model_validate(_guard_config(setup, db or f"sqlite:///{work / 'commit.db'}"))
    guard = build_guard(cfg)
    app = create_app(cfg, guard=guard)
    hdr = {"Authorization": f"Bearer {setup['keys']['k0'][0]}"}
    rows = _data(setup)["hold"]
    bodies = [json.dumps({"instances": [r.reshape(1, 8, 8).tolist()]}).encode() for r in rows[:500]]
    clients, per = 8, 150

    async def one_commit_each(self: Any, model: str, headers: Any, body: bytes) -> Any:
        return self.handle(model, headers, body)  # ``store.append`` inside: one transaction each

    async def load() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as c:

            async def client(i: int) -> None:
                for j in range(per):
                    body = bodies[(i * per + j) % len(bodies)]
                    r = await c.post("/v1/models/digits/predict", content=body, headers=hdr)
                    assert r.status_code == 200, r.text

            await asyncio.gather(*(client(i) for i in range(clients)))

    out: dict[str, list[float]] = {"group": [], "single": [], "group_rps": [], "single_rps": []}
    batches = records = 0
    for _ in range(rounds):
        for mode in ("group", "single"):
            if mode == "single":
                guard.handle_async = types.MethodType(one_commit_each, guard)  # type: ignore[method-assign]
            else:
                guard.__dict__.pop("handle_async", None)
            b0, r0 = guard.commits.batches, guard.commits.records
            c0, t0 = time.process_time(), time.perf_counter()
            asyncio.run(load())
            n = clients * per
            out[mode].append((time.process_time() - c0) / n * 1e3)
            out[f"{mode}_rps"].append(n / (time.perf_counter() - t0))
            batches += guard.commits.batches - b0
            records += guard.commits.records - r0
    guard.store.close()  # type: ignore[attr-defined]
    med = {k: statistics.median(v) for k, v in out.items()}
    return {
        "audit_db": (db or "sqlite").split("://", 1)[0],
        "clients": clients,
        "requests_per_round": clients * per,
        "rounds": rounds,
        "group_commit_cpu_ms_per_request": round(med["group"], 3),
        "commit_per_request_cpu_ms_per_request": round(med["single"], 3),
        "group_commit_rps": round(med["group_rps"], 1),
        "commit_per_request_rps": round(med["single_rps"], 1),
        "throughput_ratio": round(med["group_rps"] / med["single_rps"], 3),
        "records_per_transaction": round(records / max(1, batches), 2),
    }


# -- 3. extraction detection ------------------------------------------------------------------------
def bench_extraction(setup: dict[str, Any], work: Path) -> dict[str, Any]:
    """When thieves get flagged, and whether benign clients do, on a simulated clock."""
    from bastion.guard.app import build_guard
    from bastion.guard.config import GuardConfig

    data = _data(setup)
    hold, yh = data["hold"], data["y"]
    rng = np.random.default_rng(0)

    class Clock:
        t = 1_700_000_000.0

        def __call__(self) -> float:
            return self.t

    def fresh(name: str) -> tuple[Any, Clock]:
        clock = Clock()
        cfg = GuardConfig.model_validate(_guard_config(setup, f"sqlite:///{work / (name + '.db')}"))
        return build_guard(cfg, clock=clock), clock

    def send(g: Any, key: str, x: np.ndarray) -> bool:
        """Send one row; True once the key is flagged (any extraction alert raised on it)."""
        hdr = {"Authorization": f"Bearer {setup['keys'][key][0]}"}
        body = json.dumps({"instances": [np.clip(x, 0, 1).reshape(1, 8, 8).tolist()]}).encode()
        r = g.handle("digits", hdr, body)
        assert r.status in (200, 429), r.body
        st = g.extraction.stats.get(key)
        return bool(st and st.flagged)

    def augment(x: np.ndarray) -> np.ndarray:
        img = np.roll(x.reshape(8, 8), tuple(rng.integers(-1, 2, size=2)), axis=(0, 1))
        return np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1).reshape(-1)

    out: dict[str, Any] = {}
    # natural-data thief: held-out digits and augmented variants
    g, clock = fresh("natural")
    stream = [hold[i] if rng.random() < 0.5 else augment(hold[i]) for i in rng.permutation(len(hold))[:500]]
    out["natural_thief_flagged_at"] = next((i + 1 for i, x in enumerate(stream) if send(g, "k1", x)), None)
    # synthetic thief: uniform noise images, and Papernot-style perturbed seeds
    g, clock = fresh("synthetic")
    syn = rng.uniform(0, 1, size=(500, 64))
    out["synthetic_uniform_thief_flagged_at"] = next(
        (i + 1 for i, x in enumerate(syn) if send(g, "k1", x)), None
    )
    g, clock = fresh("synthetic2")
    seeds = hold[rng.choice(len(hold), 10, replace=False)]
    syn2 = np.clip(seeds[rng.integers(0, 10, 500)] + rng.choice([-0.3, 0.3], size=(500, 64)), 0, 1)
    out["synthetic_jbda_thief_flagged_at"] = next(
        (i + 1 for i, x in enumerate(syn2) if send(g, "k1", x)), None
    )
    # thief split across 10 keys: round-robin over a natural stream, and one class per key
    for variant in ("round_robin", "class_per_key"):
        g, clock = fresh(variant)
        total, first, flagged_keys = 0, None, set()
        for r in range(200):
            for k in range(10):
                if variant == "round_robin":
                    x = stream[(r * 10 + k) % len(stream)]
                else:
                    pool = hold[yh == k]
                    x = pool[r % len(pool)] if r < len(pool) else augment(pool[r % len(pool)])
                clock.t += 2.0
                total += 1
                if send(g, f"k{10 + k}", x):
                    flagged_keys.add(k)
                    first = first or total
        out[f"split_10_keys_{variant}_first_flag_at_total"] = first
        out[f"split_10_keys_{variant}_keys_flagged"] = len(flagged_keys)
    # sybil thief (red-team round 18): 5 keys, two classes each; every natural row is followed by
    # near-copies that land in its own cell, so no key's novelty reaches the cross-key bound
    g, clock = fresh("near_copies")
    prof = g.profile
    plans_s: dict[str, list[np.ndarray]] = {}
    for k in range(5):
        nat = hold[np.isin(yh, [2 * k, 2 * k + 1])]
        rows: list[np.ndarray] = []
        for r, c in zip(nat, prof.cells(prof.project(nat.astype(np.float64))), strict=True):
            rows.append(r)
            cand = np.clip(r + rng.normal(0, 0.03, (5, r.size)), 0, 1)
            rows.extend(cand[prof.cells(prof.project(cand)) == c])
        plans_s[f"k{20 + k}"] = rows
    total, first, flagged_keys = 0, None, set()
    for r in range(max(len(v) for v in plans_s.values())):
        for key, rows in plans_s.items():
            if r < len(rows):
                clock.t += 2.0
                total += 1
                if send(g, key, rows[r]):
                    flagged_keys.add(key)
                    first = first or total
    out["sybil_5_keys_near_copies_first_flag_at_total"] = first
    out["sybil_5_keys_near_copies_keys_flagged"] = len(flagged_keys)
    # 200 benign clients interleaved, human rate
    g, clock = fresh("benign")
    g_benign = g
    plans = []
    for _ in range(200):
        cls = rng.choice(10, size=rng.integers(1, 3), replace=False)
        pool = np.where(np.isin(yh, cls))[0]
        bases = hold[rng.choice(pool, size=rng.integers(1, 6))]
        q: list[np.ndarray] = []
        for _ in range(int(rng.integers(20, 201))):
            if q and rng.random() < 0.3:
                q.append(q[int(rng.integers(len(q)))])
            else:
                q.append(np.clip(bases[rng.integers(len(bases))] + rng.normal(0, 0.05, 64), 0, 1))
        plans.append(q)
    pos = [0] * 200
    flagged = set()
    active = list(range(200))
    while active:
        b = active[int(rng.integers(len(active)))]
        clock.t += float(rng.uniform(20, 60)) / 20  # 20 clients active at once, each at 20–60 s per query
        if send(g, f"k{100 + b}", plans[b][pos[b]]):
            flagged.add(b)
        pos[b] += 1
        if pos[b] >= len(plans[b]):
            active.remove(b)
    # a thief who stole the training data (honeytokens planted) replays it in random order
    g, clock = fresh("replay")
    with np.load(work / "honeytokens.npz") as z:
        planted = z["x"].reshape(len(z["x"]), -1)
    stolen = np.concatenate([data["train"], planted])
    hits_at = None
    for i, j in enumerate(rng.permutation(len(stolen))):
        send(g, "k2", stolen[j])
        if g.alert_counts.get("guard.honeytoken.hit"):
            hits_at = i + 1
            break
    out["stolen_data_replay"] = {"rows": len(stolen), "honeytokens": len(planted), "flagged_at": hits_at}
    out["benign_honeytoken_hits"] = g_benign.alert_counts.get("guard.honeytoken.hit", 0)
    out["benign_clients"] = 200
    out["benign_queries"] = int(sum(len(p) for p in plans))
    out["benign_flagged"] = len(flagged)
    out["targets"] = {"thief_within": 500, "split_within_total": 2000, "benign_flagged": 0}
    return out


# -- 4. HopSkipJump sessions ------------------------------------------------------------------------
class GuardedLabels:
    """A label oracle for the real ``evasion.hopskipjump`` loop that routes every query through a guard.

    The attack always gets the model's true labels (``oracle``), so its trajectory is the one it
    would have against the bare model; the guard sees each batch (one request per batch, through
    ``send``) until it refuses the key. Records the attack's best adversarial L∞ distance after
    each query and the query count at which the guard first acted on the key.

    Args:
        send: sends one batch through the guard; returns True once the key is flagged.
        oracle: the model's labels of a batch ``(n, *shape)`` → ``(n,)``.
        x0: the attacked input ``(*shape)``; y0: its clean label.
    """

    def __init__(self, send: Any, oracle: Any, x0: np.ndarray, y0: int) -> None:
        self.send, self.oracle, self.x0, self.y0 = send, oracle, x0.reshape(-1), int(y0)
        self.queries = 0
        self.flagged_at: int | None = None
        self.best = np.inf
        self.trace: list[tuple[int, float]] = []  # (queries, best distance) when it improves

    def predict_label(self, x: np.ndarray) -> np.ndarray:
        """Labels of ``x`` (true labels), after the guard has seen the batch."""
        lab = np.asarray(self.oracle(x), dtype=np.int64)
        if self.flagged_at is None and self.send(x):
            self.flagged_at = self.queries + len(x)
        flat = x.reshape(len(x), -1).astype(np.float64)
        dist = np.abs(flat - self.x0).max(axis=1)
        for i in range(len(x)):
            self.queries += 1
            if lab[i] != self.y0 and dist[i] < self.best:
                self.best = float(dist[i])
                self.trace.append((self.queries, self.best))
        return lab

    def converged_at(self, tol: float = 0.1) -> int | None:
        """First query count whose best distance is within ``tol`` (relative) of the final best."""
        if not self.trace:
            return None
        final = self.trace[-1][1]
        return next(q for q, d in self.trace if d <= final * (1 + tol))


def hsj_session(
    send: Any, oracle: Any, x0: np.ndarray, y0: int, *, seed: int, max_queries: int = 1000
) -> dict[str, Any]:
    """One real HopSkipJump (``bastion.assess.evasion.hopskipjump``) run on ``x0`` through a guard.

    Values are in ``[0, 1]``; untargeted L∞ at ε = 0.1 (the attack's default threshold ε).

    Returns:
        ``queries``, ``flagged_at`` (query count, or ``None``), ``converged_at`` (queries at which
        the best distance came within 10 % of its final value), ``final_distance``, ``flagged_before``.
    """
    from bastion.assess.evasion._common import InputBounds
    from bastion.assess.evasion.hopskipjump import HSJParams, _HSJEngine, hopskipjump_linf
    from bastion.core.budget import Budget, BudgetMeter

    shape = x0.shape
    bounds = InputBounds(
        lo=np.zeros(shape),
        hi=np.ones(shape),
        scale=np.ones(shape),
        mutable=np.ones(shape, dtype=bool),
        integer=np.zeros(shape, dtype=bool),
        unit="fraction",
    )
    proxy = GuardedLabels(send, oracle, x0, y0)
    params = HSJParams(max_queries=max_queries)
    eng = _HSJEngine(proxy, params, bounds, np.random.default_rng(seed), BudgetMeter(Budget()))
    out = hopskipjump_linf(eng, x0[None].astype(np.float32), np.array([y0]), 0.1, max_queries)
    conv = proxy.converged_at()
    return {
        "queries": proxy.queries,
        "flagged_at": proxy.flagged_at,
        "converged_at": conv,
        "final_distance": round(proxy.best, 4) if np.isfinite(proxy.best) else None,
        "success_at_eps": bool(out.success[0]),
        "flagged_before": proxy.flagged_at is not None and (conv is None or proxy.flagged_at < conv),
    }


# -- 5. output hardening against a label-only thief ------------------------------------------------
def label_thief(
    ask: Any, pool: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A label-only thief: ``n`` natural queries (``pool`` rows, half of them augmented) one per request.

    Args:
        ask: one flat row ``(F,)`` → the label answered.
        pool: the thief's natural data ``(M, 64)`` in ``[0, 1]`` (8×8 digits).
        n: queries.
        rng: the thief's randomness.

    Returns:
        The queries ``(n, F)`` and the labels answered ``(n,)``.
    """
    qs, labs = [], []
    for i in rng.integers(0, len(pool), n):
        x = pool[i]
        if rng.random() < 0.5:
            img = np.roll(x.reshape(8, 8), tuple(rng.integers(-1, 2, size=2)), axis=(0, 1))
            x = np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1).reshape(-1)
        qs.append(x)
        labs.append(int(ask(x)))
    return np.asarray(qs), np.asarray(labs)


def surrogate_fidelity(
    q: np.ndarray, labels: np.ndarray, ev: np.ndarray, ev_true: np.ndarray
) -> dict[str, float]:
    """Agreement with the model on ``ev`` of clones trained on ``(q, labels)``: logistic and MLP."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    out = {}
    for name, clf in (
        ("logistic", LogisticRegression(max_iter=500)),
        ("mlp", MLPClassifier((64,), max_iter=300, random_state=0)),
    ):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(q, labels)
        out[name] = round(float((clf.predict(ev) == ev_true).mean()), 4)
    return out


def bench_sessions(setup: dict[str, Any], work: Path, runs: int) -> dict[str, Any]:
    """HopSkipJump sessions and output hardening on the clinic digits model (simulated clock, in process).

    Each HopSkipJump run (the real ``evasion.hopskipjump`` loop, L∞, 1,000-query cap per sample)
    attacks a different held-out digit with its own seed and its own key; every batch the attack
    sends is one request through ``Guard.handle`` (what the ASGI route calls). A run counts when
    the guard acts on the key (strike or refusal) before the attack's best distance comes within
    10 % of its final value. Hardening: a label-only thief (2,000 natural queries, one per
    request) clones the model from the bare model's labels and from a guarded key's answers.
    """
    from bastion.guard.app import build_guard
    from bastion.guard.config import GuardConfig

    data = _data(setup)
    hold = data["hold"]
    clock_t = [1_700_000_000.0]

    def clock() -> float:
        clock_t[0] += 1.0
        return clock_t[0]

    cfg = GuardConfig.model_validate(_guard_config(setup, f"sqlite:///{work / 'sessions.db'}"))
    g = build_guard(cfg, clock=clock)
    oracle = g.target.predict_label
    results = []
    for run in range(runs):
        key = f"k{200 + run}"
        hdr = {"Authorization": f"Bearer {setup['keys'][key][0]}"}
        clock_t[0] += 600.0

        def send(xb: np.ndarray, hdr: dict[str, str] = hdr, key: str = key) -> bool:
            body = json.dumps({"instances": xb.reshape(len(xb), 1, 8, 8).tolist()}).encode()
            r = g.handle("digits", hdr, body)
            p = g.policy.keys.get(key)
            return bool(p and p.strikes > 0) or r.status == 429

        x0 = hold[(run * 37) % len(hold)].reshape(1, 8, 8).astype(np.float32)
        y0 = int(oracle(x0[None])[0])
        res = hsj_session(send, oracle, x0, y0, seed=run)
        st = g.extraction.stats.get(key) if g.extraction else None
        res["rules"] = sorted(st.flagged) if st else []
        results.append(res)
    flagged_at = [r["flagged_at"] for r in results if r["flagged_at"] is not None]
    conv = [r["converged_at"] for r in results if r["converged_at"] is not None]
    out: dict[str, Any] = {
        "hopskipjump": {
            "runs": runs,
            "flagged_before_convergence": round(sum(r["flagged_before"] for r in results) / runs, 4),
            "flagged_at_median_queries": float(np.median(flagged_at)) if flagged_at else None,
            "converged_at_median_queries": float(np.median(conv)) if conv else None,
            "queries_per_run_median": float(np.median([r["queries"] for r in results])),
            "success_at_eps_0.1": round(float(np.mean([r["success_at_eps"] for r in results])), 4),
            "rules": sorted({rule for r in results for rule in r["rules"]}),
            "target": 0.9,
        }
    }
    g.store.close()  # type: ignore[attr-defined]
    # output hardening against a label-only thief
    pool, ev = hold[:600], hold[600:]
    ev_true = oracle(ev.reshape(-1, 1, 8, 8).astype(np.float32))
    q, lab = label_thief(
        lambda r: int(oracle(r.reshape(1, 1, 8, 8).astype(np.float32))[0]),
        pool,
        2000,
        np.random.default_rng(1),
    )
    bare = surrogate_fidelity(q, lab, ev, ev_true)
    guarded = []
    for rep in range(3):
        cfg = GuardConfig.model_validate(_guard_config(setup, f"sqlite:///{work / f'harden{rep}.db'}"))
        g = build_guard(cfg, clock=clock)
        key = f"k{300 + rep}"
        hdr = {"Authorization": f"Bearer {setup['keys'][key][0]}"}

        def ask(r: np.ndarray, g: Any = g, hdr: dict[str, str] = hdr) -> int:
            resp = g.handle("digits", hdr, json.dumps({"instances": [r.reshape(1, 8, 8).tolist()]}).encode())
            p = resp.body["predictions"][0]
            return int(p) if resp.body["output"] == "label" else int(np.argmax(p))

        q, lab = label_thief(ask, pool, 2000, np.random.default_rng(1))
        guarded.append(surrogate_fidelity(q, lab, ev, ev_true))
        g.store.close()
    out["hardening"] = {
        "thief_queries": 2000,
        "bare_fidelity": bare,
        "hardened_fidelity": guarded,
        "hardened_fidelity_max": max(max(f.values()) for f in guarded),
        "mode": "noisy-label (flip_fraction 0.3)",
        "target": 0.8,
    }
    return out


def main() -> None:
    """Run every part and print JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--clinic", default="/tmp/guard-clinic")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-http", action="store_true")
    ap.add_argument("--only-sessions", action="store_true", help="only HopSkipJump and hardening")
    ap.add_argument("--only-http", action="store_true", help="only the HTTP throughput part")
    ap.add_argument("--only-extraction", action="store_true", help="only the extraction part (3)")
    ap.add_argument("--only-commit", action="store_true", help="only the group-commit A/B (part 5)")
    ap.add_argument("--audit-db", default=None, help="audit database URL of part 5 (default: SQLite)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the HTTP part")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per HTTP round (2 quick, 5 full)")
    ap.add_argument("--hsj-runs", type=int, default=50)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import logging

    logging.getLogger("bastion.guard").setLevel(logging.ERROR)  # alerts are expected here
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bastion-guard-bench-") as tmp:
        work = Path(tmp)
        setup = _setup(Path(args.clinic), work)
        res: dict[str, Any] = {"model": "clinic digits CNN (torch)", "machine_cores": os.cpu_count()}
        seconds = args.seconds or (2.0 if args.quick else 5.0)
        if args.only_commit:
            res["group_commit"] = bench_group_commit(setup, work, args.audit_db, rounds=args.rounds)
            sys.stdout.write(json.dumps(res, indent=2) + "\n")
            return
        if args.only_extraction:
            res["extraction"] = bench_extraction(setup, work)
            sys.stdout.write(json.dumps(res, indent=2) + "\n")
            return
        if args.only_http:
            res["http"] = bench_http(setup, work, seconds=seconds, rounds=args.rounds)
            sys.stdout.write(json.dumps(res, indent=2) + "\n")
            return
        if not args.only_sessions:
            res["in_process"] = bench_inprocess(setup, work, n=200 if args.quick else 1000, rounds=3)
            if not args.skip_http:
                res["http"] = bench_http(setup, work, seconds=seconds, rounds=args.rounds)
            res["extraction"] = bench_extraction(setup, work)
        res["sessions"] = bench_sessions(setup, work, runs=10 if args.quick else args.hsj_runs)
    sys.stdout.write(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
