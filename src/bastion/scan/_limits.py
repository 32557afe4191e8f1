"""The scanner's hard limits (:class:`ScanLimits`), re-exported by :mod:`bastion.scan.base`.

A module of its own, without ``from __future__ import annotations``: a ``NamedTuple`` whose
annotations are strings makes :mod:`typing` compile each one (``ForwardRef``), and the first
``compile`` of a process costs ~10 million instructions (the parser's start-up), which every
``bastion scan`` paid before its first file. The scan path's other named tuples
(:mod:`bastion.core.atlas`, :mod:`bastion.scan.policy`, :mod:`bastion.scan.savedmodel_scanner`)
are written the same way; ``tests/scan/test_scan_cli_startup.py`` checks that a scan compiles
nothing.
"""

from typing import NamedTuple

__all__ = ["ScanLimits"]


class ScanLimits(NamedTuple):
    """Hard limits of one scan, per top-level file.

    Attributes:
        max_decompressed_bytes: bytes extracted from containers and compressed streams, in all.
        max_ratio: largest expansion ratio accepted (decompressed / compressed) once more than
            ``ratio_floor`` bytes came out of one stream.
        ratio_floor: bytes below which the ratio is not checked (zeros compress very well).
        max_depth: container nesting (a zip in a tar in a gzip is depth 3).
        max_members: members of one archive.
        max_nested_pickles: payloads passed to loaders (``pickle.loads(b'...')``) scanned per file.
        max_value_bytes: largest ``bytes``/``str`` a pickle value may hold in memory.
        spool_memory: decompressed bytes kept in memory before spilling to a temporary file.
        max_seconds: wall-clock seconds one top-level file may take (``None``: no limit); a file
            still being scanned then is an ``error`` (findings made so far are kept). Checked
            between container members, while spooling and every few thousand pickle opcodes.
    """

    max_decompressed_bytes: int = 4 << 30
    max_ratio: float = 1000.0
    ratio_floor: int = 64 << 20
    max_depth: int = 8
    max_members: int = 100_000
    max_nested_pickles: int = 64
    max_value_bytes: int = 8 << 20
    spool_memory: int = 32 << 20
    max_seconds: float | None = 120.0
