"""``scan.hdf5``: HDF5 files (Keras ``.h5`` models and ``.weights.h5``), behind the ``hdf5`` extra.

Threat model: ``keras.models.load_model("model.h5")`` rebuilds the model from the JSON in the
root attribute ``model_config`` (and ``training_config``); a ``Lambda`` layer there holds
marshalled bytecode that runs on load, and a custom object needs code the user must trust. The
file is opened read-only with ``h5py`` (which parses HDF5 metadata; no Python object in the file is
unpickled or run); only string attributes are read, never datasets.

Reference: https://docs.h5py.org/ ; Keras legacy H5 format (``keras/src/legacy/saving/``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from bastion.core.errors import MissingExtraError, require
from bastion.core.registry import register
from bastion.scan._keras import check_keras_config
from bastion.scan.base import Artifact, Outcome, Scanner

__all__ = ["HDF5_MAGIC", "Hdf5Scanner"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_CONFIG_ATTRS = ("model_config", "training_config")
_MAX_ATTR = 64 << 20


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    return None


@register("scanner")
class Hdf5Scanner(Scanner):
    """HDF5 files: the Keras model config stored in root attributes."""

    id: ClassVar[str] = "scan.hdf5"
    title: ClassVar[str] = "HDF5 / Keras H5 scanner"
    formats: ClassVar[tuple[str, ...]] = ("hdf5",)
    priority: ClassVar[int] = 30
    references: ClassVar[tuple[str, ...]] = (
        "https://nvd.nist.gov/vuln/detail/CVE-2024-3660",
        "https://docs.h5py.org/en/stable/high/attr.html",
    )
    threat_model: ClassVar[str] = (
        "The attacker ships a Keras .h5 model whose config holds a Lambda layer (bytecode run on load)."
    )

    @classmethod
    def sniff(cls, head: bytes, name: str) -> bool:
        """The HDF5 superblock signature at offset 0 (user blocks are not supported)."""
        return head.startswith(HDF5_MAGIC)

    def scan(self, artifact: Artifact) -> Outcome:
        """Read the root attributes and check any Keras config."""
        try:
            h5py = require("h5py", "hdf5")
        except MissingExtraError as exc:
            return Outcome.error("hdf5", str(exc))
        out = Outcome(format="hdf5")
        artifact.stream.seek(0)
        try:
            with h5py.File(artifact.stream, "r") as f:
                for key in _CONFIG_ATTRS:
                    if key not in f.attrs:
                        continue
                    text = _text(f.attrs[key])
                    if text is None or len(text) > _MAX_ATTR:
                        out.errors.append(f"attribute {key!r} is not a string under {_MAX_ATTR} bytes")
                        continue
                    out.format = "keras-h5"
                    check_keras_config(artifact, out, text, source=f"attribute {key}", prefix="scan.hdf5")
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            return Outcome.error("hdf5", f"not a readable HDF5 file: {exc}")
        return out
