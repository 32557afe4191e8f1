"""Fixtures of the target tests: tiny real models trained here (seeded) and a local HTTP server.

* ``cancer``: sklearn's breast-cancer data, standardised, float32, a fixed train/test split.
* ``mlp``: a torch MLP (30-16-2) trained for a few full-batch epochs; ``model_files`` holds it
  as a TorchScript archive, a state_dict and an ONNX graph.
* ``logreg`` / ``logreg_file``: a LogisticRegression and its joblib file.
* ``server``: a ``ThreadingHTTPServer`` on 127.0.0.1 serving ``logreg`` in the default wire
  format, plus misbehaving routes; it counts every request it gets.
"""

from __future__ import annotations

import io
import json
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

from sklearn.linear_model import LogisticRegression  # noqa: E402
from tests.targets.tiny_models import MLP  # noqa: E402

TOKEN = "s3cret-token-value"


@dataclass(frozen=True)
class Cancer:
    """Standardised breast-cancer data (float32 inputs, int64 labels)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class ModelFiles:
    """The trained MLP saved three ways."""

    torchscript: Path
    state_dict: Path
    onnx: Path


def f64(x: np.ndarray) -> np.ndarray:
    """``x`` as float64 (what the server and SklearnTarget feed the estimator)."""
    return np.asarray(x, dtype=np.float64)


@pytest.fixture(scope="session")
def cancer() -> Cancer:
    x, y = sklearn_datasets.load_breast_cancer(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    perm = np.random.default_rng(0).permutation(len(x))
    tr, te = perm[:400], perm[400:]
    x = x.astype(np.float32)
    y = y.astype(np.int64)
    return Cancer(x[tr], y[tr], x[te], y[te])


@pytest.fixture(scope="session")
def mlp(cancer: Cancer) -> MLP:
    torch.manual_seed(0)
    model = MLP(30, 16, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    xt = torch.from_numpy(cancer.x_train)
    yt = torch.from_numpy(cancer.y_train)
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()
    return model.eval()


def onnx_graph_from_mlp(model: MLP, batch: int | str = "n") -> bytes:
    """The MLP as an ONNX graph built by hand (Gemm, Relu, Gemm); ``batch`` fixed or symbolic."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    inits = [
        numpy_helper.from_array(sd[k], name=k) for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "fc2.weight", "fc2.bias"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 30])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 2])],
        initializer=inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return bytes(m.SerializeToString())


def export_onnx(model: MLP) -> bytes:
    """``torch.onnx.export`` (TorchScript exporter); the hand-built graph if export fails here."""
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (torch.zeros(1, 30),),
                buf,
                dynamo=False,
                input_names=["x"],
                output_names=["logits"],
                dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
            )
        return buf.getvalue()
    except Exception:  # exporter unavailable (e.g. needs onnxscript): build the graph by hand
        return onnx_graph_from_mlp(model)


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory, mlp: MLP) -> ModelFiles:
    d = tmp_path_factory.mktemp("torch-models")
    ts = d / "mlp.torchscript.pt"
    with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(mlp), str(ts))
    sd = d / "mlp.state_dict.pt"
    torch.save(mlp.state_dict(), sd)
    ox = d / "mlp.onnx"
    ox.write_bytes(export_onnx(mlp))
    return ModelFiles(ts, sd, ox)


@pytest.fixture(scope="session")
def logreg(cancer: Cancer) -> LogisticRegression:
    return LogisticRegression(max_iter=500).fit(cancer.x_train, cancer.y_train)


@pytest.fixture(scope="session")
def logreg_file(tmp_path_factory: pytest.TempPathFactory, logreg: LogisticRegression) -> Path:
    import joblib

    p = tmp_path_factory.mktemp("sk-models") / "logreg.joblib"
    joblib.dump(logreg, p)
    return p


# -- HTTP server -----------------------------------------------------------------------------


