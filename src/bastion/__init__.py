"""Bastion: find, fix, guard and prove the security of machine-learning systems.

``import bastion`` is light: it imports neither torch, nor fastapi, nor sqlalchemy.
The use-cases live in :mod:`bastion.api` and load on first use::

    import bastion
    result = bastion.scan(["models/"])        # -> bastion.core.scanning.ScanResult
    report = bastion.assess("bastion.yaml")   # -> bastion.core.report.Report

``scan`` and ``assess`` are also the names of subpackages (:mod:`bastion.scan`,
:mod:`bastion.assess`); those package objects are made callable, delegating to
:func:`bastion.api.scan` and :func:`bastion.api.assess`, so both spellings keep working
whatever was imported first.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

_API = ("scan", "assess", "plan", "build_demo", "history", "show", "init_project")
_CALLABLE_PACKAGES = ("scan", "assess")


def _callable_package(name: str) -> types.ModuleType:
    """The subpackage ``bastion.<name>``, made callable as ``bastion.api.<name>``.

    ``inspect.signature`` gives the function's signature and ``help()`` (which documents any
    module as a module) starts with the function's docstring, then the package's: trial 25/30,
    ``help(bastion.assess)`` showed only the subpackage's one line and the signature was
    ``(*args, **kwargs)``.
    """
    mod = importlib.import_module(f"bastion.{name}")
    if not callable(mod):
        api = importlib.import_module("bastion.api")
        fn = getattr(api, name)
        package_doc = mod.__doc__ or ""

        def __call__(self: types.ModuleType, *args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        def signature(self: types.ModuleType) -> Any:
            import inspect

            return inspect.signature(fn)

        def doc(self: types.ModuleType) -> str:
            import inspect

            summary, _, rest = (inspect.getdoc(fn) or "").partition("\n")
            return (
                f"{summary}\n\nbastion.{name}{inspect.signature(fn)}\n\n"
                f"(bastion.api.{name}; bastion.{name} is also the package: {package_doc.strip()})\n"
                f"{rest}"
            )

        mod.__class__ = type(
            f"_{name}_package",
            (types.ModuleType,),
            {"__call__": __call__, "__signature__": property(signature), "__doc__": property(doc)},
        )
    return mod


class _Bastion(types.ModuleType):
    def __getattribute__(self, name: str) -> Any:
        if name in _CALLABLE_PACKAGES:
            return _callable_package(name)
        return super().__getattribute__(name)

    def __getattr__(self, name: str) -> Any:
        if name in _API:
            return getattr(importlib.import_module("bastion.api"), name)
        raise AttributeError(f"module 'bastion' has no attribute {name!r}")


sys.modules[__name__].__class__ = _Bastion

__all__ = ["__version__", *_API]
