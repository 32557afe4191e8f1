"""Findings: the one vocabulary every scanner, attack, detector, guard and policy speaks."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.core._threat import Threat as Threat  # defined without pydantic (see its module)
from bastion.core.redact import redact_url
from bastion.core.severity import Severity


class Location(BaseModel):
    """Where a finding is; only the fields that apply are set.

    Attributes:
        path: file path (as given by the user, or relative to the project).
        member: member inside a container (``archive/data.pkl``).
        offset: byte offset inside the member or file.
        endpoint: URL of an HTTP endpoint, with its credentials masked
            (:func:`bastion.core.redact.redact_url`: a finding never carries a password or token).
        index: row or sample index in a dataset.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = None
    member: str | None = None
    offset: int | None = Field(default=None, ge=0)
    endpoint: str | None = None
    index: int | None = Field(default=None, ge=0)

    @field_validator("endpoint")
    @classmethod
    def _redacted(cls, v: str | None) -> str | None:
        return redact_url(v)


class Finding(BaseModel):
    """One problem, reported by any part of Bastion.

    ``rule_id`` is ``<plugin id>.<condition>``, e.g. ``scan.pickle.denied-global``.
    ``atlas`` holds MITRE ATLAS technique ids (``AML.T0011.000``).
    """

    model_config = ConfigDict(extra="forbid")

    rule_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)+$")
    severity: Severity
    threat: Threat
    title: str
    asset: str | None = None
    location: Location = Field(default_factory=Location)
    evidence: dict[str, Any] = Field(default_factory=dict)
    atlas: list[str] = Field(default_factory=list)
    remediation: str = ""
    references: list[str] = Field(default_factory=list)

    @field_validator("atlas")
    @classmethod
    def _atlas_ids(cls, value: list[str]) -> list[str]:
        for tid in value:
            if not tid.startswith("AML.T"):
                raise ValueError(f"not a MITRE ATLAS technique id: {tid!r}")
        return value

    def compute_fingerprint(self) -> str:
        """A stable id of (rule, asset, location), for comparing runs. Hex SHA-256, 16 chars."""
        key = json.dumps(
            [self.rule_id, self.asset, self.location.model_dump(exclude_none=True)],
            sort_keys=True,
        )
        return hashlib.sha256(key.encode()).hexdigest()[:16]
