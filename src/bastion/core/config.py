"""The ``bastion.yaml`` project model (pydantic) and its loader.

A project names its assets (models, datasets, endpoints), the datasets with their
recorded splits, the checks to run keyed by plugin id, allow-list additions for the
scanner, waivers, and secrets by environment-variable name only. Every problem in a
file is reported at once, each with its field path (``assets[1].input.shape``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bastion.core._log import get_logger
from bastion.core.budget import Budget
from bastion.core.errors import ConfigError
from bastion.core.files import read_config_bytes, read_config_text
from bastion.core.project_trust import (
    cleartext_credentials_problem,
    credential_env_problem,
    endpoint_data_problem,
    project_allow_problem,
    project_env_problem,
)
from bastion.core.project_trust import model_class_problem as _model_class_problem
from bastion.core.redact import redact_url, url_secrets
from bastion.core.severity import Severity

log = get_logger(__name__)

CONFIG_VERSION = 1
#: The largest ``seed``: 2**32 - 1, what numpy's ``RandomState`` (scikit-learn's ``random_state``)
#: accepts; ``numpy.random.default_rng`` and ``torch.manual_seed`` take it too.
MAX_SEED = 2**32 - 1
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_ENV = r"^[A-Z_][A-Z0-9_]*$"
_CODE_REF = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"

#: ``Asset.format`` values (any case): the model loader's formats (``bastion.targets.loader``'s
#: ``_FORMATS``; a test keeps the two equal), the dataset formats, and the formats of files that
#: are scanned and governed but not loaded (every scanner's ``formats``, a test checks, and common
#: names for them). Anything else is a config error with a did-you-mean (trial 32: ``format:
#: pikle`` was accepted silently).
MODEL_FORMATS: tuple[str, ...] = (
    "torchscript", "torch", "pt", "pth", "state_dict", "onnx", "joblib", "pickle", "pkl", "sklearn",
    "skops", "http", "json",
)  # fmt: skip
DATASET_FORMATS: tuple[str, ...] = ("csv", "npz")
SCANNED_FORMATS: tuple[str, ...] = (
    "npy", "numpy", "pytorch-zip", "pytorch-legacy", "pytorch-export", "safetensors", "gguf", "hdf5",
    "h5", "keras", "keras-config", "keras-metadata", "savedmodel", "savedmodel-fingerprint",
    "tf-graphdef", "pb", "tflite", "7z", "tar", "zip", "gzip", "bz2", "xz", "zlib", "lzma",
    "joblib-zfile", "lz4",
)  # fmt: skip
KNOWN_FORMATS: tuple[str, ...] = (*MODEL_FORMATS, *DATASET_FORMATS, *SCANNED_FORMATS)


class _Strict(BaseModel):
    # a NaN or infinite bound is never meant: ``value: .nan`` turned a gate off (every comparison
    # with NaN is false), ``rate: 1e309`` a rate limit
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Feature(_Strict):
    """One input feature of a tabular model.

    Attributes:
        name: column name.
        min, max: declared range, in the model's input units.
        type: ``continuous``, ``integer`` or ``categorical``.
        categories: allowed values of a categorical feature.
        immutable: an attacker cannot change it (attacks leave it alone).
    """

    name: str
    min: float | None = None
    max: float | None = None
    type: Literal["continuous", "integer", "categorical"] = "continuous"
    categories: list[float] | None = None
    immutable: bool = False

    @model_validator(mode="after")
    def _range(self) -> Feature:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class InputSpec(_Strict):
    """What a model takes as input.

    Attributes:
        shape: one sample's shape, without the batch axis (``[30]``, ``[1, 8, 8]``).
        dtype: numpy dtype name.
        range: ``[min, max]`` for every value (images), when ``features`` is not given.
        features: per-feature specs for tabular data (ranges, types, immutability).
        preprocessing: a note of what the caller must do before the model (``scaled to [0, 1]``).
        eps_unit: how ε is read for this model: ``fraction`` of each feature's declared range
            (the tabular default) or ``absolute`` model-input units (the image default).
    """

    shape: list[int] = Field(min_length=1)
    dtype: str = "float32"
    range: tuple[float, float] | None = None
    features: list[Feature] | None = None
    preprocessing: str | None = None
    eps_unit: Literal["fraction", "absolute"] | None = None

    @field_validator("shape")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(d <= 0 for d in v):
            raise ValueError("every dimension must be positive")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> InputSpec:
        if self.range is not None and self.range[0] > self.range[1]:
            raise ValueError("range min is above max")
        if self.features is not None and len(self.shape) == 1 and len(self.features) != self.shape[0]:
            raise ValueError(f"{len(self.features)} features declared for shape {self.shape}")
        return self

    def resolved_eps_unit(self) -> Literal["fraction", "absolute"]:
        """``eps_unit``, defaulting to ``fraction`` for tabular (1-D) inputs, else ``absolute``."""
        if self.eps_unit is not None:
            return self.eps_unit
        return "fraction" if len(self.shape) == 1 else "absolute"


class EndpointSpec(_Strict):
    """How to call an HTTP JSON endpoint.

    Attributes:
        token_env: name of the environment variable holding a bearer token (never the token):
            one starting with ``BASTION_`` or approved in ``BASTION_ALLOW_ENV``.
        headers_env: header name → environment variable name holding its value (the same rule).
        request_key: JSON key the inputs go under (``{"instances": [...]}``).
        response_key: JSON key the outputs come back under (``{"predictions": [...]}``).
        output: what the endpoint returns: ``probabilities``, ``logits`` or ``labels``.
        timeout: seconds per request.
        max_batch: rows per request (default: 256 for probabilities or logits, 64 for labels).
        wire: request/response template: ``default`` (``request_key``/``response_key``), ``rows``
            (a bare JSON list of rows → a list of predictions) or ``kserve-v2`` (KServe v2 / Open
            Inference Protocol ``inputs``/``outputs`` tensors).
        concurrency: requests in flight at once.
        rate_limit: most requests per second (``None``: unlimited); 429 ``Retry-After`` is honoured.
        max_retries: retries after a 5xx/429 answer or a connection error.
        max_response_bytes: the most bytes of one answer read; a longer answer fails that request
            (unread past the cap, not retried).
    """

    token_env: str | None = Field(default=None, pattern=_ENV)
    headers_env: dict[str, str] = Field(default_factory=dict)
    request_key: str = "instances"
    response_key: str = "predictions"
    output: Literal["probabilities", "logits", "labels"] = "probabilities"
    timeout: float = Field(default=10.0, gt=0)
    max_batch: int | None = Field(default=None, ge=1)
    wire: Literal["default", "rows", "kserve-v2"] = "default"
    concurrency: int = Field(default=1, ge=1, le=256)
    rate_limit: float | None = Field(default=None, gt=0)
    max_retries: int = Field(default=2, ge=0, le=20)
    max_response_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)

    @field_validator("token_env")
    @classmethod
    def _token_env(cls, v: str | None) -> str | None:
        problem = credential_env_problem(v) if v else None
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("headers_env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for header, env in v.items():
            if not re.match(_ENV, env):
                raise ValueError(f"header {header!r}: {env!r} is not an environment variable name")
            problem = credential_env_problem(env)
            if problem:
                raise ValueError(f"header {header!r}: {problem}")
        return v

    def env_names(self) -> list[str]:
        """The environment variables whose values this endpoint sends (token first)."""
        return ([self.token_env] if self.token_env else []) + list(self.headers_env.values())


class OutputSpec(_Strict):
    """Output hardening: how much of its scores a served model reveals (issue 6).

    Applied by :class:`bastion.targets.hardened.HardenedTarget` around the asset's target, in
    this order: ``temperature``, then ``top_k``, then ``decimals``; ``label_only`` replaces all
    three. The membership audit then measures what the hardened outputs still leak.

    Attributes:
        temperature: divide the logits (or log-probabilities) by ``T`` before the softmax
            (``T > 1`` flattens, ``T < 1`` sharpens); the predicted label never changes.
        top_k: keep the ``k`` largest probabilities of each row, set the others to 0 and
            renormalise the kept ones to sum to 1 (below the number of classes).
        decimals: round every probability to this many decimals (the top class keeps at least
            ``10**-decimals``).
        label_only: return the predicted label only, no scores.
    """

    # strict: a YAML ``true`` or ``"3"`` is a mistake here, not a 1 or a 3
    temperature: float | None = Field(default=None, gt=0.0, le=1000.0, strict=True, allow_inf_nan=False)
    top_k: int | None = Field(default=None, ge=1, strict=True)
    decimals: int | None = Field(default=None, ge=1, le=12, strict=True)
    label_only: bool = Field(default=False, strict=True)

    @model_validator(mode="after")
    def _meaningful(self) -> OutputSpec:
        scored = [n for n in ("temperature", "top_k", "decimals") if getattr(self, n) is not None]
        if self.label_only and scored:
            raise ValueError(
                f"label_only returns no scores, so {', '.join(scored)} would have no effect (remove it)"
            )
        if not self.label_only and not scored:
            raise ValueError("set at least one of temperature, top_k, decimals, or label_only: true")
        return self


#: Frameworks people name that Bastion has no loader for (a clear error, not a list of choices).
_NO_LOADER_FRAMEWORKS = {
    "keras": "Keras",
    "tensorflow": "TensorFlow",
    "tf": "TensorFlow",
    "tflite": "TensorFlow Lite",
    "jax": "JAX",
}


class Asset(_Strict):
    """A model, dataset or endpoint in the project.

    Attributes:
        name: unique name.
        kind: ``model``, ``dataset`` or ``endpoint``.
        path: file path, relative to the ``bastion.yaml`` folder (models, datasets).
        url: endpoint URL.
        format: file format (``torch``, ``torchscript``, ``onnx``, ``joblib``, ``pickle``, ``csv``, ``npz``).
        framework: ``torch``, ``sklearn``, ``onnx``, ``http`` or ``ensemble`` (averaged
            probabilities of ``members``; no ``path``).
        task: ``classification`` or ``regression``.
        owner: the accountable person or team.
        dataset: the dataset (by name) the model is evaluated on.
        input: input spec.
        model_class: the user's class for a torch state_dict (``package.module:Class``).
        model_kwargs: keyword arguments for ``model_class``.
        sha256: the pinned hash of the file.
        endpoint: how to call an endpoint.
        num_classes: number of output classes.
        tags: free labels (``phi``, ``production``).
        members: for ``framework: ensemble``, the model assets (by name) whose probabilities are
            averaged.
        output: output hardening of the served model (temperature, top-k, rounding, label only);
            assessed as served.
    """

    name: str = Field(pattern=_NAME)
    kind: Literal["model", "dataset", "endpoint"] = "model"
    path: str | None = None
    url: str | None = None
    format: str | None = None
    framework: Literal["torch", "sklearn", "onnx", "http", "ensemble"] | None = None
    task: Literal["classification", "regression"] = "classification"
    owner: str | None = None
    dataset: str | None = None
    input: InputSpec | None = None
    model_class: str | None = Field(default=None, pattern=_CODE_REF)
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    endpoint: EndpointSpec | None = None
    num_classes: int | None = Field(default=None, ge=2)
    tags: list[str] = Field(default_factory=list)
    members: list[str] | None = Field(default=None, min_length=2)
    output: OutputSpec | None = None

    @field_validator("framework", mode="before")
    @classmethod
    def _no_loader(cls, value: Any) -> Any:
        # trial 30, L6: `framework: keras` got pydantic's "Input should be 'torch', …" only
        name = _NO_LOADER_FRAMEWORKS.get(value.lower()) if isinstance(value, str) else None
        if name is not None:
            raise ValueError(
                f"{value!r}: Bastion has no {name} loader; leave framework out (the model file is "
                "still scanned and governed, its attacks are skipped), or export the model to ONNX "
                "(e.g. tf2onnx) and use framework: onnx"
            )
        return value

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        if value is None or value.lower() in KNOWN_FORMATS:
            return value
        import difflib

        close = difflib.get_close_matches(value.lower(), KNOWN_FORMATS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown format {value!r}{hint} (models Bastion loads: {', '.join(MODEL_FORMATS)}; "
            f"datasets: {', '.join(DATASET_FORMATS)}; files only scanned: {', '.join(SCANNED_FORMATS)})"
        )

    @field_validator("model_class")
    @classmethod
    def _own_code(cls, value: str | None) -> str | None:
        # trial 32: `model_class: "this:WineNet"` imported the standard library's `this` (its
        # top-level code printed the Zen of Python) before failing on the missing class
        if value is not None and (problem := _model_class_problem(value)):
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _output(self) -> Asset:
        if self.output is None:
            return self
        if self.kind == "dataset":
            raise ValueError("output: only models and endpoints have outputs to harden")
        k = self.output.top_k
        if k is not None and self.num_classes is not None and k >= self.num_classes:
            raise ValueError(
                f"output.top_k: {k} keeps all {self.num_classes} classes; use fewer than num_classes"
            )
        if self.endpoint is not None and self.endpoint.output == "labels" and not self.output.label_only:
            raise ValueError("output: the endpoint returns labels only; there are no scores to harden")
        return self

    @model_validator(mode="after")
    def _where(self) -> Asset:
        if self.framework == "ensemble":
            if self.kind != "model":
                raise ValueError("an ensemble is a model (kind: model)")
            if not self.members:
                raise ValueError("an ensemble needs members (at least two model asset names)")
            return self
        if self.members is not None:
            raise ValueError("members is only for framework: ensemble")
        if self.kind == "endpoint":
            if not self.url:
                raise ValueError("an endpoint needs url")
            if not re.match(r"^https?://", self.url):
                raise ValueError(f"url must start with http:// or https://, got {redact_url(self.url)!r}")
        elif not self.path:
            raise ValueError(f"a {self.kind} needs path")
        if self.endpoint is not None:
            # the allow-list (BASTION_* or approved in BASTION_ALLOW_ENV): here, to name the asset
            refused = [p for env in self.endpoint.env_names() if (p := project_env_problem(env))]
            if refused:
                raise ValueError(f"asset {self.name!r}: endpoint credentials refused: " + "; ".join(refused))
        if self.url and self.endpoint is not None and self.endpoint.env_names():
            problem = cleartext_credentials_problem(self.url)
            if problem:
                raise ValueError(
                    f"asset {self.name!r} sends {', '.join(self.endpoint.env_names())} to "
                    f"{redact_url(self.url)}: {problem}"
                )
        return self


class Dataset(_Strict):
    """A dataset file with its recorded splits.

    Attributes:
        name: unique name.
        path: CSV or npz (no object arrays), relative to the ``bastion.yaml`` folder.
        label: label column (CSV) or array name (npz).
        features: feature columns (CSV) or the array name of inputs (npz, one name); all other
            columns when omitted.
        splits: named splits as row indices (``train``, ``test``, and others a check needs,
            e.g. ``population``); never a seed.
        splits_file: npz holding the splits as integer arrays, instead of inline lists.
        owner: the accountable person or team.
        sensitive: holds personal data (health records): raises governance requirements.
    """

    name: str = Field(pattern=_NAME)
    path: str
    label: str | None = None
    features: list[str] | str | None = None
    splits: dict[str, list[int]] = Field(default_factory=dict)
    splits_file: str | None = None
    owner: str | None = None
    sensitive: bool = False

    @field_validator("splits")
    @classmethod
    def _indices(cls, v: dict[str, list[int]]) -> dict[str, list[int]]:
        for name, idx in v.items():
            if any(i < 0 for i in idx):
                raise ValueError(f"split {name!r} holds a negative row index")
            if len(set(idx)) != len(idx):
                raise ValueError(f"split {name!r} repeats row indices")
        return v


_OPS = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq"}


class Threshold(_Strict):
    """A rule turning a metric into a finding: ``metric op value`` → finding of ``severity``.

    Attributes:
        metric: a metric name of the check (``robust_accuracy@eps=0.1``).
        op: ``lt``, ``le``, ``gt``, ``ge``, ``eq`` (or ``<``, ``<=``, ``>``, ``>=``, ``==``).
        value: the bound, in the metric's units.
        severity: severity of the finding it raises.
        rule: the condition part of the rule id (``low-robust-accuracy``); derived when omitted.
    """

    metric: str
    op: Literal["lt", "le", "gt", "ge", "eq"] = Field(
        json_schema_extra={"enum": ["lt", "le", "gt", "ge", "eq", "<", "<=", ">", ">=", "=="]}
    )
    value: float
    severity: Severity = Severity.MEDIUM
    rule: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]*$")

    def rule_name(self) -> str:
        """The condition part of the rule id."""
        if self.rule:
            return self.rule
        base = re.sub(r"[^a-z0-9]+", "-", self.metric.lower()).strip("-")
        return f"{base}-{self.op}"

    @field_validator("op", mode="before")
    @classmethod
    def _symbols(cls, v: Any) -> Any:
        return _OPS.get(v, v)

    def trips(self, observed: float | None) -> bool:
        """Whether ``observed`` meets the condition (``None`` never trips)."""
        if observed is None:
            return False
        return {
            "lt": observed < self.value,
            "le": observed <= self.value,
            "gt": observed > self.value,
            "ge": observed >= self.value,
            "eq": observed == self.value,
        }[self.op]


class CheckConfig(_Strict):
    """Settings of one check, keyed by plugin id under ``checks:``.

    Attributes:
        enabled: run it (default) or not.
        assets: only these assets (all that fit when omitted).
        budget: limits overriding the ``--budget`` preset.
        params: the plugin's typed parameters.
        thresholds: metric rules that produce findings (replace the plugin's defaults).
    """

    enabled: bool = True
    assets: list[str] | None = None
    budget: Budget | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    thresholds: list[Threshold] | None = None


def _allow_entry(item: str) -> str:
    if not re.match(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*\.([A-Za-z_][\w]*|\*)$", item):
        raise ValueError(f"{item!r} is not a dotted module.Name or module.*")
    problem = project_allow_problem(item)
    if problem:
        raise ValueError(problem)
    return item


class ScanSection(_Strict):
    """Scanner settings: ``allow`` adds the user's own classes (``pkg.module.Class`` or ``pkg.module.*``).

    A project file is read from a folder someone else may have written, so its entries may name
    only the user's own code: the standard library, ``bastion`` and the libraries of
    :data:`bastion.core.project_trust.PROTECTED_ALLOW_ROOTS` are refused (red-team round 31:
    ``allow: [torch.ops.load_library]`` made a pickle that loads a native library ``safe``).
    """

    allow: list[Annotated[str, AfterValidator(_allow_entry)]] = Field(default_factory=list)


class SigningSection(_Strict):
    """Model signing: the public key that verifies each model's signature during ``bastion assess``.

    ``public_key`` (PEM, relative to the config's folder) checks the ``<file>.sig`` Sigstore
    bundle that ``bastion sign`` writes beside each model file (or the ``<folder>.sig`` of a
    folder signed as a whole). With a key set, a model whose signature fails or cannot be
    checked is never loaded; ``require`` (default on) refuses unsigned models too, in
    ``assess``, ``harden`` and ``guard fit``/``serve`` (off: they are loaded and reported).
    """

    public_key: str | None = None
    require: bool = True


class Waiver(_Strict):
    """An accepted risk: findings of ``rule_id`` on ``asset`` show as waived until ``expires``."""

    rule_id: str
    asset: str | None = None
    reason: str = Field(min_length=3)
    expires: dt.date

    def active(self, today: dt.date | None = None) -> bool:
        """Whether the waiver still holds on ``today``."""
        return (today or dt.date.today()) <= self.expires


class Project(_Strict):
    """Project metadata."""

    name: str = "project"
    owner: str | None = None
    description: str | None = None
    incident_plan: str | None = None


class ProjectConfig(_Strict):
    """The whole ``bastion.yaml``."""

    version: Literal[1]
    project: Project = Field(default_factory=Project)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)  # 0 to 2**32 - 1 (see MAX_SEED)
    assets: list[Asset] = Field(default_factory=list)
    datasets: list[Dataset] = Field(default_factory=list)
    checks: dict[str, CheckConfig] = Field(default_factory=dict)
    scan: ScanSection = Field(default_factory=ScanSection)
    signing: SigningSection = Field(default_factory=SigningSection)
    waivers: list[Waiver] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> ProjectConfig:
        names = [a.name for a in self.assets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"asset names repeated: {', '.join(dupes)}")
        dnames = [d.name for d in self.datasets]
        ddupes = sorted({n for n in dnames if dnames.count(n) > 1})
        if ddupes:
            raise ValueError(f"dataset names repeated: {', '.join(ddupes)}")
        clash = sorted({a.name for a in self.assets if a.kind != "dataset"} & set(dnames))
        if clash:
            raise ValueError(
                f"names used by both an asset and a dataset: {', '.join(clash)} (every name must be unique)"
            )
        return self

    def asset(self, name: str) -> Asset:
        """The asset called ``name``.

        Raises:
            ConfigError: no such asset.
        """
        for a in self.assets:
            if a.name == name:
                return a
        raise ConfigError(f"no asset named {name!r}; assets: {', '.join(a.name for a in self.assets)}")

    def dataset(self, name: str) -> Dataset:
        """The dataset called ``name``.

        Raises:
            ConfigError: no such dataset.
        """
        for d in self.datasets:
            if d.name == name:
                return d
        raise ConfigError(f"no dataset named {name!r}")


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def parse_config(
    data: Any, source: str = "bastion.yaml", base_dir: str | Path | None = None
) -> ProjectConfig:
    """Validate a parsed YAML document.

    With ``base_dir`` (the folder of ``bastion.yaml``), an endpoint on another host whose dataset
    files lie outside it is refused (:func:`~bastion.core.project_trust.endpoint_data_problem`).

    Raises:
        ConfigError: listing every problem with its field path.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        cfg = ProjectConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{_loc(tuple(err['loc']))}: {msg}")
        raise ConfigError(f"{source}: {len(problems)} problem(s)", problems) from None
    problems = []
    dataset_names = {d.name for d in cfg.datasets}
    for i, a in enumerate(cfg.assets):
        if a.dataset and a.dataset not in dataset_names:
            problems.append(f"assets[{i}].dataset: no dataset named {a.dataset!r}")
    asset_names = {a.name for a in cfg.assets}
    kinds = {a.name: a for a in cfg.assets}
    for i, a in enumerate(cfg.assets):
        for j, member in enumerate(a.members or []):
            m = kinds.get(member)
            if m is None:
                problems.append(f"assets[{i}].members[{j}]: no asset named {member!r}")
            elif m.kind not in ("model", "endpoint") or m.framework == "ensemble":
                what = "an ensemble" if m.framework == "ensemble" else f"a {m.kind}"
                problems.append(f"assets[{i}].members[{j}]: {member!r} is {what}, not a model")
    for key, check in cfg.checks.items():
        for name in check.assets or []:
            if name not in asset_names:
                problems.append(f"checks.{key}.assets: no asset named {name!r}")
    if base_dir is not None:
        problems += _endpoint_data_problems(cfg, base_dir)
    if problems:
        raise ConfigError(f"{source}: {len(problems)} problem(s)", problems)
    for i, a in enumerate(cfg.assets):
        if a.url:
            _warn_url_credentials(source, f"assets[{i}].url", a.url)
    return cfg


def _endpoint_data_problems(cfg: ProjectConfig, base_dir: str | Path) -> list[str]:
    """Dataset files outside ``base_dir`` that an endpoint on another host would be sent rows of.

    An endpoint asset is sent its dataset's rows; an ensemble's, those of the ensemble's dataset.
    """
    by_name = {a.name: a for a in cfg.assets}
    datasets = {d.name: d for d in cfg.datasets}
    problems: list[str] = []
    for i, a in enumerate(cfg.assets):
        ds = datasets.get(a.dataset or "")
        if ds is None:
            continue
        senders = [a, *(by_name[m] for m in a.members or [] if m in by_name)]
        for e in senders:
            if not e.url or (e.kind != "endpoint" and e.framework != "http"):
                continue
            for field in ("path", "splits_file"):
                file = getattr(ds, field)
                if file and (bad := endpoint_data_problem(e.name, e.url, ds.name, file, base_dir)):
                    problems.append(f"assets[{i}].dataset: {bad}")
    return list(dict.fromkeys(problems))


#: (source, field, redacted URL) already warned about: a run reads its config more than once.
_WARNED: set[tuple[str, str, str]] = set()


def _warn_url_credentials(source: str, field: str, url: str) -> None:
    """Warn (once per process) that ``url`` carries credentials, naming where, never their values.

    They are masked (:func:`bastion.core.redact.redact_url`) wherever the URL is shown or
    recorded, but a ``bastion.yaml`` is committed and shared: secrets belong in environment
    variables named by ``endpoint.token_env`` / ``endpoint.headers_env``.
    """
    found = url_secrets(url)
    key = (source, field, redact_url(url))
    if not found or key in _WARNED:
        return
    _WARNED.add(key)
    log.warning(
        "%s: %s carries credentials (%s); they are masked in output, reports and the store, but "
        "belong in an environment variable: endpoint.token_env (a bearer token) or "
        "endpoint.headers_env (e.g. an X-API-Key header)",
        source,
        field,
        ", ".join(dict.fromkeys(where for where, _ in found)),
    )


def load_config(path: str | Path) -> ProjectConfig:
    """Read and validate a ``bastion.yaml``.

    Args:
        path: the file.

    Raises:
        ConfigError: the file is missing, not a regular file (a FIFO, a device), larger than
            :data:`~bastion.core.files.MAX_CONFIG_BYTES`, not YAML, or invalid (every problem listed).
    """
    import yaml

    p = Path(path)
    text = read_config_text(p, folder_hint="give the bastion.yaml file inside it")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise yaml_syntax_error(p, exc) from None
    return parse_config(data, source=str(p), base_dir=p.resolve().parent)


def yaml_syntax_error(path: str | Path, exc: Exception) -> ConfigError:
    """One line for a YAML syntax error in ``path``: where (line, column) and what PyYAML found."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}")


def config_hash(path: str | Path) -> str:
    """SHA-256 of a config file's bytes (reproducibility record), read as :func:`load_config` reads it."""
    return hashlib.sha256(read_config_bytes(path)).hexdigest()
