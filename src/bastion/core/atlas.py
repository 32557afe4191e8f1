"""MITRE ATLAS techniques, from the ATLAS data shipped in the package (Apache-2.0, v5.6.0)."""

import functools
from typing import NamedTuple


class Technique(NamedTuple):
    """One ATLAS technique or sub-technique."""

    id: str
    name: str

    @property
    def url(self) -> str:
        """The technique's page on atlas.mitre.org."""
        return f"https://atlas.mitre.org/techniques/{self.id}"


@functools.cache
def _data() -> tuple[str, dict[str, Technique]]:
    from importlib import resources  # here: its import costs every `bastion scan` ~5 ms

    import yaml

    text = resources.files("bastion.core").joinpath("data/ATLAS.yaml").read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    matrix = doc["matrices"][0]
    techniques = {t["id"]: Technique(t["id"], t["name"]) for t in matrix["techniques"]}
    return str(doc.get("version", "")), techniques


def version() -> str:
    """Version of the shipped ATLAS data (e.g. ``5.6.0``)."""
    return _data()[0]


def technique(tid: str) -> Technique:
    """The technique with id ``tid``.

    Raises:
        KeyError: ``tid`` is not in the shipped ATLAS data.
    """
    return _data()[1][tid]


def is_known(tid: str) -> bool:
    """Whether ``tid`` is an ATLAS technique id in the shipped data."""
    return tid in _data()[1]


# Technique ids Bastion maps its threats to (all present in ATLAS 5.6.0; tested).
UNSAFE_ARTIFACTS = "AML.T0011.000"
SUPPLY_CHAIN_MODEL = "AML.T0010.003"
SUPPLY_CHAIN_DATA = "AML.T0010.002"
EVADE_MODEL = "AML.T0015"
CRAFT_ADVERSARIAL = "AML.T0043"
POISON_TRAINING_DATA = "AML.T0020"
BACKDOOR_TRIGGER = "AML.T0043.004"
INFER_MEMBERSHIP = "AML.T0024.000"
EXTRACT_MODEL = "AML.T0024.002"
PROXY_VIA_REPLICATION = "AML.T0005.001"
INFERENCE_API_ACCESS = "AML.T0040"
MANIPULATE_MODEL = "AML.T0018"
ERODE_DATASET_INTEGRITY = "AML.T0059"
