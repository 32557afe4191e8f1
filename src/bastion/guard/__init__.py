"""The runtime guard: a FastAPI service that stands in front of a model and defends it.

One control per module: :mod:`~bastion.guard.access` (scoped keys), :mod:`~bastion.guard.limits`
(token bucket, daily budget), :mod:`~bastion.guard.validation` (learned input profile),
:mod:`~bastion.guard.anomaly` (OOD and output drift), :mod:`~bastion.guard.extraction`
(per-key and cross-key extraction detection), :mod:`~bastion.guard.canary`,
:mod:`~bastion.guard.response` (graded response, breakers, degraded mode),
:mod:`~bastion.guard.audit` (records, webhooks), :mod:`~bastion.guard.metrics`;
:mod:`~bastion.guard.app` composes them (``create_app``). Importing this package is light:
FastAPI, prometheus-client and the store load only when an app is built.
"""

from __future__ import annotations

__all__: list[str] = []
