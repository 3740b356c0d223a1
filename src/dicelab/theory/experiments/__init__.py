"""The calibrated experiments E1–E6 of spec 03 §13 (fast settings = test suite, full = benchmarks)."""

from dicelab.theory.experiments import e3, e4e5, e6, toy2d  # noqa: F401  (registers E1-E6)
from dicelab.theory.experiments._base import (
    EXPERIMENTS,
    Check,
    Experiment,
    ExperimentResult,
    load_result,
    run_experiment,
)

__all__ = ["EXPERIMENTS", "Check", "Experiment", "ExperimentResult", "load_result", "run_experiment"]
