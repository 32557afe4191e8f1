"""The control catalogue: versioned data (``catalogue.toml``) naming every governance control.

Each control carries its severity when missing, rationale, remediation and its mapping to
MITRE ATLAS (technique and mitigation ids), the OWASP Machine Learning Security Top 10 (2023),
NIST AI RMF 1.0 subcategories and the headings of ASD ACSC's "Engaging with Artificial
Intelligence" (2024). :func:`load_catalogue` reads and validates the packaged file once.
"""

from __future__ import annotations

import functools
import tomllib
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bastion.core.errors import ConfigError
from bastion.core.files import read_config_text
from bastion.core.severity import Severity

SCHEMA_VERSION = 1
_KINDS = frozenset({"model", "dataset", "endpoint"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Frameworks(_Strict):
    """A control's mapping to outside frameworks.

    Attributes:
        atlas: MITRE ATLAS technique ids a missing control exposes (the finding's ``atlas``).
        atlas_by_kind: per asset kind, technique ids replacing ``atlas``.
        atlas_mitigations: ATLAS mitigation ids (``AML.M0014``) the control implements.
        owasp_ml: OWASP ML Security Top 10 (2023) entries (``ML06:2023 AI Supply Chain Attacks``).
        nist_ai_rmf: NIST AI RMF 1.0 subcategories (``GOVERN 2.1``).
        asd: ASD ACSC "Engaging with AI" section headings (paraphrased).
    """

    atlas: list[str] = Field(default_factory=list)
    atlas_by_kind: dict[str, list[str]] = Field(default_factory=dict)
    atlas_mitigations: list[str] = Field(default_factory=list)
    owasp_ml: list[str] = Field(default_factory=list)
    nist_ai_rmf: list[str] = Field(default_factory=list)
    asd: list[str] = Field(default_factory=list)

    @field_validator("atlas")
    @classmethod
    def _techniques(cls, v: list[str]) -> list[str]:
        for tid in v:
            if not tid.startswith("AML.T"):
                raise ValueError(f"{tid!r} is not an ATLAS technique id")
        return v

    @field_validator("atlas_by_kind")
    @classmethod
    def _kind_techniques(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for kind, ids in v.items():
            if kind not in _KINDS:
                raise ValueError(f"unknown asset kind {kind!r}")
            for tid in ids:
                if not tid.startswith("AML.T"):
                    raise ValueError(f"{tid!r} is not an ATLAS technique id")
        return v

    @field_validator("atlas_mitigations")
    @classmethod
    def _mitigations(cls, v: list[str]) -> list[str]:
        for mid in v:
            if not mid.startswith("AML.M"):
                raise ValueError(f"{mid!r} is not an ATLAS mitigation id")
        return v

    def atlas_for(self, kind: str) -> list[str]:
        """Technique ids for an asset of ``kind``."""
        return list(self.atlas_by_kind.get(kind, self.atlas))

    def references(self) -> list[str]:
        """One human-readable line per mapping, for a finding's ``references``."""
        out = [f"MITRE ATLAS mitigation {m}" for m in self.atlas_mitigations]
        out += [f"OWASP ML Top 10 {o}" for o in self.owasp_ml]
        out += [f"NIST AI RMF 1.0 {n}" for n in self.nist_ai_rmf]
        out += [f"ASD Engaging with AI (2024): {a}" for a in self.asd]
        return out


class Escalation(_Strict):
    """A failure mode of a control with its own severity (and optionally rule, title, remedy)."""

    severity: Severity
    rule: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str | None = None
    remediation: str | None = None


class Control(_Strict):
    """One control of the catalogue (see ``catalogue.toml`` for the field meanings)."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str
    finding: str
    applies_to: frozenset[Literal["model", "dataset", "endpoint"]]
    scope: Literal["asset", "project"] = "asset"
    severity: Severity
    rationale: str
    remediation: str
    escalate: dict[str, Escalation] = Field(default_factory=dict)
    frameworks: Frameworks = Field(default_factory=Frameworks)


class Catalogue(_Strict):
    """The whole catalogue.

    Attributes:
        schema_version: shape of the file.
        catalogue_version: version of the controls' content (recorded in findings).
        controls: the controls, in file order.
    """

    schema_version: Literal[1]
    catalogue_version: str
    controls: list[Control]

    @model_validator(mode="after")
    def _unique(self) -> Catalogue:
        ids = [c.id for c in self.controls]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"control ids repeated: {', '.join(dupes)}")
        return self

    def control(self, cid: str) -> Control:
        """The control ``cid``.

        Raises:
            KeyError: no such control.
        """
        for c in self.controls:
            if c.id == cid:
                return c
        raise KeyError(cid)


def parse_catalogue(text: str, source: str = "catalogue.toml") -> Catalogue:
    """Validate a catalogue's TOML text.

    Raises:
        ConfigError: not TOML, or not a valid catalogue (every problem listed).
    """
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        return Catalogue.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        ]
        raise ConfigError(f"{source}: invalid control catalogue", problems) from None


@functools.cache
def load_catalogue(path: str | None = None) -> Catalogue:
    """The packaged catalogue (or the one at ``path``), parsed once.

    Raises:
        ConfigError: the file is unreadable or invalid.
    """
    if path is None:
        text = resources.files("bastion.governance").joinpath("catalogue.toml").read_text(encoding="utf-8")
        return parse_catalogue(text, "bastion/governance/catalogue.toml")
    text = read_config_text(path, what="control catalogue")
    return parse_catalogue(text, path)
