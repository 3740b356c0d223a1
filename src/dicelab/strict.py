"""The base class of every config section, kept apart from :mod:`dicelab.config` so that a subpackage can
define its own section (``[randomness]``, ``[memorization]``) without importing the run config it joins."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel"]


class StrictModel(BaseModel):
    """Base for every config section: unknown fields are errors; assignments are validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
