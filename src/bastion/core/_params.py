""":class:`NoParams`, the parameters of a plugin that takes none (a pydantic model).

Public as ``bastion.core.registry.NoParams``; kept apart so that importing the registry (every
scanner does) does not import pydantic.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class NoParams(BaseModel):
    """Parameters of a plugin that takes none."""

    model_config = ConfigDict(extra="forbid")
