"""HttpTarget against a real local server: wire format, batching, cache, budget, retries, validation."""

from __future__ import annotations

import logging
import socket
import sys
import time

import numpy as np
import pytest
from tests.targets.conftest import TOKEN, Cancer, Server, f64

from bastion.core.budget import Budget, BudgetMeter
from bastion.core.capability import Capability
from bastion.core.errors import BudgetExhausted, ConfigError, MissingExtraError, TargetError
from bastion.targets.http_target import HttpTarget, redact_url

pytest.importorskip("httpx")

from sklearn.linear_model import LogisticRegression


def make(url: str, **kw: object) -> HttpTarget:
    kw.setdefault("backoff", 0.0)
    return HttpTarget(url, name="remote", input_shape=(30,), num_classes=2, **kw)  # type: ignore[arg-type]


def test_default_wire_format(server: Server, logreg: LogisticRegression, cancer: Cancer) -> None:
    with make(server.url("/predict")) as t:
        assert t.capabilities == {Capability.PROBABILITIES, Capability.BATCHED, Capability.QUERY_LIMITED}
        p = t.predict_proba(cancer.x_test[:20])
        np.testing.assert_allclose(p, logreg.predict_proba(f64(cancer.x_test[:20])), atol=1e-9)
        np.testing.assert_array_equal(
            t.predict_label(cancer.x_test[:20]), logreg.predict(f64(cancer.x_test[:20]))
        )
        with pytest.raises(TargetError, match="logits"):
            t.predict_logits(cancer.x_test[:2])
        with pytest.raises(TargetError, match="loss-gradients"):
            t.loss_gradient(cancer.x_test[:2], cancer.y_test[:2])
        assert t.queries == 20  # predict_label was answered from the cache
    assert server.count("/predict") == 1


def test_batches_of_max_batch_rows(server: Server, cancer: Cancer) -> None:
    x = np.concatenate([cancer.x_test, cancer.x_train[:100]])[:150]
    assert len(np.unique(x, axis=0)) == 150
    t = make(server.url("/predict"), max_batch=64)
    assert t.predict_proba(x).shape == (150, 2)
    assert server.rows("/predict") == [64, 64, 22]
    assert t.queries == 150 and t.requests == 3


def test_cache_does_not_resend_repeats(server: Server, cancer: Cancer) -> None:
    t = make(server.url("/predict"))
    x = cancer.x_test[:10]
    first = t.predict_proba(x)
    again = t.predict_proba(x)
    np.testing.assert_array_equal(first, again)
    assert server.rows("/predict") == [10]
    # duplicates inside one call are sent once; new rows only are sent
    mixed = np.concatenate([x[:3], cancer.x_test[10:12], cancer.x_test[10:12]])
    t.predict_proba(mixed)
    assert server.rows("/predict") == [10, 2]
    assert t.queries == 12
    assert t.cache_hits == 10 + 3 + 2
    t.clear_cache()
    t.predict_proba(x[:1])
    assert server.rows("/predict") == [10, 2, 1]


def test_cache_can_be_disabled(server: Server, cancer: Cancer) -> None:
    t = make(server.url("/predict"), cache_size=0)
    t.predict_proba(cancer.x_test[:4])
    t.predict_proba(cancer.x_test[:4])
    assert server.rows("/predict") == [4, 4] and t.queries == 8


def test_budget_exhausted_sends_nothing(server: Server, cancer: Cancer) -> None:
    t = make(server.url("/predict"), max_batch=32)
    meter = BudgetMeter(Budget(queries=100))
    with t.metered(meter):
        t.predict_proba(cancer.x_test[:80])
        t.predict_proba(cancer.x_test[:80])  # all cached: free
        assert meter.queries == 80
        sent = server.count("/predict")
        with pytest.raises(BudgetExhausted):
            t.predict_proba(cancer.x_test[70:110])  # 30 new rows: 110 > 100
        assert server.count("/predict") == sent
        assert meter.queries == 80 and t.queries == 80
        t.predict_proba(cancer.x_test[60:100])  # 20 new rows: exactly 100
        assert meter.queries == 100
    assert meter.usage().queries == 100


def test_retries_a_server_error_then_succeeds(server: Server, cancer: Cancer) -> None:
    t = make(server.url("/flaky"), max_retries=2)
    assert t.predict_proba(cancer.x_test[:5]).shape == (5, 2)
    assert server.count("/flaky") == 2 and t.requests == 2


