"""Data-poisoning checks: the training-data health check (``poisoning.data-health``)."""

from bastion.assess.poisoning.data_health import DataHealthCheck, DataHealthParams

__all__ = ["DataHealthCheck", "DataHealthParams"]
