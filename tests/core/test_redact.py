"""``bastion.core.redact``: credentials in URLs are masked before any URL is shown or recorded."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.core.config import load_config
from bastion.core.findings import Finding, Location, Threat
from bastion.core.redact import is_secret_name, redact_text, redact_url, url_secrets
from bastion.core.report import AssetRecord
from bastion.core.severity import Severity

SECRETS = ("Hunter2Pass", "SK-LIVE-123456")


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        # red-team round 22 F3: userinfo password and api_key
        (
            "https://svc:Hunter2Pass@127.0.0.1:9/predict?api_key=SK-LIVE-123456",
            "https://svc:***@127.0.0.1:9/predict?api_key=***",
        ),
        ("https://ghp_tokenvalue@api.example.org/p", "https://***@api.example.org/p"),
        ("http://h/p?model=a&token=xyz&x=1", "http://h/p?model=a&token=***&x=1"),
        (
            "http://h/p?access_token=a&client_secret=b&sig=c",
            "http://h/p?access_token=***&client_secret=***&sig=***",
        ),
        (
            "https://h/p?X-Amz-Signature=a&X-Amz-Date=1&apiKey=z",
            "https://h/p?X-Amz-Signature=***&X-Amz-Date=1&apiKey=***",
        ),
        ("https://h/p?key=abc#access_token=frag", "https://h/p?key=***"),  # the fragment is dropped
        # red-team round 22 F7: libpq's password parameters
        (
            "postgresql://alice@h/db?password=S3cret&sslmode=require",
            "postgresql://alice@h/db?password=***&sslmode=require",
        ),
        (
            "postgresql://alice:pw@h/db?sslpassword=k&passfile=/x/pgpass",
            "postgresql://alice:***@h/db?sslpassword=***&passfile=***",
        ),
        ("http://[::1/x?api_key=abc", "http://[::1/x?api_key=***"),  # does not parse: masked by pattern
        ("weird scheme://me:hunter2@host", "weird scheme://me:***@host"),  # no scheme urlsplit takes
    ],
)
def test_redact_url_masks_every_credential(url: str, masked: str) -> None:
    assert redact_url(url) == masked
    assert redact_url(masked) == masked  # idempotent


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/predict",
        "https://Models.Example.org:8443/v1/p?model=a&v=2",
        "sqlite:////tmp/a.db",
        "postgresql://alice@h/db",
    ],
)
def test_a_url_without_credentials_is_unchanged(url: str) -> None:
    # character for character: a finding's fingerprint includes its endpoint
    assert redact_url(url) == url
    assert url_secrets(url) == []


def test_none_stays_none() -> None:
    assert redact_url(None) is None


@given(st.text(max_size=40))
def test_redact_url_is_idempotent_and_never_raises(text: str) -> None:
    once = redact_url(text)
    assert redact_url(once) == once


@pytest.mark.parametrize(
    "name",
    [
        "api_key",
        "apiKey",
        "X-Api-Key",
        "key",
        "token",
        "access_token",
        "password",
        "sslpassword",
        "passfile",
        "secret",
        "client_secret",
        "signature",
        "sig",
        "X-Amz-Signature",
        "Subscription-Key",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["model", "v", "version", "sslmode", "sslkey", "format", "se", "q"])
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)


def test_url_secrets_names_where_without_the_value() -> None:
    found = url_secrets("https://svc:Hunter2Pass@h/p?api_key=SK-LIVE-123456&v=2")
    assert found == [
        ("password in the userinfo", "Hunter2Pass"),
        ("query parameter 'api_key'", "SK-LIVE-123456"),
    ]
    assert not any(s in where for where, _ in found for s in SECRETS)


def test_redact_text_masks_urls_inside_a_message() -> None:
    text = 'cannot reach https://svc:Hunter2Pass@h/p?api_key=SK-LIVE-123456: refused (see "#3")'
    assert redact_text(text) == 'cannot reach https://svc:***@h/p?api_key=***: refused (see "#3")'


def test_findings_and_asset_records_never_carry_url_credentials() -> None:
    url = "https://svc:Hunter2Pass@h/p?api_key=SK-LIVE-123456"
    f = Finding(
        rule_id="x.y.z",
        severity=Severity.LOW,
        threat=Threat.RUNTIME,
        title="t",
        location=Location(endpoint=url),
    )
    rec = AssetRecord(name="api", kind="endpoint", url=url)
    for text in (f.model_dump_json(), rec.model_dump_json()):
        assert not any(s in text for s in SECRETS)
    assert f.location.endpoint == rec.url == "https://svc:***@h/p?api_key=***"


def test_config_warns_that_url_credentials_belong_in_token_env(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(
        textwrap.dedent(
            """\
            version: 1
            assets:
              - name: api
                kind: endpoint
                url: "https://svc:Hunter2Pass@h/p?api_key=SK-LIVE-123456"
                num_classes: 2
                input: {shape: [2]}
            """
        )
    )
    with caplog.at_level(logging.WARNING, logger="bastion.core.config"):
        load_config(cfg)
        load_config(cfg)  # a run reads its config more than once: one warning
    (record,) = [r for r in caplog.records if "credentials" in r.getMessage()]
    msg = record.getMessage()
    assert "assets[0].url" in msg and "password in the userinfo" in msg and "'api_key'" in msg
    assert "token_env" in msg and not any(s in msg for s in SECRETS)


def test_a_bad_endpoint_url_is_reported_without_its_credentials(tmp_path: Path) -> None:
    from bastion.core.errors import ConfigError

    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(
        'version: 1\nassets: [{name: api, kind: endpoint, url: "ftp://svc:Hunter2Pass@h/p?token=SK-LIVE-123456"}]\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    text = str(info.value) + " ".join(info.value.problems)
    assert "ftp://svc:***@h/p?token=***" in text and not any(s in text for s in SECRETS)
