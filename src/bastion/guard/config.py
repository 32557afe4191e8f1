"""``guard.yaml``: what the guard serves, who may call it, and how it defends the model.

Read only from an explicit path (``bastion guard serve -c guard.yaml``). Secrets never appear
here: an API key is stored as ``salt`` + ``hash`` (HMAC-SHA-256 of the key under the salt,
see :func:`bastion.guard.access.hash_key`); a webhook or upstream token by environment
variable name.

Example::

    version: 1
    model: {config: bastion.yaml, asset: digits}     # or: upstream: {url: http://127.0.0.1:9000/predict, ...}
    profile: {path: guard-profile, sha256: <hex of profile.json>, public_key: signer.pub}
    keys:
      - {id: alice, salt: 9f.., hash: 3c.., models: [digits]}
    limits: {rate: 20, burst: 40, daily_quota: 10000}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from bastion.core.errors import ConfigError
from bastion.core.files import read_config_text
from bastion.core.project_trust import cleartext_credentials_problem

_HEX64 = r"^[0-9a-f]{64}$"
_ENV = r"^[A-Z_][A-Z0-9_]*$"


class _Strict(BaseModel):
    # a NaN or infinite bound is never meant: ``value: .nan`` turned a gate off (every comparison
    # with NaN is false), ``rate: 1e309`` a rate limit
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelSource(_Strict):
    """An in-process model: an asset of a ``bastion.yaml`` (scanned, hash-checked, then loaded)."""

    config: str
    asset: str


class UpstreamSource(_Strict):
    """A model server the guard proxies to (JSON in, JSON out): the guard as a reverse proxy.

    Clients call the guard with ``{request_key: rows}`` and get ``{response_key: predictions}``;
    the guard calls the upstream with the request/response template ``wire``:

    - ``default``: ``{request_key: rows}`` → ``{response_key: predictions}`` (MLflow serve,
      TF-Serving, KServe v1, BentoML JSON);
    - ``rows``: the bare JSON list of rows → a bare list of predictions;
    - ``kserve-v2``: the Open Inference Protocol (KServe v2, Triton, Seldon MLServer):
      ``{"inputs": [{"name": input_name, "shape", "datatype": "FP32", "data"}]}`` →
      ``{"outputs": [{"shape", "data"}]}``.

    Attributes:
        output: what the upstream returns per row (``logits`` are turned into probabilities).
        token_env: environment variable holding a bearer token for the upstream (never stored).
        max_response_bytes: the most bytes of one upstream answer read; a longer answer is a
            backend failure (fallback answer, counted by the backend breaker), read no further.
        max_connections: upstream requests in flight at once (one connection each, kept
            alive); requests beyond wait for a free connection within ``timeout``.
        ready_url: a health endpoint of the upstream (e.g. KServe ``/v2/health/ready``); when set,
            ``/readyz`` GETs it (at most once per ``ready_interval`` seconds) and reports not
            ready unless it answers 2xx.
    """

    url: str = Field(pattern=r"^https?://")
    name: str = "upstream"
    input_shape: list[int] = Field(min_length=1)
    num_classes: int = Field(ge=2)
    request_key: str = "instances"
    response_key: str = "predictions"
    wire: Literal["default", "rows", "kserve-v2"] = "default"
    input_name: str = "input-0"
    output: Literal["probabilities", "logits", "labels"] = "probabilities"
    timeout: float = Field(default=5.0, gt=0)
    token_env: str | None = Field(default=None, pattern=_ENV)
    max_response_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_connections: int = Field(default=32, ge=1, le=1024)
    ready_url: str | None = Field(default=None, pattern=r"^https?://")
    ready_interval: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _token_over_tls(self) -> UpstreamSource:
        # the token goes with every request and every readiness probe: over https, or to this
        # machine only (red-team round 31; the same rule as bastion.yaml's endpoints)
        if self.token_env:
            for field, url in (("url", self.url), ("ready_url", self.ready_url)):
                problem = cleartext_credentials_problem(url) if url else None
                if problem:
                    raise ValueError(f"{field}: the upstream's token_env {self.token_env}: {problem}")
        return self


class ProfileRef(_Strict):
    """The fitted guard artefact (``bastion guard fit``), the SHA-256 it must have, and its signer.

    Attributes:
        path: the artefact folder.
        sha256: pinned SHA-256 of its ``profile.json`` (checked when given).
        public_key: PEM elliptic-curve public key; when given, the artefact must carry a valid
            OpenSSF model-signing signature (``bastion guard fit --sign-key`` or ``bastion sign``).
        signature: the signature bundle (default ``<path>.sig`` beside the folder). A bundle that
            is present while no ``public_key`` is named refuses to start (it cannot be verified).
    """

    path: str
    sha256: str | None = Field(default=None, pattern=_HEX64)
    public_key: str | None = None
    signature: str | None = None


class KeySpec(_Strict):
    """One API key, hashed at rest.

    Attributes:
        id: the key's public id (appears in logs, metrics and the audit log).
        salt: hex salt, unique per key.
        hash: hex HMAC-SHA-256 of the key under ``salt``.
        models: model names this key may call (``*``: all).
        daily_quota: overrides ``limits.daily_quota`` for this key.
        rate: overrides ``limits.rate`` for this key.
        extraction_exempt: the extraction detectors do not judge this key: for a trusted client
            whose normal traffic looks like a natural-data thief's (a batch evaluator querying
            every class at machine rate). Access, limits, validation, canaries, honeytokens,
            anomaly detection and the audit log still apply to it.
        expires: when the key stops working (ISO 8601 with a timezone, e.g.
            ``2027-03-01T00:00:00Z``); from then on it is refused with 401 "API key expired"
            (the audit log names the key). ``None``: no expiry.
        lookup: the first 8 hex digits of the key's SHA-256 (``new-key`` writes it): the guard
            tries only the keys with the presented key's tag, so an unknown key is refused after
            one hash whatever the number of keys. A key without it is tried for every request
            whose key is not yet known.
    """

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    salt: str = Field(pattern=r"^[0-9a-f]{16,128}$")
    hash: str = Field(pattern=_HEX64)
    models: list[str] = Field(default_factory=lambda: ["*"])
    daily_quota: int | None = Field(default=None, ge=1)
    rate: float | None = Field(default=None, gt=0)
    extraction_exempt: bool = False
    expires: AwareDatetime | None = None
    lookup: str | None = Field(default=None, pattern=r"^[0-9a-f]{8}$")


class LimitsSpec(_Strict):
    """Per-key token bucket (``rate`` queries/s refilled, ``burst`` deep), daily budget, payload size.

    ``max_inflight`` bounds the predict requests the guard holds at once.
    """

    rate: float = Field(default=50.0, gt=0)
    burst: float = Field(default=100.0, ge=1)
    daily_quota: int = Field(default=100_000, ge=1)
    max_body_bytes: int = Field(default=1_000_000, ge=64)
    max_rows: int = Field(default=256, ge=1)
    #: predict requests held at once once their body is read (all keys, none included); more
    #: are refused at once with 503 and ``Retry-After``, so a stalled audit database or a slow
    #: model holds a bounded number of decided requests in memory (red-team round 26)
    max_inflight: int = Field(default=1024, ge=1)


class AnomalySpec(_Strict):
    """Input OOD scoring (Mahalanobis) and output drift (PSI and KS over windows)."""

    enabled: bool = True
    window: int = Field(default=500, ge=20)
    psi_alert: float = Field(default=0.25, gt=0)
    ks_alert: float = Field(default=0.2, gt=0, le=1)
    ood_rate_alert: float = Field(default=0.2, gt=0, le=1)


class ExtractionSpec(_Strict):
    """Extraction detection per key and across keys (see :mod:`bastion.guard.extraction`)."""

    enabled: bool = True
    min_queries: int = Field(default=40, ge=5)
    class_coverage: float = Field(default=0.45, gt=0, le=1)
    ood_fraction: float = Field(default=0.25, gt=0, le=1)
    boundary_fraction: float = Field(default=0.3, gt=0, le=1)
    boundary_margin: float = Field(default=0.15, gt=0, lt=1)
    probe_fraction: float = Field(default=0.5, gt=0, le=1)
    probe_radius: float = Field(default=0.5, gt=0)
    exploration_cells: int = Field(default=100, ge=20)
    cell_cap: int = Field(default=2048, ge=64)
    ring: int = Field(default=32, ge=4)
    cross_key: bool = True
    cross_window_s: float = Field(default=3600.0, gt=0)
    cross_novelty: float = Field(default=0.6, gt=0, le=1)
    cross_cells: int = Field(default=32, ge=8)
    cross_min_keys: int = Field(default=3, ge=2)


class Canary(_Strict):
    """A secret trap input, stored as the SHA-256 of its canonical float32 bytes (rounded to 4 dp)."""

    id: str
    sha256: str = Field(pattern=_HEX64)


class HoneytokenEntry(_Strict):
    """One honeytoken record: its id and keyed hash (see :func:`bastion.guard.canary.honeytoken_hmac`)."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    hmac: str = Field(pattern=_HEX64)


