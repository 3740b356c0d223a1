"""``dicelab.symmetry`` — permutation redundancy and the uncertainty of the objective (spec 06).

Count the permutation-equivalent copies of a network (:func:`count_equivalent`), map every copy to one
canonical representative (:func:`canonicalize`), align one model to another (:func:`weight_matching`,
:func:`activation_matching`), measure loss/error barriers along linear paths before and after alignment
(:func:`barrier`, with BatchNorm reset and REPAIR), and measure the curvature and gradient noise of the
objective along the top Hessian directions against the SGD and sample-size predictions
(:func:`sgd_stationary_test`, :func:`bootstrap_minimizer_test`). The symmetry-breaking models live in
:mod:`dicelab.models` (``prepruned_mlp``, ``orthopoly_mlp``, ``modular_mlp``).
"""

from dicelab.symmetry.canonical import canonicalize, dedup
from dicelab.symmetry.count import CountResult, count_equivalent
from dicelab.symmetry.curvature import (
    FlatObjective,
    NoiseProjection,
    Spectrum,
    TraceResult,
    grad_noise_projection,
    hessian_topk,
    hutchinson_trace,
    minibatch_loss_variance,
    minimize_full_batch,
)
from dicelab.symmetry.errors import CheckpointError, SymmetryError, SymmetryWarning, UnsupportedModuleError
from dicelab.symmetry.interp import BarrierResult, barrier, fold_bn, interpolate, repair, reset_bn_stats
from dicelab.symmetry.match import MatchInfo, activation_matching, align, weight_matching
from dicelab.symmetry.spec import (
    AxisRef,
    Group,
    GroupElement,
    PermSpec,
    apply_group,
    apply_state,
    random_group_element,
)
from dicelab.symmetry.uncertainty import UncertaintyTable, bootstrap_minimizer_test, sgd_stationary_test

__all__ = [
    "AxisRef", "BarrierResult", "CheckpointError", "CountResult", "FlatObjective", "Group", "GroupElement",
    "MatchInfo", "NoiseProjection", "PermSpec", "Spectrum", "SymmetryError", "SymmetryWarning", "TraceResult",
    "UncertaintyTable", "UnsupportedModuleError", "activation_matching", "align", "apply_group", "apply_state",
    "barrier", "bootstrap_minimizer_test", "canonicalize", "count_equivalent", "dedup", "fold_bn",
    "grad_noise_projection", "hessian_topk", "hutchinson_trace", "interpolate", "minibatch_loss_variance",
    "minimize_full_batch", "random_group_element", "repair", "reset_bn_stats", "sgd_stationary_test",
    "weight_matching",
]
