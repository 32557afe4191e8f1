"""``scan.keras``: Keras v3 ``.keras`` archives (a zip of ``config.json``, ``metadata.json`` and weights).

Threat model: ``keras.models.load_model`` rebuilds the model from ``config.json``. A ``Lambda``
layer in it carries marshalled Python bytecode that runs at load time (with ``safe_mode=False``,
and in vulnerable releases despite it: CVE-2024-3660); a ``module`` outside Keras makes Keras
import and call it (CVE-2025-1550); custom objects need code the user must have reviewed. The
weights member (``model.weights.h5``) is HDF5 and goes to the HDF5 scanner; other members are
dispatched by magic bytes. The archive is never extracted to disk and nothing is imported.

Reference: https://keras.io/guides/serialization_and_saving/
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from bastion.core.registry import register
from bastion.scan._keras import check_keras_config
from bastion.scan._zip import ZIP_MAGICS, BadZip, MemberAction, open_zip, read_document, walk_zip
from bastion.scan.base import Artifact, NotThisFormat, Outcome, Scanner

if TYPE_CHECKING:
    import zipfile

__all__ = ["KerasScanner"]


def _read_config(art: Artifact, zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: Outcome) -> None:
    text = read_document(art, zf, info, out)
    if text is not None:
        check_keras_config(art, out, text, source=info.filename, prefix="scan.keras")


@register("scanner")
class KerasScanner(Scanner):
    """Keras ``.keras`` archives: Lambda layers, non-Keras modules and custom objects."""

    id: ClassVar[str] = "scan.keras"
    title: ClassVar[str] = "Keras archive scanner"
    formats: ClassVar[tuple[str, ...]] = ("keras",)
    priority: ClassVar[int] = 15
    sniff_first_bytes: ClassVar[bytes | None] = b"P"  # zip magic
    references: ClassVar[tuple[str, ...]] = (
        "https://keras.io/guides/serialization_and_saving/",
        "https://nvd.nist.gov/vuln/detail/CVE-2024-3660",
        "https://nvd.nist.gov/vuln/detail/CVE-2025-1550",
    )
    threat_model: ClassVar[str] = (
        "The attacker ships a .keras file whose config runs a Lambda layer's bytecode or makes "
        "Keras import a module of their choice when the victim calls load_model."
    )

    @classmethod
    def sniff(cls, head: bytes, name: str) -> bool:
        """Zip magic; the member list decides (a top-level ``config.json``)."""
        return head.startswith(ZIP_MAGICS)

    def scan(self, artifact: Artifact) -> Outcome:
        """Check ``config.json`` and dispatch the other members.

        Raises:
            NotThisFormat: a zip without a top-level ``config.json`` beside Keras members.
        """
        try:
            zf = open_zip(artifact)
        except BadZip as exc:
            if artifact.name.lower().endswith(".keras"):
                return Outcome.error("keras", f"corrupt zip archive: {exc}")
            raise NotThisFormat from exc
        with zf:
            names = set(zf.namelist())
            keras_like = "metadata.json" in names or any(n.endswith(".weights.h5") for n in names)
            if "config.json" not in names or not (keras_like or artifact.name.lower().endswith(".keras")):
                raise NotThisFormat
            out = Outcome(format="keras")

            def classify(name: str) -> MemberAction:
                if name == "config.json":
                    return _read_config
                if name == "metadata.json":
                    return "skip"
                return "dispatch"

            walk_zip(artifact, zf, out, plugin_id=self.id, classify=classify)
            return out