class HoneytokenSpec(_Strict):
    """Honeytoken records planted in the training data, kept as keyed hashes only.

    Attributes:
        salt: hex HMAC key of the set.
        step: value grid, one for every feature or one per flat feature (large-valued features
            get a coarser grid); a query within ``step / 2`` of a token in every feature matches it.
        tokens: the records' ids and hashes (``bastion guard honeytokens`` prints this block).
        pepper_env: name of an environment variable holding a secret "pepper" mixed into the
            HMAC key. The pepper itself is never stored (not here, not in the artefact), so a
            holder of the artefact and the training data cannot find the tokens by hashing rows.
            The guard refuses to start when the variable is not set.
    """

    salt: str = Field(pattern=r"^[0-9a-f]{16,128}$")
    step: float | list[float]
    tokens: list[HoneytokenEntry] = Field(default_factory=list)
    pepper_env: str | None = Field(default=None, pattern=_ENV)

    @model_validator(mode="after")
    def _positive_step(self) -> HoneytokenSpec:
        steps = self.step if isinstance(self.step, list) else [self.step]
        if not steps or not all(v > 0 and v < float("inf") for v in steps):
            raise ValueError("step: every grid step must be a positive finite number")
        return self


class DegradedSpec(_Strict):
    """Global degraded mode: entered when alerts spike or the backend breaker opens.

    ``alerts_per_minute`` counts the distinct keys that alerted in the last minute (alerts about
    no key count as one), so a few burned keys cannot degrade the service for everyone.
    """

    alerts_per_minute: int = Field(default=50, ge=1)
    duration_s: float = Field(default=60.0, gt=0)
    fallback: dict[str, Any] = Field(
        default_factory=lambda: {"predictions": None, "degraded": True, "detail": "service degraded"}
    )
    #: HTTP status of the fallback answer: 200 (a degraded answer, header ``X-Bastion-Degraded: 1``)
    #: or 503 (clients that only look at the status see a failure).
    status: Literal[200, 503] = 200


