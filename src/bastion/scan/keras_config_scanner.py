"""``scan.keras-config``: a Keras model config saved as a plain JSON file (the Keras 3 folder layout).

Threat model: ``keras.saving.load_model(folder)`` (and ``load_model("hf://...")``, which fetches
such a folder) reads ``config.json`` beside ``model.weights.h5`` and ``metadata.json``
(``saving_lib._load_model_from_dir``), exactly as it reads the ``config.json`` member of a
``.keras`` zip: a ``Lambda`` layer's bytecode runs, a ``module`` outside Keras is imported, a
``TorchModuleWrapper`` is unpickled. The zip is checked by ``scan.keras``; the same file lying in
a folder is checked here (red-team round 20). A ``config.json`` that is not a Keras model config
(a Hugging Face transformers config, say) is not claimed. Nothing is imported or loaded.

Reference: https://keras.io/guides/serialization_and_saving/
"""

from __future__ import annotations

import json
from typing import ClassVar

from bastion.core.registry import register
from bastion.scan._keras import check_keras_config
from bastion.scan._zip import MAX_DOCUMENT
from bastion.scan.base import Artifact, NotThisFormat, Outcome, Scanner

__all__ = ["KerasConfigScanner"]


def _is_keras_config(doc: object) -> bool:
    """A Keras model config: ``{"class_name": str, "config": dict, ...}`` at the top."""
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("class_name"), str)
        and isinstance(doc.get("config"), dict)
    )


@register("scanner")
class KerasConfigScanner(Scanner):
    """A Keras model config JSON file: Lambda layers, non-Keras modules, pickled modules, file paths."""

    id: ClassVar[str] = "scan.keras-config"
    title: ClassVar[str] = "Keras config file scanner"
    formats: ClassVar[tuple[str, ...]] = ("keras-config",)
    priority: ClassVar[int] = 60
    sniff_first_bytes: ClassVar[bytes | None] = b""  # names only
    sniff_suffixes: ClassVar[tuple[str, ...]] = (".json",)
    references: ClassVar[tuple[str, ...]] = (
        "https://keras.io/guides/serialization_and_saving/",
        "https://nvd.nist.gov/vuln/detail/CVE-2024-3660",
        "https://nvd.nist.gov/vuln/detail/CVE-2025-1550",
    )
    threat_model: ClassVar[str] = (
        "The attacker ships a Keras model folder whose config.json runs a Lambda layer's bytecode "
        "or makes Keras import a module of their choice when the victim loads the folder."
    )

    @classmethod
    def sniff(cls, head: bytes, name: str) -> bool:
        """``config.json`` (the name Keras reads in a folder), or a ``.json`` naming a ``class_name``."""
        low = name.lower()
        return low == "config.json" or (low.endswith(".json") and b'"class_name"' in head)

    def scan(self, artifact: Artifact) -> Outcome:
        """Parse the JSON and check it as a Keras config.

        Raises:
            NotThisFormat: the file is not JSON, or not a Keras model config.
        """
        if artifact.size is not None and artifact.size > MAX_DOCUMENT:
            if artifact.name.lower() == "config.json":
                return Outcome.error(
                    "keras-config",
                    f"config.json of {artifact.size} bytes is over the {MAX_DOCUMENT}-byte limit",
                )
            raise NotThisFormat
        artifact.stream.seek(0)
        text = artifact.stream.read(MAX_DOCUMENT + 1)
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise NotThisFormat from exc
        if not _is_keras_config(doc):
            raise NotThisFormat
        out = Outcome(format="keras-config")
        out.models = 1
        check_keras_config(artifact, out, text, source=artifact.name, prefix=self.id)
        return out
