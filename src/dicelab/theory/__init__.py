"""``dicelab.theory`` — noisy gradient descent near a zero-loss manifold (spec 03).

Given a loss whose minimisers form a manifold Γ and a noise-injection mechanism, compute the implicit regulariser
Reg(w) = ½ Δ_η L̂(w, 0), decide the slow regime (``classify``), integrate the predicted limit on Γ (``limit``),
simulate the real noisy recursion for thousands of seeds at once (``simulate``) and compare both in rescaled time.
"""

from dicelab.theory.errors import RetractionError, SimulationDiverged, TheoryWarning
from dicelab.theory.limit import Trajectory, limit, limit_flow, limit_sde
from dicelab.theory.manifold import Spectrum, ZeroLossSet
from dicelab.theory.noise import anti_pgd, dropconnect, dropout, label_noise, minibatch, sgld, weight_noise
from dicelab.theory.objective import Loss, NoisyObjective, SquaredLoss, make_objective
from dicelab.theory.reg import (
    Classification,
    JacobianOp,
    RegEstimate,
    classify,
    grad_reg,
    noise_jacobian,
    reg,
)
from dicelab.theory.simulate import Comparison, SimResult, compare, gradient_descent, simulate
from dicelab.theory.timescale import SweepResult, alpha_sweep, sigma_sweep, steps_for, tau_of

__all__ = [
    "Classification", "Comparison", "JacobianOp", "Loss", "NoisyObjective", "RegEstimate", "RetractionError",
    "SimResult", "SimulationDiverged", "Spectrum", "SquaredLoss", "SweepResult", "TheoryWarning", "Trajectory",
    "ZeroLossSet", "alpha_sweep", "anti_pgd", "classify", "compare", "dropconnect", "dropout", "grad_reg",
    "gradient_descent", "label_noise", "limit", "limit_flow", "limit_sde", "make_objective", "minibatch",
    "noise_jacobian", "reg", "sgld", "sigma_sweep", "simulate", "steps_for", "tau_of", "weight_noise",
]


def __getattr__(name: str):
    # experiments pull in plotting; load them on first use only
    if name in ("EXPERIMENTS", "run_experiment", "Experiment", "ExperimentResult"):
        from dicelab.theory import experiments

        return getattr(experiments, name)
    raise AttributeError(name)
