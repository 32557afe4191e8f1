"""What a project file may ask for (red-team rounds 31, 33): scan.allow, endpoint credentials, cleartext."""

from __future__ import annotations

import tomllib

import pytest
from pydantic import ValidationError

from bastion.core.config import Asset, parse_config
from bastion.core.errors import ConfigError
from bastion.core.project_trust import (
    PROTECTED_ALLOW_ROOTS,
    approved_env_names,
    cleartext_credentials_problem,
    credential_env_problem,
    is_loopback_url,
    project_allow_problem,
    project_env_problem,
)
from bastion.guard.config import parse_guard_config

# the callables red-team round 31 made `safe` through a repository's scan.allow
ROUND31_GADGETS = [
    "torch.ops.load_library",
    "torch.classes.load_library",
    "torch._C._dlopen",
    "torch.save",
    "torch.serialization.save",
    "logging.FileHandler",
    "logging.handlers.RotatingFileHandler",
    "sqlite3.connect",
    "numpy.memmap",
]


@pytest.mark.parametrize(
    "entry",
    [
        *ROUND31_GADGETS,
        "torch.*",
        "os.*",
        "builtins.getattr",
        "__builtin__.open",
        "copy_reg._reconstructor",
        "__main__.Payload",
        "bastion.api.assess",
        "sklearn.utils.Bunch",
        "joblib.*",
        "pandas.read_pickle",
        "yaml.load",
        "requests.get",
        "dill.loads",
    ],
)
def test_a_project_file_may_not_allow_the_standard_library_bastion_or_libraries(entry: str) -> None:
    assert project_allow_problem(entry) is not None
    with pytest.raises(ConfigError) as info:
        parse_config(
            {"version": 1, "scan": {"allow": ["clinic.models.*", entry]}}, source="repo/bastion.yaml"
        )
    msg = str(info.value)
    # the file, the entry's position and the entry itself are named
    assert "repo/bastion.yaml" in msg and "scan.allow[1]" in msg and repr(entry) in msg
    assert "your own code" in msg and "--allow" in msg


@pytest.mark.parametrize("entry", ["clinic.models.DiagnosisMLP", "clinic.models.*", "myproject.layers.Block"])
def test_a_project_file_may_allow_the_users_own_code(entry: str) -> None:
    assert project_allow_problem(entry) is None
    assert parse_config({"version": 1, "scan": {"allow": [entry]}}).scan.allow == [entry]


def test_every_package_the_shipped_pickle_rules_name_is_protected() -> None:
    # one list, kept in step with the rules: a package Bastion has rules for is never "your own code"
    from bastion.scan.policy import COMPILED_RULES, shipped_rules_text

    roots = set()
    for name in COMPILED_RULES:
        for rule in tomllib.loads(shipped_rules_text(name))["rule"]:
            mods = rule["module"] if isinstance(rule["module"], list) else [rule["module"]]
            roots |= {m.split(".")[0] for m in mods if m != "*"}
    assert roots - PROTECTED_ALLOW_ROOTS == set()


@pytest.mark.parametrize(
    "env",
    [
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AZURE_CLIENT_SECRET",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GCP_SA_KEY",
        "GITHUB_TOKEN",
        "GH_TOKEN",
        "ACTIONS_RUNTIME_TOKEN",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
        "CI_JOB_TOKEN",
        "GITLAB_TOKEN",
        "NPM_TOKEN",
        "PYPI_API_TOKEN",
        "TWINE_PASSWORD",
        "DOCKER_AUTH_CONFIG",
        "KUBECONFIG",
        "SSH_AUTH_SOCK",
        "HF_TOKEN",
        "BASTION_DB",
    ],
)
def test_endpoint_credentials_may_not_name_well_known_cloud_and_ci_secrets(env: str) -> None:
    assert credential_env_problem(env) is not None
    base = {"name": "e", "kind": "endpoint", "url": "https://models.example.org/p"}
    for endpoint in ({"token_env": env}, {"headers_env": {"X-Key": env}}):
        with pytest.raises(
            ValidationError, match=f"{env} is a well-known .*export the value under another name"
        ):
            Asset(**base, endpoint=endpoint)
    with pytest.raises(ConfigError, match=r"assets\[0\]\.endpoint\.token_env: " + env):
        parse_config({"version": 1, "assets": [{**base, "endpoint": {"token_env": env}}]})


@pytest.fixture(autouse=True)
def _no_approvals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BASTION_ALLOW_ENV", raising=False)


@pytest.mark.parametrize("env", ["BASTION_TEST_TOKEN", "BASTION_X", "BASTION_TRIAGE_TOKEN"])
def test_endpoint_credentials_under_bastion_names_stand(env: str) -> None:
    assert credential_env_problem(env) is None and project_env_problem(env) is None
    for endpoint in ({"token_env": env}, {"headers_env": {"X-Key": env}}):
        a = Asset(name="e", kind="endpoint", url="https://models.example.org/p", endpoint=endpoint)
        assert a.endpoint is not None and a.endpoint.env_names() == [env]


# red-team round 33, finding 02: secrets no deny-list named went to any https host
ROUND33_SECRETS = ["MYSQL_PASSWORD", "SLACK_BOT_TOKEN", "GEMINI_API_KEY", "KAGGLE_KEY", "POSTGRES_PASSWORD"]