class ResponseSpec(_Strict):
    """Graded response: log → alert → harden → throttle → breaker → degraded mode.

    Attributes:
        harden_at: severity of an alert that turns on output hardening for the key.
        harden: ``noisy-label`` (labels; a secret share of the classes answered as another
            class, see :meth:`bastion.guard.response.ResponsePolicy.harden`), ``label`` (labels
            only) or ``round`` (probabilities rounded to ``round_decimals``).
        flip_fraction: ``noisy-label``: share of the classes answered wrongly (at least 2).
        throttle_after: alerts (at ``harden_at`` or above) after which the key's rate is cut.
        throttle_factor: the key's rate is multiplied by this when throttled.
        breaker_after: alerts after which the key's circuit breaker opens.
        breaker_reset_s: seconds an open breaker waits before half-open.
        backend_failures: consecutive backend failures that open the backend breaker.
        backend_reset_s: seconds before the backend breaker goes half-open.
    """

    harden_at: Literal["low", "medium", "high", "critical"] = "high"
    harden: Literal["noisy-label", "label", "round"] = "noisy-label"
    flip_fraction: float = Field(default=0.3, ge=0, le=1)
    round_decimals: int = Field(default=1, ge=0, le=6)
    throttle_after: int = Field(default=3, ge=1)
    throttle_factor: float = Field(default=0.1, gt=0, le=1)
    breaker_after: int = Field(default=6, ge=1)
    breaker_reset_s: float = Field(default=300.0, gt=0)
    backend_failures: int = Field(default=3, ge=1)
    backend_reset_s: float = Field(default=5.0, gt=0)
    degraded: DegradedSpec = Field(default_factory=DegradedSpec)


