"""Bastion: find, fix, guard and prove the security of machine-learning systems.

``import bastion`` is light: it imports neither torch, nor fastapi, nor sqlalchemy.
The use-cases (``scan``, ``assess`` …) live in :mod:`bastion.api` and load lazily.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("scan", "assess", "build_demo", "history", "show", "init_project")


def __getattr__(name: str) -> Any:
    if name in _API:
        from bastion import api

        return getattr(api, name)
    raise AttributeError(f"module 'bastion' has no attribute {name!r}")


__all__ = ["__version__", *_API]
