"""The per-record exposure table of membership results: the most exposed training records, by index.

Every membership-inference attack (``membership.*`` except attribute inference) cites the
training records it scores highest — the records it is most confident were trained on — by
their dataset row index (``notes["exposed_records"]``, and in a finding's evidence
``exposed_records``: integers, or for ``membership.threshold`` objects with ``index`` and
``nonmember_fraction_at_or_above``). This module merges them per asset into one table: a
record cited by several attacks, near the top of each, is the most exposed. Only indices and
ranks are shown; a record's values never reach the report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bastion.core.findings import Finding
from bastion.core.results import CheckResult

#: Membership checks whose exposed records are *not* membership exposure (a recovered feature).
_NOT_MEMBERSHIP = frozenset({"membership.attribute-inference"})
_INT = re.compile(r"-?\d+")
#: Rows shown per asset.
MAX_ROWS = 20


@dataclass
class ExposureRow:
    """One training record: its dataset row and its rank (1 = most exposed) in each citing attack."""

    index: int
    ranks: dict[str, int] = field(default_factory=dict)
    nonmember_fraction: float | None = None

    @property
    def cited(self) -> int:
        """How many attacks cite the record."""
        return len(self.ranks)

    @property
    def best_rank(self) -> int:
        """Its best (lowest) rank over the attacks that cite it."""
        return min(self.ranks.values())


@dataclass
class ExposureTable:
    """The exposure table of one asset.

    Attributes:
        attacks: the membership checks that cited records, in report order.
        rows: at most :data:`MAX_ROWS` records, the most exposed first (cited by most attacks,
            then best rank, then lowest index).
        total: how many distinct records were cited (``len(rows)`` before truncation).

    A row's ``nonmember_fraction`` (``membership.threshold`` reports it) is the share of the
    held-out non-members whose score is at or above the record's: near 0, the record stands out.
    """

    attacks: list[str]
    rows: list[ExposureRow]
    total: int

    @property
    def has_fraction(self) -> bool:
        """Whether any row carries the fraction of non-members scoring at or above it."""
        return any(r.nonmember_fraction is not None for r in self.rows)


def _from_evidence(items: Sequence[Any]) -> list[tuple[int, float | None]]:
    out: list[tuple[int, float | None]] = []
    for item in items:
        if isinstance(item, bool):
            continue
        if isinstance(item, int):
            out.append((item, None))
        elif isinstance(item, dict) and isinstance(item.get("index"), int):
            frac = item.get("nonmember_fraction_at_or_above")
            out.append((int(item["index"]), float(frac) if isinstance(frac, (int, float)) else None))
    return out


def _from_note(note: str) -> list[tuple[int, float | None]]:
    """Indices listed after the note's last colon (``"... highest score: 3, 17, 42"``)."""
    _, sep, tail = note.rpartition(":")
    return [(int(m), None) for m in _INT.findall(tail)] if sep else []


def exposed_records(check: CheckResult, findings: Iterable[Finding]) -> list[tuple[int, float | None]]:
    """The records ``check`` cites as most exposed, in its order: ``(row index, non-member fraction)``.

    A finding of the check (same asset, ``rule_id`` under the check id) with ``exposed_records``
    evidence is preferred; otherwise the indices listed in ``notes["exposed_records"]``.
    """
    for f in findings:
        if f.asset == check.asset and f.rule_id.startswith(check.id + "."):
            items = f.evidence.get("exposed_records")
            if isinstance(items, list) and items:
                return _from_evidence(items)
    note = check.notes.get("exposed_records")
    return _from_note(note) if note else []


def exposure_table(
    checks: Sequence[CheckResult], findings: Sequence[Finding], *, max_rows: int = MAX_ROWS
) -> ExposureTable | None:
    """Merge the exposed records of one asset's membership checks (``None`` when none cites any).

    Args:
        checks: the asset's check results (non-membership and unsuccessful ones are ignored).
        findings: the asset's findings (their ``exposed_records`` evidence).
        max_rows: rows kept.
    """
    attacks: list[str] = []
    rows: dict[int, ExposureRow] = {}
    for c in checks:
        if c.status != "ok" or not c.id.startswith("membership.") or c.id in _NOT_MEMBERSHIP:
            continue
        cited = exposed_records(c, findings)
        if not cited:
            continue
        attacks.append(c.id)
        for rank, (index, frac) in enumerate(cited, start=1):
            row = rows.setdefault(index, ExposureRow(index=index))
            row.ranks.setdefault(c.id, rank)
            if frac is not None:
                row.nonmember_fraction = (
                    frac if row.nonmember_fraction is None else min(row.nonmember_fraction, frac)
                )
    if not rows:
        return None
    ordered = sorted(rows.values(), key=lambda r: (-r.cited, r.best_rank, r.index))
    return ExposureTable(attacks=attacks, rows=ordered[:max_rows], total=len(ordered))


__all__ = ["MAX_ROWS", "ExposureRow", "ExposureTable", "exposed_records", "exposure_table"]