class AuditSpec(_Strict):
    """Where the audit chain lives (a store URL; ``BASTION_DB`` / default store when omitted).

    ``key_env``: an environment variable holding the chain's secret key (16 characters or more):
    records are chained with HMAC-SHA-256 under it, so a writer of the database cannot recompute
    the chain after an edit; ``bastion guard verify-log`` needs the same variable.
    """

    db: str | None = None
    chain: str = Field(default="guard", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    key_env: str | None = Field(default=None, pattern=_ENV)


def audit_key(env: str | None) -> bytes | None:
    """The audit chain's HMAC key from the environment variable ``env`` (``None``: unkeyed).

    Raises:
        ConfigError: the variable is unset or shorter than 16 characters.
    """
    if env is None:
        return None
    import os

    value = os.environ.get(env, "")
    if len(value) < 16:
        raise ConfigError(f"audit.key_env: environment variable {env} is unset or shorter than 16 characters")
    return value.encode()


class AlertsSpec(_Strict):
    """Alert webhooks: every alert at ``min_severity`` or above is POSTed as JSON to each URL."""

    webhooks: list[Annotated[str, Field(pattern=r"^https?://[^\s/]+")]] = Field(default_factory=list)
    min_severity: Literal["low", "medium", "high", "critical"] = "medium"
    timeout: float = Field(default=2.0, gt=0)


class ServerSpec(_Strict):
    """Where ``bastion guard serve`` listens (loopback by default), and how long it takes to stop.

    ``shutdown_timeout`` (seconds): on SIGTERM or Ctrl-C the guard waits at most half of it for
    the requests in flight, then at most a quarter each for the incidents and the audit records
    still waiting for the database, so a stalled database never keeps it from stopping (keep it
    below the orchestrator's grace period: Kubernetes kills after 30 s).
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    shutdown_timeout: float = Field(default=20.0, gt=0, le=3600)


class GuardConfig(_Strict):
    """The whole ``guard.yaml``."""

    version: Literal[1] = 1
    name: str = Field(default="model", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    model: ModelSource | None = None
    upstream: UpstreamSource | None = None
    profile: ProfileRef | None = None
    keys: list[KeySpec] = Field(default_factory=list)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    anomaly: AnomalySpec = Field(default_factory=AnomalySpec)
    extraction: ExtractionSpec = Field(default_factory=ExtractionSpec)
    canaries: list[Canary] = Field(default_factory=list)
    honeytokens: HoneytokenSpec | None = None
    response: ResponseSpec = Field(default_factory=ResponseSpec)
    audit: AuditSpec = Field(default_factory=AuditSpec)
    alerts: AlertsSpec = Field(default_factory=AlertsSpec)
    server: ServerSpec = Field(default_factory=ServerSpec)
    log_inputs: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> GuardConfig:
        if (self.model is None) == (self.upstream is None):
            raise ValueError("give exactly one of model (in process) or upstream (proxy)")
        ids = [k.id for k in self.keys]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"key ids repeated: {', '.join(dupes)}")
        return self


def parse_guard_config(data: Any, source: str = "guard.yaml") -> GuardConfig:
    """Validate a parsed ``guard.yaml`` document.

    Raises:
        ConfigError: every problem, with its field path.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return GuardConfig.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        ]
        raise ConfigError(f"{source}: {len(problems)} problem(s)", problems) from None


def load_guard_config(path: str | Path) -> GuardConfig:
    """Read and validate ``guard.yaml``; relative paths in it are resolved against its folder.

    Raises:
        ConfigError: missing file, not a regular file, too large (over
            :data:`~bastion.core.files.MAX_CONFIG_BYTES`), bad YAML, or invalid content.
    """
    import yaml

    p = Path(path)
    text = read_config_text(p, what="guard config", folder_hint="give the guard.yaml file inside it")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # one line naming where, as bastion.yaml's loader says it
        from bastion.core.config import yaml_syntax_error

        raise yaml_syntax_error(p, exc) from None
    cfg = parse_guard_config(data, source=str(p))
    base = p.resolve().parent
    if cfg.model is not None and not Path(cfg.model.config).is_absolute():
        cfg.model.config = str(base / cfg.model.config)
    if cfg.profile is not None:
        ref = cfg.profile
        ref.path = str(base / ref.path) if not Path(ref.path).is_absolute() else ref.path
        if ref.public_key is not None and not Path(ref.public_key).is_absolute():
            ref.public_key = str(base / ref.public_key)
        if ref.signature is not None and not Path(ref.signature).is_absolute():
            ref.signature = str(base / ref.signature)
    if cfg.audit.db is not None:
        cfg.audit.db = _sqlite_beside(cfg.audit.db, base)
    return cfg


def _sqlite_beside(url: str, base: Path) -> str:
    """``url`` with a relative SQLite file path made absolute against ``base`` (else unchanged).

    So the audit chain is the same file whatever folder the guard is started from (a service
    manager starts it in ``/``), as every other path in ``guard.yaml``.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(url)
    except (ArgumentError, ValueError):
        return url  # the store reports a malformed URL with its own message
    db = u.database
    if u.get_backend_name() != "sqlite" or not db or db == ":memory:" or db.startswith("file:"):
        return url
    if Path(db).is_absolute():
        return url
    return u.set(database=str(base / db)).render_as_string(hide_password=False)


def is_env_name(name: str) -> bool:
    """Whether ``name`` looks like an environment variable name."""
    return re.match(_ENV, name) is not None
