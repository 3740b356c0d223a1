"""Errors and warnings of the singular-limit lab."""

from __future__ import annotations

from dicelab.errors import DicelabError

__all__ = ["RetractionError", "SimulationDiverged", "TheoryWarning"]


class RetractionError(DicelabError):
    """Gauss–Newton / Newton retraction onto Γ did not converge; the message names chain and residual."""

    exit_code = 1


class SimulationDiverged(DicelabError):
    """A simulated chain became non-finite or left every bounded region (‖w‖ > 1e6)."""

    exit_code = 1


class TheoryWarning(UserWarning):
    """A validity condition of the singular limit is violated (dicelab warns, never refuses)."""
