"""The conformance kit: every registered attack against tiny models of every target kind.

``bastion.testing`` builds, deterministically under a seed, the same tiny classifier behind
each target kind Bastion supports — a torch MLP (``TorchTarget``), a scikit-learn logistic
regression (``SklearnTarget``), the torch MLP exported to ONNX (``OnnxTarget``) and the
scikit-learn model served over HTTP on 127.0.0.1 (``HttpTarget``) — and checks a plugin against
the contract every plugin keeps (DESIGN.md, "conformance kit"):

* it runs or is skipped with a reason, never crashes, on every kind it applies to;
* it is deterministic under a seed (same metrics twice);
* it does not mutate its inputs;
* it respects its query budget (``budget_used.queries`` ≤ ``budget.queries``);
* its result serialises to JSON and to SARIF 2.1.0.

Use it on your own plugins (``pytest`` parametrised over ``conformance_cases()``), or call
:func:`check_conformance` directly. Needs the ``torch``, ``onnx``, ``data`` and ``guard`` extras.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.budget import Budget
from bastion.core.check import Check, CheckContext, Split
from bastion.core.config import Asset, EndpointSpec, Feature, InputSpec, ProjectConfig
from bastion.core.errors import require
from bastion.core.report import Report, ReportFinding, RunInfo
from bastion.core.results import CheckResult

#: Target kinds the kit builds.
KINDS = ("torch", "sklearn", "onnx", "http")

N_FEATURES = 6
N_CLASSES = 3


@dataclass
class TinyTarget:
    """One tiny model behind one target kind, with its data and asset."""

    kind: str
    target: Any
    asset: Asset
    data: dict[str, Split]


@dataclass
class ConformanceReport:
    """What :func:`check_conformance` saw; ``problems`` is empty when the plugin conforms."""

    plugin: str
    kind: str
    status: str
    reason: str | None = None
    problems: list[str] = field(default_factory=list)


def _data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 2.0, size=(N_CLASSES, N_FEATURES))
    y = rng.integers(0, N_CLASSES, size=240)
    x = centers[y] + rng.normal(0.0, 1.0, size=(240, N_FEATURES))
    return x.astype(np.float32), y.astype(np.int64)


def _asset(kind: str, x: np.ndarray, url: str | None = None) -> Asset:
    lo, hi = x.min(axis=0), x.max(axis=0)
    features = [Feature(name=f"f{j}", min=float(lo[j]) - 1, max=float(hi[j]) + 1) for j in range(N_FEATURES)]
    spec = InputSpec(shape=[N_FEATURES], features=features, eps_unit="fraction")
    if kind == "http":
        return Asset(
            name=f"tiny-{kind}",
            kind="endpoint",
            url=url,
            num_classes=N_CLASSES,
            input=spec,
            endpoint=EndpointSpec(output="probabilities"),
        )
    framework = {"torch": "torch", "onnx": "onnx", "sklearn": "sklearn"}[kind]
    return Asset(
        name=f"tiny-{kind}",
        kind="model",
        path=f"tiny.{kind}",
        framework=framework,
        num_classes=N_CLASSES,
        input=spec,
    )


def _splits(x: np.ndarray, y: np.ndarray) -> dict[str, Split]:
    idx = np.arange(len(x))
    parts = {"train": idx[:120], "test": idx[120:180], "population": idx[180:]}
    return {k: Split(x=x[v], y=y[v], index=v) for k, v in parts.items()}


def _torch_mlp(x: np.ndarray, y: np.ndarray, seed: int) -> Any:
    torch = require("torch", "torch")
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(N_FEATURES, 16), torch.nn.ReLU(), torch.nn.Linear(16, N_CLASSES)
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    xt, yt = torch.from_numpy(x[:120]), torch.from_numpy(y[:120])
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    return model.eval()


class _Server:
    """The scikit-learn model in the default wire format on 127.0.0.1 (an ephemeral port)."""

    def __init__(self, est: Any) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                rows = np.asarray(body["instances"], dtype=np.float64)
                data = json.dumps({"predictions": est.predict_proba(rows).tolist()}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/predict"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextlib.contextmanager
def tiny_targets(seed: int = 0) -> Iterator[dict[str, TinyTarget]]:
    """The tiny model behind every target kind (``KINDS``); the HTTP server stops on exit."""
    from bastion.targets.http_target import HttpTarget
    from bastion.targets.onnx_target import OnnxTarget
    from bastion.targets.sklearn_target import SklearnTarget
    from bastion.targets.torch_target import TorchTarget

    torch = require("torch", "torch")
    linear_model = require("sklearn.linear_model", "data")
    x, y = _data(seed)
    splits = _splits(x, y)
    mlp = _torch_mlp(x, y, seed)
    est = linear_model.LogisticRegression(max_iter=500).fit(x[:120], y[:120])
    server = _Server(est)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = Path(tmp) / "tiny.onnx"
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    mlp,
                    (torch.zeros(1, N_FEATURES),),
                    str(onnx_path),
                    dynamo=False,
                    input_names=["x"],
                    output_names=["logits"],
                    dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
                )
            shape = (N_FEATURES,)
            out = {
                "torch": TinyTarget(
                    "torch",
                    TorchTarget(mlp, name="tiny-torch", input_shape=shape, num_classes=N_CLASSES),
                    _asset("torch", x),
                    splits,
                ),
                "sklearn": TinyTarget(
                    "sklearn",
                    SklearnTarget(est, name="tiny-sklearn", input_shape=shape, num_classes=N_CLASSES),
                    _asset("sklearn", x),
                    splits,
                ),
                "onnx": TinyTarget(
                    "onnx",
                    OnnxTarget(
                        onnx_path, name="tiny-onnx", input_shape=shape, num_classes=N_CLASSES, output="logits"
                    ),
                    _asset("onnx", x),
                    splits,
                ),
                "http": TinyTarget(
                    "http",
                    HttpTarget(server.url, name="tiny-http", input_shape=shape, num_classes=N_CLASSES),
                    _asset("http", x, server.url),
                    splits,
                ),
            }
            yield out
    finally:
        server.close()


def _context(check: type[Check], tiny: TinyTarget, budget: Budget, seed: int) -> CheckContext:
    return CheckContext(
        asset=tiny.asset,
        config=ProjectConfig(version=1),
        base_dir=Path(tempfile.gettempdir()),
        budget=budget,
        params=check.parse_params(None),
        thresholds=list(check.default_thresholds),
        seed=seed,
        target=tiny.target,
        data=tiny.data,
        facts={tiny.asset.name: {}},
    )


def _snapshot(data: dict[str, Split]) -> dict[str, tuple[bytes, bytes | None]]:
    return {k: (v.x.tobytes(), None if v.y is None else v.y.tobytes()) for k, v in data.items()}


def _sarif_ok(result: CheckResult) -> str | None:
    from bastion import __version__
    from bastion.report import report_to_sarif

    report = Report(
        bastion_version=__version__,
        run=RunInfo(id="conformance", status="ok", started=dt.datetime.now(dt.UTC), seconds=0.0),
        checks=[result],
        findings=[ReportFinding.of(f) for f in result.findings],
    )
    doc = json.loads(report_to_sarif(report))
    if doc.get("version") != "2.1.0":
        return "SARIF output is not version 2.1.0"
    return None


def check_conformance(
    check: type[Check], tiny: TinyTarget, *, budget: Budget | None = None, seed: int = 0
) -> ConformanceReport:
    """Run ``check`` twice on ``tiny`` and list every way it breaks the plugin contract."""
    budget = budget or Budget(queries=2500, samples=12, seconds=60)
    out = ConformanceReport(plugin=check.id, kind=tiny.kind, status="skipped")
    if tiny.asset.kind not in check.applies_to:
        out.reason = f"applies to {sorted(check.applies_to)}, not {tiny.asset.kind}"
        return out
    instance = check()
    ctx = _context(check, tiny, budget, seed)
    reason = instance.applicable(ctx)
    if reason is not None:
        out.reason = reason
        return out
    problems = instance.preflight(ctx)
    if problems:
        out.status = "preflight"
        out.reason = "; ".join(problems)
        return out
    before = _snapshot(tiny.data)
    results = []
    for _ in range(2):
        if hasattr(tiny.target, "clear_cache"):
            tiny.target.clear_cache()  # a remote target's cache would make the second run cheaper
        try:
            results.append(instance.run(_context(check, tiny, budget, seed)))
        except Exception as exc:  # the one thing a plugin must never do
            out.status = "crashed"
            out.problems.append(f"raised {type(exc).__name__}: {exc}")
            return out
    first, second = results
    out.status = first.status
    if _snapshot(tiny.data) != before:
        out.problems.append("mutated its input data")
    if first.metrics != second.metrics:
        diff = sorted(
            k
            for k in set(first.metrics) | set(second.metrics)
            if first.metrics.get(k) != second.metrics.get(k)
        )
        out.problems.append(f"not deterministic under a seed: {', '.join(diff[:5])}")
    used = first.budget_used
    if used is not None and budget.queries is not None and used.queries > budget.queries:
        out.problems.append(f"used {used.queries} queries, budget {budget.queries}")
    try:
        CheckResult.model_validate_json(first.model_dump_json())
        sarif = _sarif_ok(copy.deepcopy(first))
        if sarif:
            out.problems.append(sarif)
    except Exception as exc:
        out.problems.append(f"result does not serialise: {exc}")
    return out


def conformance_cases() -> list[tuple[str, str]]:
    """``(plugin id, target kind)`` pairs for every registered attack and every kind."""
    from bastion.api import load_plugins
    from bastion.core.registry import attacks

    load_plugins()
    return [(pid, kind) for pid in attacks for kind in KINDS]
