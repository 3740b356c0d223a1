"""``dicelab.memorization`` — random-label prediction heads: a memorization metric and a regulariser (spec 04).

Every training sample gets a fixed random label ŷ ∈ {0, …, n−1}. A small head reading an intermediate
representation learns to predict it; since ŷ carries no information about x, beating chance 1/n means the
representation carries sample-specific information (memorization). With λ > 0 the extractor is trained
to make the head fail (the regulariser).

Python API::

    from dicelab.memorization import RandomLabelBank, RLPHeads, run, sweep
    bank = RandomLabelBank(m, 100, generator=seeds.generator("memorization.bank"))
    rlp = RLPHeads(model, ["act3"], bank, generator=seeds.generator("memorization.heads"), example_input=x[:2])

A run config's ``[memorization]`` table (:class:`MemorizationConfig`) switches the heads on in any run.
"""

from __future__ import annotations

from typing import Any

from dicelab.memorization.config import DEFAULT_LAM_GRID, MemorizationConfig

__all__ = [
    "DEFAULT_LAM_GRID", "MemorizationConfig", "RandomLabelBank", "RLPHeads", "RLPOutput", "BatchStats",
    "MemorizationHook", "resolve_taps", "pool_features", "build_head", "module_names",
    "random_label_loss", "complement_penalty", "uniform_penalty", "grad_reverse",
    "chance", "chance_se", "z_score", "r_proxy",
    "fit_offline_probe", "capacity_floor", "ProbeResult",
    "run", "sweep", "regularizer_sweep", "depth_curve", "plot", "list_taps", "probe_run",
    "RunResult", "SweepResult", "DigitsCNN",
]

# The subpackage is imported by dicelab.config (for MemorizationConfig), so everything that needs torch
# loads on first use only.
_LAZY = {
    "RandomLabelBank": "bank",
    "RLPHeads": "heads", "RLPOutput": "heads", "BatchStats": "heads", "resolve_taps": "heads",
    "pool_features": "heads", "build_head": "heads", "module_names": "heads",
    "MemorizationHook": "hook",
    "random_label_loss": "losses", "complement_penalty": "losses", "uniform_penalty": "losses",
    "grad_reverse": "losses",
    "chance": "metrics", "chance_se": "metrics", "z_score": "metrics", "r_proxy": "metrics",
    "fit_offline_probe": "probe", "capacity_floor": "probe", "ProbeResult": "probe",
    "run": "experiments", "sweep": "experiments", "regularizer_sweep": "experiments",
    "depth_curve": "experiments", "list_taps": "experiments", "probe_run": "experiments",
    "RunResult": "experiments", "SweepResult": "experiments",
    "plot": "plots",
    "DigitsCNN": "models",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"dicelab.memorization.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'dicelab.memorization' has no attribute {name!r}")
