"""Errors and warnings of ``dicelab.symmetry``."""

from __future__ import annotations

from dicelab.errors import DicelabError

__all__ = ["SymmetryError", "UnsupportedModuleError", "CheckpointError", "SymmetryWarning"]


class SymmetryError(DicelabError):
    """A symmetry operation cannot be done on this input (one line, names the module, group or file)."""

    exit_code = 2


class UnsupportedModuleError(SymmetryError):
    """``PermSpec.from_module`` met a module or operation it cannot describe."""


class CheckpointError(SymmetryError):
    """A checkpoint is unreadable, refused by ``weights_only``, incomplete, or does not fit the model."""


class SymmetryWarning(UserWarning):
    """A result is valid but weaker than it looks (dense count of learnable structure, interpolated BN stats)."""
