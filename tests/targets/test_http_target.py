"""HttpTarget against a real local server: wire format, batching, cache, budget, retries, validation."""

from __future__ import annotations

import logging
import socket
import sys

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
    assert redact_url("https://user:pw@api.example.org:8443/v1/predict?key=abc#x") == (
        "https://api.example.org:8443/v1/predict"
    )