@dataclass
class Server:
    """A running local server: ``url(route)``, the requests it got, and a reset."""

    base: str
    hits: list[dict[str, Any]] = field(default_factory=list)
    flaky_left: list[int] = field(default_factory=lambda: [1])
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, route: str) -> str:
        return f"{self.base}{route}"

    def reset(self) -> None:
        with self.lock:
            self.hits.clear()
            self.flaky_left[:] = [1]

    def count(self, route: str) -> int:
        with self.lock:
            return sum(1 for h in self.hits if h["route"] == route)

    def rows(self, route: str) -> list[int]:
        with self.lock:
            return [h["rows"] for h in self.hits if h["route"] == route]


def _make_handler(state: Server, model: LogisticRegression) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _send(self, status: int, body: Any, raw: bool = False) -> None:
            data = body.encode() if raw else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if raw else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            route = self.path.split("?")[0]
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            key = "inputs" if route == "/custom" else "instances"
            rows = body.get(key, [])
            x = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1) if rows else np.zeros((0, 30))
            with state.lock:
                state.hits.append(
                    {"route": route, "rows": len(rows), "auth": self.headers.get("Authorization")}
                )
                flaky = route == "/flaky" and state.flaky_left[0] > 0
                if flaky:
                    state.flaky_left[0] -= 1
            if flaky or route == "/down":
                return self._send(503 if route == "/down" else 500, {"error": "try again"})
            if route == "/auth" and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._send(401, {"error": "unauthorized"})
            if route == "/bad-request":
                return self._send(400, {"error": "bad input", "echo": rows})
            if route == "/garbage":
                return self._send(200, "<html>this is not json</html>", raw=True)
            proba = model.predict_proba(x).tolist() if len(x) else []
            if route == "/short":
                return self._send(200, {"predictions": proba[:-1]})
            if route == "/logits":
                z = model.decision_function(x) if len(x) else np.zeros(0)
                return self._send(200, {"predictions": [[-v / 2, v / 2] for v in z.tolist()]})
            if route == "/hardened":  # a guard answering a flagged key with labels only
                return self._send(200, {"predictions": model.predict(x).tolist(), "output": "label"})
            if route == "/labels":
                return self._send(200, {"predictions": model.predict(x).tolist() if len(x) else []})
            if route == "/strings":
                return self._send(200, {"predictions": [["a", "b"] for _ in rows]})
            if route == "/positive":
                return self._send(200, {"predictions": [p[1] for p in proba]})
            if route == "/custom":
                return self._send(200, {"outputs": proba})
            if route == "/drip":  # a valid answer, one byte every 0.3 s: each read is quick, the whole slow
                data = json.dumps({"predictions": proba}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                for i in range(len(data)):
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                    time.sleep(0.3)
                return None
            if route == "/drip-headers":  # the status line and headers, one byte every 0.3 s
                data = json.dumps({"predictions": proba}).encode()
                head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                head += f"Content-Length: {len(data)}\r\n\r\n"
                for i in range(len(head)):
                    self.wfile.write(head[i : i + 1].encode())
                    self.wfile.flush()
                    time.sleep(0.3)
                self.wfile.write(data)
                self.close_connection = True
                return None
            if route == "/drip-terminator":  # a whole chunked answer, then its terminator dripped
                data = json.dumps({"predictions": proba}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
                for b in b"0\r\n\r\n":
                    time.sleep(0.3)
                    self.wfile.write(bytes([b]))
                    self.wfile.flush()
                self.close_connection = True
                return None
            if route == "/no-length":  # no Content-Length: the body ends when the connection closes
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(json.dumps({"predictions": proba}).encode())
                self.close_connection = True
                return None
            return self._send(200, {"predictions": proba})

    return Handler


@pytest.fixture(scope="session")
def http_server(logreg: LogisticRegression) -> Iterator[Server]:
    state = Server(base="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state, logreg))
    httpd.daemon_threads = True
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, name="targets-test-http", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def server(http_server: Server) -> Server:
    http_server.reset()
    return http_server
