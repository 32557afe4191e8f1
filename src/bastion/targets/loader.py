"""Build a :class:`Target` from a ``bastion.yaml`` asset.

Precondition for file assets: ``bastion.api`` has scanned the file, got a ``safe``
verdict, and passes the bytes it scanned (``verified_bytes``) and/or their SHA-256
(``verified_sha256``). The bytes are loaded as given (never re-read after hashing), and a
hash pinned in the asset (``sha256``) must match too. A joblib/pickle file is refused
without ``verified_sha256``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from bastion.core.config import Asset, EndpointSpec
from bastion.core.errors import ConfigError, TargetError
from bastion.core.project_trust import cleartext_credentials_problem, project_env_problem
from bastion.core.redact import redact_url
from bastion.targets._util import read_model_bytes, verify_sha256
from bastion.targets.base import Target

log = logging.getLogger(__name__)

#: format name (lower case) -> framework.
_FORMATS = {
    "torchscript": "torch",
    "torch": "torch",
    "pt": "torch",
    "pth": "torch",
    "state_dict": "torch",
    "onnx": "onnx",
    "joblib": "sklearn",
    "pickle": "sklearn",
    "pkl": "sklearn",
    "sklearn": "sklearn",
    "skops": "sklearn",
    "http": "http",
    "json": "http",
}
#: file suffix -> framework, when neither framework nor format is given.
_SUFFIXES = {
    ".onnx": "onnx",
    ".joblib": "sklearn",
    ".pkl": "sklearn",
    ".pickle": "sklearn",
    ".skops": "sklearn",
    ".pt": "torch",
    ".pth": "torch",
    ".ts": "torch",
    ".torchscript": "torch",
}


def _framework(asset: Asset) -> str:
    fmt = (asset.format or "").lower() or None
    from_format = _FORMATS.get(fmt) if fmt else None
    if fmt and from_format is None:
        raise ConfigError(f"asset {asset.name!r}: format {asset.format!r} is not supported by targets")
    if asset.framework is not None:
        if from_format is not None and from_format != asset.framework:
            raise ConfigError(
                f"asset {asset.name!r}: format {asset.format!r} contradicts framework {asset.framework!r}"
            )
        return asset.framework
    if from_format is not None:
        return from_format
    if asset.kind == "endpoint" or (asset.url and not asset.path):
        return "http"
    if asset.path:
        fw = _SUFFIXES.get(Path(asset.path).suffix.lower())
        if fw:
            return fw
    raise ConfigError(
        f"asset {asset.name!r}: cannot tell its framework; set framework (torch, sklearn, onnx, http)"
    )


def _env_headers(asset: Asset, spec: EndpointSpec) -> dict[str, str]:
    """Request headers from environment variables; every missing variable named (never a value).

    The config's own rules are checked again here, where the values are read (an asset built
    with ``model_construct`` skipped them): only ``BASTION_*`` names or names approved in
    ``BASTION_ALLOW_ENV``, never a well-known cloud/CI credential, and only over https or to a
    loopback host (:mod:`bastion.core.project_trust`).
    """
    wanted: list[tuple[str, str, str]] = []  # (header, env var, prefix)
    if spec.token_env:
        wanted.append(("Authorization", spec.token_env, "Bearer "))
    wanted.extend((header, env, "") for header, env in spec.headers_env.items())
    if not wanted:
        return {}
    refused = [p for _, env, _ in wanted if (p := project_env_problem(env))]
    cleartext = cleartext_credentials_problem(asset.url or "")
    if cleartext:
        refused.append(f"{redact_url(asset.url or '')}: {cleartext}")
    if refused:
        raise ConfigError(f"asset {asset.name!r}: endpoint credentials refused", refused)
    headers: dict[str, str] = {}
    missing: list[str] = []
    for header, env, prefix in wanted:
        value = os.environ.get(env)
        if not value:
            missing.append(f"endpoint: environment variable {env} (for header {header}) is not set")
            continue
        headers[header] = prefix + value
    if missing:
        raise ConfigError(f"asset {asset.name!r}: endpoint credentials missing", missing)
    return headers


def build_target(
    asset: Asset,
    *,
    base_dir: Path,
    verified_bytes: bytes | None = None,
    verified_sha256: str | None = None,
) -> Target:
    """The :class:`Target` for one model or endpoint asset.

    Dispatch: ``torch`` + no ``model_class`` → TorchScript archive; ``torch`` +
    ``model_class`` → state_dict loaded with ``weights_only=True`` into the user's class;
    ``sklearn`` → joblib, hash-verified (:func:`load_joblib_verified`); ``onnx`` →
    onnxruntime; ``http`` → :class:`HttpTarget` with ``Authorization: Bearer $token_env``
    and ``headers_env`` resolved from the environment. The framework comes from
    ``framework``, else ``format``, else the file suffix.

    The asset's ``output`` hardening (temperature, top-k, rounding, label only), when set,
    wraps the target in a :class:`~bastion.targets.hardened.HardenedTarget`: the model is
    assessed as it is served.

    Args:
        asset: the asset (``kind`` model or endpoint, ``task`` classification).
        base_dir: folder of ``bastion.yaml``; relative paths are read from it.
        verified_bytes: the file's bytes as the scanner read them (loaded as given).
        verified_sha256: the SHA-256 the scanner recorded with its ``safe`` verdict.

    Returns:
        A ready target; importing its framework lazily.

    Raises:
        ConfigError: a dataset asset, a regression task, missing ``input.shape`` or
            ``num_classes``, an unknown format, a bad ``model_class``, or an endpoint
            environment variable that is not set (named; its value never shown).
        IntegrityError: the bytes do not hash to ``verified_sha256`` or the pinned ``sha256``.
        TargetError: the file is missing or cannot be loaded; a joblib file without
            ``verified_sha256``.
        MissingExtraError: the framework is not installed.

    """
    from bastion.targets.hardened import harden_output

    target = _build_unhardened(
        asset, base_dir=base_dir, verified_bytes=verified_bytes, verified_sha256=verified_sha256
    )
    return harden_output(target, asset.output)


def _build_unhardened(
    asset: Asset,
    *,
    base_dir: Path,
    verified_bytes: bytes | None,
    verified_sha256: str | None,
) -> Target:
    """:func:`build_target` before the output hardening."""
    if asset.kind == "dataset":
        raise ConfigError(f"asset {asset.name!r} is a dataset, not a model or an endpoint")
    problems: list[str] = []
    if asset.task != "classification":
        problems.append(f"task: {asset.task!r} is not supported (targets are classifiers)")
    if asset.input is None:
        problems.append("input.shape: required to build a target")
    if asset.num_classes is None:
        problems.append("num_classes: required for a classifier")
    if problems:
        raise ConfigError(f"asset {asset.name!r}: cannot build a target", problems)
    assert asset.input is not None and asset.num_classes is not None
    input_shape = tuple(int(d) for d in asset.input.shape)
    num_classes = int(asset.num_classes)
    framework = _framework(asset)
    log.info("building %s target for asset %s", framework, asset.name)

    if framework == "http":
        if not asset.url:
            raise ConfigError(f"asset {asset.name!r}: an http target needs url")
        spec = asset.endpoint or EndpointSpec()
        from bastion.targets.http_target import HttpTarget

        return HttpTarget(
            asset.url,
            name=asset.name,
            input_shape=input_shape,
            num_classes=num_classes,
            output=spec.output,
            request_key=spec.request_key,
            response_key=spec.response_key,
            headers=_env_headers(asset, spec),
            timeout=spec.timeout,
            max_batch=spec.max_batch,
            wire=spec.wire,
            concurrency=spec.concurrency,
            rate_limit=spec.rate_limit,
            max_retries=spec.max_retries,
            max_response_bytes=spec.max_response_bytes,
        )

    if not asset.path:
        raise ConfigError(f"asset {asset.name!r}: a {framework} model needs path")
    path = Path(asset.path)
    if not path.is_absolute():
        path = Path(base_dir) / path
    is_skops = (asset.format or "").lower() == "skops" or (
        not asset.format and path.suffix.lower() == ".skops"
    )
    if framework == "sklearn" and not verified_sha256 and not is_skops:
        raise TargetError(
            f"{path}: refusing to unpickle a joblib/pickle file without the scanner's recorded SHA-256 "
            "(scan it first; only a 'safe' verdict may be loaded)"
        )
    data = read_model_bytes(path, verified_bytes)
    if verified_sha256:
        verify_sha256(data, verified_sha256, where=path)
    if asset.sha256:
        verify_sha256(data, asset.sha256, where=path)

    if framework == "torch":
        from bastion.targets.torch_target import TorchTarget, load_state_dict_model, load_torchscript

        if asset.model_class:
            if (asset.format or "").lower() == "torchscript":
                raise ConfigError(f"asset {asset.name!r}: a torchscript archive takes no model_class")
            module = load_state_dict_model(path, asset.model_class, asset.model_kwargs, model_bytes=data)
        else:
            module = load_torchscript(path, model_bytes=data)
        return TorchTarget(module, name=asset.name, input_shape=input_shape, num_classes=num_classes)

    if framework == "sklearn":
        from bastion.targets.sklearn_target import SklearnTarget, load_joblib_verified, load_skops_verified

        if is_skops:  # no unpickling: skops rebuilds trusted types only
            estimator = load_skops_verified(path, expected_sha256=verified_sha256, model_bytes=data)
        else:
            assert verified_sha256 is not None
            estimator = load_joblib_verified(path, expected_sha256=verified_sha256, model_bytes=data)
        return SklearnTarget(estimator, name=asset.name, input_shape=input_shape, num_classes=num_classes)

    if framework == "onnx":
        from bastion.targets.onnx_target import OnnxTarget

        return OnnxTarget(
            path, name=asset.name, input_shape=input_shape, num_classes=num_classes, model_bytes=data
        )

    raise ConfigError(f"asset {asset.name!r}: framework {framework!r} is not supported")  # pragma: no cover
