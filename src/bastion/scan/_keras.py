"""Shared Keras model-config checks for the ``.keras`` and HDF5 scanners (not a plugin).

A Keras model config is JSON: nested ``{"class_name", "config", "module", "registered_name"}``
objects. Keras deserialises it by resolving ``module`` + ``class_name`` (Keras 3) or the class
name alone (Keras 2 / ``tf.keras`` HDF5 files), so the config decides what code is imported and
called. ``Lambda`` layers carry marshalled Python bytecode that runs on load when
``safe_mode=False`` (and, in several Keras releases, despite it: CVE-2024-3660); a ``module``
outside Keras makes Keras import it (CVE-2025-1550); a custom object needs the user's own code.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

from bastion.core.severity import Severity
from bastion.scan.base import Artifact, Outcome
from bastion.scan.policy import Verdictish

__all__ = ["KERAS_MODULES", "check_keras_config"]

#: Module prefixes whose objects Keras ships (a config ``module`` under these is built in).
KERAS_MODULES = ("keras", "tf_keras", "tensorflow.keras", "tensorflow.python.keras", "keras_core")
_LAMBDA = frozenset({"Lambda", "__lambda__", "TFOpLambda", "SlicingOpLambda"})
_SAFE_LAMBDA = frozenset({"TFOpLambda", "SlicingOpLambda"})
_REFS = (
    "https://keras.io/api/models/model_saving_apis/model_saving_and_loading/",
    "https://nvd.nist.gov/vuln/detail/CVE-2024-3660",
    "https://nvd.nist.gov/vuln/detail/CVE-2025-1550",
)


def _objects(doc: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every ``{"class_name": str, ...}`` object in ``doc``, at any depth, in document order.

    Iterative, with no depth cap: Keras deserialises nested models (``Sequential`` in
    ``Sequential`` ...) as deep as the JSON goes, so a cap would hide what lies below it.
    """
    stack: list[tuple[str, Any]] = [("$", doc)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("class_name"), str):
                yield path, node
            stack.extend((f"{path}.{k}", v) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(node))))


def _torch_module(
    art: Artifact, out: Outcome, cfg: dict[str, Any], *, source: str, where: str, prefix: str
) -> None:
    """A ``TorchModuleWrapper`` layer: its ``module`` is a ``torch.save`` archive in base64.

    ``TorchModuleWrapper.from_config`` hands those bytes to ``torch.load(weights_only=False)``
    (``keras/src/utils/torch_utils.py``): a pickle that runs on load, outside safe mode and in
    every Keras release before the safe-mode check. Reported high, and the decoded bytes are
    scanned as a nested file so that what they would run is named too.
    """
    out.findings.append(
        art.finding(
            f"{prefix}.torch-module",
            Severity.HIGH,
            "Keras TorchModuleWrapper layer holds a pickled PyTorch module that torch.load unpickles "
            "when the model is loaded",
            evidence={"source": source, "path": where, "name": cfg.get("name")},
            remediation="Do not load this model with safe_mode=False; rebuild the wrapped module from "
            "code you reviewed and load its weights from safetensors.",
            references=_REFS,
        )
    )
    blob = cfg.get("module")
    if not isinstance(blob, str):
        return
    try:
        data = base64.b64decode(blob.encode("ascii"), validate=False)
    except (ValueError, UnicodeEncodeError):
        out.errors.append(f"{source}: TorchModuleWrapper at {where} holds a module that is not base64")
        return
    from bastion.scan.pickle_scanner import scan_payload

    scan_payload(art, data, name="module.pt", label=f"<TorchModuleWrapper module @{where}>", out=out)


def _is_keras_module(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in KERAS_MODULES)


