"""Datasets: loading with recorded splits, validation and provenance (hashes)."""

from bastion.data.datasets import FORMATS, LoadedDataset, load_dataset, sha256_bytes

__all__ = ["FORMATS", "LoadedDataset", "load_dataset", "sha256_bytes"]
