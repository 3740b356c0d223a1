"""The calibrated experiments E1–E6 of spec 03 §13 (fast settings = test suite, full = benchmarks)."""

# registration order is the listing order: E1, E2 (toy2d), E3, E4, E5, E6
from dicelab.theory.experiments import toy2d  # noqa: F401, I001
from dicelab.theory.experiments import e3, e4e5, e6  # noqa: F401, I001
from dicelab.theory.experiments._base import (
    EXPERIMENTS,
    Check,
    Experiment,
    ExperimentResult,
    load_result,
    run_experiment,
)

__all__ = ["EXPERIMENTS", "Check", "Experiment", "ExperimentResult", "load_result", "run_experiment"]