def check_keras_config(art: Artifact, out: Outcome, text: str | bytes, *, source: str, prefix: str) -> None:
    """Check one Keras model-config JSON document and add findings to ``out``.

    Args:
        art: the artifact (file or member) the config came from.
        out: the outcome to add findings and errors to.
        text: the JSON text.
        source: where in the artifact (``config.json``, the ``model_config`` attribute).
        prefix: plugin id for rule ids (``scan.keras``, ``scan.hdf5``).

    Findings: ``<prefix>.lambda-layer`` (high: bytecode that runs on load),
    ``<prefix>.torch-module`` (high: a pickled PyTorch module unpickled on load; its bytes are
    scanned too), ``<prefix>.file-path-config`` (high: a lookup layer's vocabulary read from a path),
    ``<prefix>.denied-module`` (critical/high: the config names a deny-listed callable),
    ``<prefix>.custom-object`` (medium: an object outside Keras that needs your code).
    """
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        out.errors.append(f"{source} is not valid JSON: {exc}")
        return
    except RecursionError:
        out.errors.append(f"{source} nests JSON too deeply to be parsed")
        return
    policy = art.ctx.policy
    customs: dict[str, str] = {}
    for where, obj in _objects(doc):
        cls = obj["class_name"]
        module = obj.get("module")
        registered = obj.get("registered_name")
        raw_cfg = obj.get("config")
        cfg_values: dict[str, Any] = raw_cfg if isinstance(raw_cfg, dict) else {}
        if cls == "TorchModuleWrapper" or (
            isinstance(registered, str) and registered.endswith(">TorchModuleWrapper")
        ):
            _torch_module(art, out, cfg_values, source=source, where=where, prefix=prefix)
            continue
        vocab = cfg_values.get("vocabulary")
        if isinstance(vocab, str):
            out.findings.append(
                art.finding(
                    f"{prefix}.file-path-config",
                    Severity.HIGH,
                    f"Keras {cls} reads its vocabulary from the file {vocab[:120]!r} on load",
                    evidence={"source": source, "path": where, "layer": cls, "vocabulary": vocab[:300]},
                    remediation="A lookup layer given a path opens that file (any file the loading process "
                    "can read, CVE-2025-12058); ship the vocabulary as a list in the config.",
                    references=(*_REFS, "https://nvd.nist.gov/vuln/detail/CVE-2025-12058"),
                )
            )
        if cls in _LAMBDA and cls not in _SAFE_LAMBDA:
            cfg = obj.get("config") if isinstance(obj.get("config"), dict) else {}
            out.findings.append(
                art.finding(
                    f"{prefix}.lambda-layer",
                    Severity.HIGH,
                    f"Keras {cls} object carries Python code that runs when the model is loaded",
                    evidence={
                        "source": source,
                        "path": where,
                        "name": cfg.get("name") if isinstance(cfg, dict) else None,
                        "function_type": cfg.get("function_type") if isinstance(cfg, dict) else None,
                    },
                    remediation="Lambda layers run marshalled bytecode; load only with safe_mode=True "
                    "and replace the Lambda with a registered custom layer you can review.",
                    references=_REFS,
                )
            )
            continue
        if isinstance(module, str) and module:
            names = [cls]
            cfg = obj.get("config")
            if isinstance(cfg, str):
                names.append(cfg)  # {"module": "os", "class_name": "function", "config": "system"}
            denied = None
            for nm in names:
                j = policy.judge(module, nm)
                if j.kind is Verdictish.DENIED and j.rule is not None:
                    denied = (nm, j.rule)
                    break
            if denied is not None:
                nm, rule = denied
                out.findings.append(
                    art.finding(
                        f"{prefix}.denied-module",
                        rule.severity,
                        f"Keras config makes Keras import denied callable {module}.{nm}",
                        evidence={
                            "source": source,
                            "path": where,
                            "module": module,
                            "name": nm,
                            "rule": rule.id,
                        },
                        remediation="Do not load this model: its config resolves a dangerous callable.",
                        references=(rule.reference, *_REFS),
                    )
                )
                continue
            plain = module == "builtins" and cls in ("function", "dict", "list")
            if not _is_keras_module(module) and not plain:
                customs.setdefault(f"{module}.{cls}", where)
                continue
        if isinstance(registered, str) and ">" in registered:
            customs.setdefault(registered, where)
    for name, where in sorted(customs.items()):
        out.findings.append(
            art.finding(
                f"{prefix}.custom-object",
                Severity.MEDIUM,
                f"Keras config uses custom object {name}, which is not part of Keras",
                evidence={"source": source, "path": where, "object": name},
                remediation="Loading needs this class's code; check that it is yours and reviewed.",
                references=_REFS,
            )
        )