@pytest.mark.parametrize("env", [*ROUND33_SECRETS, "API_TOKEN", "MYMODEL_API_TOKEN", "X_KEY"])
def test_endpoint_credentials_under_other_names_are_refused(env: str) -> None:
    assert credential_env_problem(env) is None  # on no deny-list: the allow-list refuses it
    problem = project_env_problem(env)
    assert problem is not None and f"BASTION_{env}" in problem and f"BASTION_ALLOW_ENV={env}" in problem
    base = {"name": "vendor-api", "kind": "endpoint", "url": "https://ml-api.evil.example/p"}
    for endpoint in ({"token_env": env}, {"headers_env": {"X-Key": env}}):
        with pytest.raises(ConfigError) as info:
            parse_config(
                {"version": 1, "assets": [{**base, "endpoint": endpoint}]}, source="repo/bastion.yaml"
            )
        msg = str(info.value)
        assert "repo/bastion.yaml" in msg and "'vendor-api'" in msg and env in msg
        assert f"BASTION_{env}" in msg and f"BASTION_ALLOW_ENV={env}" in msg
        assert info.value.exit_code == 2


def test_the_user_approves_other_names_in_bastion_allow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert approved_env_names({"BASTION_ALLOW_ENV": " TRIAGE_API_TOKEN, ,X_TENANT "}) == {
        "TRIAGE_API_TOKEN",
        "X_TENANT",
    }
    assert project_env_problem("TRIAGE_API_TOKEN", {"BASTION_ALLOW_ENV": "TRIAGE_API_TOKEN"}) is None
    assert project_env_problem("TRIAGE_API_TOKEN", {"BASTION_ALLOW_ENV": "TRIAGE_API"}) is not None
    monkeypatch.setenv("BASTION_ALLOW_ENV", "TRIAGE_API_TOKEN,X_TENANT")
    a = Asset(
        name="e",
        kind="endpoint",
        url="https://models.example.org/p",
        endpoint={"token_env": "TRIAGE_API_TOKEN", "headers_env": {"X-Tenant": "X_TENANT"}},
    )
    assert a.endpoint is not None and a.endpoint.env_names() == ["TRIAGE_API_TOKEN", "X_TENANT"]
    # an approval covers the names it lists, no other
    with pytest.raises(ConfigError, match="MYSQL_PASSWORD may not be read by a project file"):
        asset = {"name": "e", "kind": "endpoint", "url": "https://m.example/p"}
        parse_config({"version": 1, "assets": [{**asset, "endpoint": {"token_env": "MYSQL_PASSWORD"}}]})


@pytest.mark.parametrize("env", ["AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "BASTION_DB"])
def test_an_approval_does_not_override_the_deny_list(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_ALLOW_ENV", env)
    assert project_env_problem(env) is not None and "well-known" in (project_env_problem(env) or "")
    base = {"name": "e", "kind": "endpoint", "url": "https://models.example.org/p"}
    with pytest.raises(ConfigError, match=f"{env} is a well-known"):
        parse_config({"version": 1, "assets": [{**base, "endpoint": {"token_env": env}}]})


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8000/p", True),
        ("http://127.8.9.10/p", True),
        ("http://localhost:9000/predict", True),
        ("http://[::1]:8000/p", True),
        ("http://[::ffff:127.0.0.1]/p", True),
        ("http://LOCALHOST/p", True),
        ("http://attacker.example/p", False),
        ("http://127.0.0.1.nip.io/p", False),
        ("http://127.0.0.1@attacker.example/p", False),
        ("http://localhost.attacker.example/p", False),
        ("http://10.0.0.5/p", False),
        ("http://0.0.0.0/p", False),
        ("http://[::1/p", False),
    ],
)
def test_loopback_hosts(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback
    assert (cleartext_credentials_problem(url) is None) is loopback
    assert cleartext_credentials_problem(url.replace("http://", "https://", 1)) is None


def test_environment_credentials_go_over_https_or_to_this_machine_only() -> None:
    base = {"name": "remote-rf", "kind": "endpoint", "url": "http://attacker.example/p"}
    for endpoint in ({"token_env": "BASTION_RF_TOKEN"}, {"headers_env": {"X-Key": "BASTION_RF_KEY"}}):
        with pytest.raises(ConfigError) as info:
            parse_config(
                {"version": 1, "assets": [{**base, "endpoint": endpoint}]}, source="repo/bastion.yaml"
            )
        msg = str(info.value)
        assert "repo/bastion.yaml" in msg and "'remote-rf'" in msg and "only over https://" in msg
    # without credentials plain http stays allowed; https and loopback http carry them
    parse_config({"version": 1, "assets": [base]})
    for url in ("https://models.example.org/p", "http://127.0.0.1:9/p", "http://localhost/p"):
        parse_config(
            {"version": 1, "assets": [{**base, "url": url, "endpoint": {"token_env": "BASTION_RF_TOKEN"}}]}
        )
    # a model asset served over http is held to the same rule
    with pytest.raises(ConfigError, match="only over https://"):
        parse_config(
            {
                "version": 1,
                "assets": [
                    {
                        "name": "m",
                        "path": "m.onnx",
                        "framework": "http",
                        "url": "http://attacker.example/p",
                        "endpoint": {"token_env": "BASTION_RF_TOKEN"},
                    }
                ],
            }
        )


def test_the_guard_upstream_token_goes_over_https_or_to_this_machine_only() -> None:
    up = {"url": "http://models.internal:9000/predict", "input_shape": [4], "num_classes": 2}
    parse_guard_config({"version": 1, "upstream": up})  # no token: plain http stands
    for extra in (
        {"token_env": "UPSTREAM_TOKEN"},
        {
            "token_env": "UPSTREAM_TOKEN",
            "url": "https://models.internal/p",
            "ready_url": "http://models.internal/h",
        },
    ):
        with pytest.raises(ConfigError, match="token_env UPSTREAM_TOKEN: credentials from the environment"):
            parse_guard_config({"version": 1, "upstream": {**up, **extra}})
    for url in ("https://models.internal/p", "http://127.0.0.1:9000/p"):
        parse_guard_config({"version": 1, "upstream": {**up, "url": url, "token_env": "UPSTREAM_TOKEN"}})