def test_gives_up_after_max_retries(server: Server, cancer: Cancer) -> None:
    t = make(server.url("/down"), max_retries=2)
    with pytest.raises(TargetError, match=r"HTTP 503 after 3 attempt"):
        t.predict_proba(cancer.x_test[:5])
    assert server.count("/down") == 3


def test_timeout_bounds_the_whole_call_not_each_read(server: Server, cancer: Cancer) -> None:
    # an upstream dripping a valid answer byte by byte (red-team round 18: a 2 s timeout held 19.7 s)
    t = make(server.url("/drip"), max_retries=0, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(TargetError, match="timed out"):
        t.predict_proba(cancer.x_test[:1])
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize("route", ["/drip-headers", "/drip-terminator"])
def test_timeout_bounds_the_status_line_headers_and_terminator(
    server: Server, cancer: Cancer, route: str
) -> None:
    # red-team round 21: dripped headers held a 2 s call 19.6 s; a dripped chunk terminator held
    # it 19.5 s and then answered 200 with probabilities
    t = make(server.url(route), max_retries=0, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(TargetError, match="timed out"):
        t.predict_proba(cancer.x_test[:1])
    assert time.monotonic() - started < 2.0


def test_the_deadline_reaches_every_transport_of_the_client() -> None:
    # the deadline rides on httpx/httpcore internals (pinned); this fails if they move
    httpx = pytest.importorskip("httpx")
    from bastion.targets._deadline import install

    with httpx.Client(mounts={"http://proxied.example": httpx.HTTPTransport()}) as c:
        assert install(c) == 2


def test_labels_from_a_hardening_guard_are_named_as_such(server: Server, cancer: Cancer) -> None:
    # new-user trial: a guard that flagged the key answered labels; the client said "prediction 0
    # is not a list of numbers"
    t = make(server.url("/hardened"), max_retries=0)
    with pytest.raises(TargetError, match="answered labels only"):
        t.predict_proba(cancer.x_test[:3])


def test_connection_refused_is_a_target_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = make(f"http://127.0.0.1:{port}/predict", max_retries=1, timeout=2.0)
    with pytest.raises(TargetError, match="was unreachable"):
        t.predict_proba(np.zeros((1, 30), dtype=np.float32))
    assert t.requests == 2


def test_unauthorized_names_status_and_endpoint_but_no_secret(
    server: Server, cancer: Cancer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bastion")
    url = server.url("/auth?api_key=querysecret")
    t = make(url, headers={"Authorization": "Bearer wrong-token-xyz"}, max_retries=2)
    with pytest.raises(TargetError) as info:
        t.predict_proba(cancer.x_test[:3])
    msg = str(info.value)
    assert "401" in msg and server.url("/auth") in msg
    assert server.count("/auth") == 1  # 4xx is not retried
    text = msg + caplog.text + repr(t) + str(t.describe())
    for secret in ("wrong-token-xyz", "querysecret", f"{cancer.x_test[0, 0]:.6f}"[:8]):
        assert secret not in text


def test_token_is_sent(server: Server, cancer: Cancer) -> None:
    t = make(server.url("/auth"), headers={"Authorization": f"Bearer {TOKEN}"})
    assert t.predict_proba(cancer.x_test[:2]).shape == (2, 2)
    assert server.hits[-1]["auth"] == f"Bearer {TOKEN}"


def test_bad_request_body_is_not_echoed(server: Server, cancer: Cancer) -> None:
    t = make(server.url("/bad-request"))
    with pytest.raises(TargetError, match="HTTP 400") as info:
        t.predict_proba(cancer.x_test[:1])
    assert repr(float(cancer.x_test[0, 0]))[:6] not in str(info.value)


@pytest.mark.parametrize(
    ("route", "match"),
    [
        ("/garbage", "did not answer JSON"),
        ("/short", "returned 2 predictions for 3 inputs"),
        ("/strings", "not a list of numbers"),
        ("/logits", "looks like logits passed as probabilities"),
    ],
)
def test_malformed_answers(server: Server, cancer: Cancer, route: str, match: str) -> None:
    t = make(server.url(route))
    with pytest.raises(TargetError, match=match):
        t.predict_proba(cancer.x_test[:3])
    assert server.count(route) == 1
    with pytest.raises(TargetError, match=match):  # nothing was cached from the bad answer
        t.predict_proba(cancer.x_test[:3])
    assert server.count(route) == 2


@pytest.mark.parametrize("route", ["/predict", "/no-length"])
def test_an_answer_over_max_response_bytes_is_abandoned_not_retried(
    server: Server, cancer: Cancer, route: str
) -> None:
    # "/predict" declares its size (refused from Content-Length); "/no-length" streams until it
    # closes (refused once what arrived passes the cap)
    x = cancer.x_test[:3]
    assert len(make(server.url(route)).predict_proba(x)) == 3  # under the default cap: fine
    server.reset()
    t = make(server.url(route), max_response_bytes=40, max_retries=3)
    with pytest.raises(TargetError, match=r"answered more than 40 bytes \(max_response_bytes\)"):
        t.predict_proba(x)
    assert server.count(route) == 1  # an oversized answer is not retried
    with pytest.raises(ConfigError, match="max_response_bytes: must be at least 1"):
        make(server.url(route), max_response_bytes=0)


def test_logits_endpoint(server: Server, logreg: LogisticRegression, cancer: Cancer) -> None:
    t = make(server.url("/logits"), output="logits")
    assert {Capability.LOGITS, Capability.PROBABILITIES} <= t.capabilities
    np.testing.assert_allclose(
        t.predict_proba(cancer.x_test), logreg.predict_proba(f64(cancer.x_test)), atol=1e-9
    )
    z = t.predict_logits(cancer.x_test[:5])
    np.testing.assert_allclose(z[:, 1] - z[:, 0], logreg.decision_function(f64(cancer.x_test[:5])), atol=1e-9)
    assert sum(server.rows("/logits")) == len(cancer.x_test)  # logits of seen rows came from the cache


def test_label_endpoint(server: Server, logreg: LogisticRegression, cancer: Cancer) -> None:
    t = make(server.url("/labels"), output="labels")
    assert t.capabilities == {Capability.LABEL_ONLY, Capability.BATCHED, Capability.QUERY_LIMITED}
    np.testing.assert_array_equal(t.predict_label(cancer.x_test), logreg.predict(f64(cancer.x_test)))
    with pytest.raises(TargetError, match="probabilities"):
        t.predict_proba(cancer.x_test[:2])


def test_scalar_positive_class_probability(
    server: Server, logreg: LogisticRegression, cancer: Cancer
) -> None:
    t = make(server.url("/positive"))
    np.testing.assert_allclose(
        t.predict_proba(cancer.x_test), logreg.predict_proba(f64(cancer.x_test)), atol=1e-9
    )


def test_custom_keys(server: Server, logreg: LogisticRegression, cancer: Cancer) -> None:
    t = make(server.url("/custom"), request_key="inputs", response_key="outputs")
    np.testing.assert_allclose(
        t.predict_proba(cancer.x_test[:4]), logreg.predict_proba(f64(cancer.x_test[:4]))
    )
    wrong = make(server.url("/custom"), request_key="inputs", response_key="predictions")
    with pytest.raises(TargetError, match="no 'predictions' key"):
        wrong.predict_proba(cancer.x_test[:4])


def test_shape_is_checked_before_sending(server: Server, cancer: Cancer) -> None:
    t = make(server.url("/predict"))
    with pytest.raises(TargetError, match="shape"):
        t.predict_proba(cancer.x_test[:3, :10])
    assert server.count("/predict") == 0


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError) as info:
        HttpTarget("ftp://x", name="r", input_shape=(3,), num_classes=2, max_batch=0, timeout=0)
    text = str(info.value)
    assert "url" in text and "max_batch" in text and "timeout" in text


def test_missing_httpx_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(MissingExtraError, match=r"bastion-ml\[guard\]"):
        make("http://127.0.0.1:1/predict")


def test_redact_url() -> None:
    # the one redactor (bastion.core.redact), re-exported here: credentials masked, the rest kept
    assert redact_url("https://user:pw@api.example.org:8443/v1/predict?key=abc&v=2#x") == (
        "https://user:***@api.example.org:8443/v1/predict?key=***&v=2"
    )
    target = make("https://svc:Hunter2Pass@127.0.0.1:1/predict?api_key=SK-LIVE-1")
    assert target.endpoint == "https://svc:***@127.0.0.1:1/predict?api_key=***"
    assert "Hunter2Pass" not in repr(target) and "SK-LIVE-1" not in str(target.describe())


# -- wire templates, concurrency, rate limit, Retry-After (issue 5) ------------------------------
import json  # noqa: E402
import threading  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from typing import Any  # noqa: E402


class WireServer:
    """A local server speaking the ``rows`` and ``kserve-v2`` templates, with a 429 route."""

    def __init__(self, model: LogisticRegression) -> None:
        self.model = model
        self.lock = threading.Lock()
        self.times: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.throttle_left = 0
        self.retry_after = "0.2"
        self.delay = 0.0
        self.good_left = 0  # /breaks: answers this many requests, then malformed JSON

    def url(self, route: str) -> str:
        return f"http://127.0.0.1:{self.port}{route}"


@pytest.fixture(scope="module")
def wire_server(logreg: LogisticRegression) -> Iterator[WireServer]:
    state = WireServer(logreg)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            route = self.path
            with state.lock:
                state.times.append(time.monotonic())
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
                throttled = route == "/limited" and state.throttle_left > 0
                if throttled:
                    state.throttle_left -= 1
            try:
                if state.delay:
                    time.sleep(state.delay)
                if throttled:
                    return self._send(429, {"error": "slow down"}, {"Retry-After": state.retry_after})
                if route == "/breaks":
                    with state.lock:
                        ok = state.good_left > 0
                        state.good_left -= 1
                    if not ok:
                        return self._send(200, {"unexpected": "shape"})
                if route == "/kserve-bad":
                    return self._send(200, {"result": 1})
                if route == "/kserve":
                    (inp,) = body["inputs"]
                    x = np.asarray(inp["data"], dtype=np.float64).reshape(inp["shape"])
                    p = state.model.predict_proba(x)
                    out = {
                        "name": "probs",
                        "shape": list(p.shape),
                        "datatype": "FP64",
                        "data": p.ravel().tolist(),
                    }
                    return self._send(200, {"model_name": "m", "outputs": [out]})
                x = np.asarray(body, dtype=np.float64)
                return self._send(200, state.model.predict_proba(x).tolist())
            finally:
                with state.lock:
                    state.in_flight -= 1

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = httpd.server_address[1]  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def test_rows_wire(wire_server: WireServer, logreg: LogisticRegression, cancer: Cancer) -> None:
    t = make(wire_server.url("/rows"), wire="rows")
    np.testing.assert_allclose(
        t.predict_proba(cancer.x_test[:7]), logreg.predict_proba(f64(cancer.x_test[:7])), atol=1e-9
    )
    assert t.describe()["wire"] == "rows"


def test_kserve_v2_wire(wire_server: WireServer, logreg: LogisticRegression, cancer: Cancer) -> None:
    t = make(wire_server.url("/kserve"), wire="kserve-v2", max_batch=4)
    np.testing.assert_allclose(
        t.predict_proba(cancer.x_test[:10]), logreg.predict_proba(f64(cancer.x_test[:10])), atol=1e-9
    )
    assert t.requests == 3


def test_kserve_v2_malformed(wire_server: WireServer, cancer: Cancer) -> None:
    t = make(wire_server.url("/kserve-bad"), wire="kserve-v2")
    with pytest.raises(TargetError, match="outputs"):
        t.predict_proba(cancer.x_test[:2])


def test_concurrent_requests(wire_server: WireServer, logreg: LogisticRegression, cancer: Cancer) -> None:
    wire_server.delay, wire_server.max_in_flight = 0.05, 0
    try:
        t = make(wire_server.url("/rows"), wire="rows", max_batch=10, concurrency=4)
        p = t.predict_proba(cancer.x_test[:80])
    finally:
        wire_server.delay = 0.0
    np.testing.assert_allclose(p, logreg.predict_proba(f64(cancer.x_test[:80])), atol=1e-9)
    assert t.requests == 8 and t.queries == 80
    assert 2 <= wire_server.max_in_flight <= 5  # 4 in flight (+1: the last answer of a previous test)


def test_rate_limit_spaces_requests(wire_server: WireServer, cancer: Cancer) -> None:
    wire_server.times.clear()
    t = make(wire_server.url("/rows"), wire="rows", max_batch=5, concurrency=4, rate_limit=20.0)
    t.predict_proba(cancer.x_test[:30])
    times = sorted(wire_server.times)
    assert len(times) == 6
    assert times[-1] - times[0] >= 5 / 20.0 - 0.05  # five gaps of 1/20 s (arrival jitter allowed)


def test_429_retry_after_is_honoured(wire_server: WireServer, cancer: Cancer) -> None:
    wire_server.throttle_left, wire_server.retry_after = 1, "0.3"
    t = make(wire_server.url("/limited"), wire="rows", max_retries=2)
    start = time.monotonic()
    assert t.predict_proba(cancer.x_test[:3]).shape == (3, 2)
    assert time.monotonic() - start >= 0.28 and t.requests == 2


def test_429_too_long_retry_after_fails_clearly(wire_server: WireServer, cancer: Cancer) -> None:
    wire_server.throttle_left, wire_server.retry_after = 1, "3600"
    t = make(wire_server.url("/limited"), wire="rows")
    with pytest.raises(TargetError, match="Retry-After"):
        t.predict_proba(cancer.x_test[:3])
    wire_server.throttle_left = 0


def test_new_settings_are_validated() -> None:
    with pytest.raises(ConfigError) as info:
        make("http://127.0.0.1:1/x", wire="grpc", concurrency=0, rate_limit=0.0)  # type: ignore[arg-type]
    text = str(info.value.problems)
    assert "wire" in text and "concurrency" in text and "rate_limit" in text


# -- bad endpoints: timeouts, persistent rate limits, failure mid-attack (issue 5) ---------------
def test_timeout_is_a_clear_target_error(wire_server: WireServer, cancer: Cancer) -> None:
    wire_server.delay = 0.5
    try:
        t = make(wire_server.url("/rows"), wire="rows", timeout=0.1, max_retries=1)
        with pytest.raises(TargetError, match=r"timed out .*timeout 0.1 s.* after 2 attempt"):
            t.predict_proba(cancer.x_test[:3])
    finally:
        wire_server.delay = 0.0
    assert t.requests == 2


def test_persistent_rate_limit_gives_up_clearly(wire_server: WireServer, cancer: Cancer) -> None:
    wire_server.throttle_left, wire_server.retry_after = 10, "0.01"
    try:
        t = make(wire_server.url("/limited"), wire="rows", max_retries=2)
        with pytest.raises(TargetError, match=r"HTTP 429 after 3 attempt"):
            t.predict_proba(cancer.x_test[:3])
    finally:
        wire_server.throttle_left = 0


def test_endpoint_failing_mid_attack_is_an_error_not_a_robust_accuracy(
    wire_server: WireServer, cancer: Cancer
) -> None:
    from pathlib import Path

    from bastion.assess.evasion.square import SquareAttack
    from bastion.core.check import CheckContext, Split
    from bastion.core.config import Asset, InputSpec, ProjectConfig

    lo, hi = float(cancer.x_train.min()), float(cancer.x_train.max())
    asset = Asset(
        name="remote",
        kind="endpoint",
        url=wire_server.url("/breaks"),
        task="classification",
        input=InputSpec(shape=[30], range=(lo, hi)),
    )
    t = make(wire_server.url("/breaks"), wire="rows", max_batch=64)
    ctx = CheckContext(
        asset=asset,
        config=ProjectConfig(version=1),
        base_dir=Path("."),
        budget=Budget(samples=20, queries=10_000),
        params=SquareAttack.parse_params({"eps": [0.05], "n_queries": 50}),
        thresholds=[],
        seed=0,
        target=t,
        data={"test": Split(x=cancer.x_test, y=cancer.y_test, index=None)},
    )
    wire_server.good_left = 4  # the clean pass and a few Square iterations, then garbage
    try:
        with pytest.raises(TargetError) as info:
            SquareAttack().run(ctx)
    finally:
        wire_server.good_left = 0
    assert str(info.value).startswith("remote: endpoint") and "expected a list" in str(info.value)
    assert t.requests > 4  # it failed mid-attack, after the clean pass


def test_many_threads_share_one_target_cache_and_budget(server: Server, cancer: Cancer) -> None:
    """The guard's proxy mode calls one target from many request threads at once."""
    import threading

    t = make(server.url("/predict"), cache_size=8)
    rows = cancer.x_test[:40]
    expected = t.predict_proba(rows)  # one call, no concurrency: the reference answers
    t.clear_cache()
    errors: list[BaseException] = []
    answers: dict[int, tuple[int, np.ndarray]] = {}
    barrier = threading.Barrier(8)

    def client(i: int) -> None:
        barrier.wait()
        try:
            for j in range(25):  # a small cache under heavy churn: hits, misses and evictions race
                k = (i * 7 + j) % 40
                answers[i * 100 + j] = (k, t.predict_proba(rows[k : k + 1]))
        except BaseException as exc:  # any failure fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert errors == []
    assert len(answers) == 200
    for k, p in answers.values():
        np.testing.assert_allclose(p[0], expected[k], rtol=1e-6)
    assert t.queries + t.cache_hits == 40 + 200  # every row either charged or served from the cache
