"""Backdoor detectors on a trained model's internal representations (choosable layer).

Importing this package registers ``detect.activation-clustering``,
``detect.spectral-signatures`` and ``detect.spectre``; torch and scikit-learn load only when a detector runs.
"""

from bastion.detect.poisoning.activation_clustering import (
    ActivationClusteringDetector,
    ActivationClusteringParams,
)
from bastion.detect.poisoning.base import RepresentationDetector, robust_z
from bastion.detect.poisoning.representations import default_layer, extract_representations, layer_names
from bastion.detect.poisoning.spectral import SpectralParams, SpectralSignatureDetector
from bastion.detect.poisoning.spectre import SpectreDetector, SpectreParams

__all__ = [
    "ActivationClusteringDetector",
    "ActivationClusteringParams",
    "RepresentationDetector",
    "SpectralParams",
    "SpectralSignatureDetector",
    "SpectreDetector",
    "SpectreParams",
    "default_layer",
    "extract_representations",
    "layer_names",
    "robust_z",
]
