"""The hook protocol, re-exported where the engine's users look for it (it lives in :mod:`dicelab.hooks`,
outside this package, so that subpackages defining hooks do not import the engine)."""

from dicelab.hooks import HOOK_POINTS, EpochPlan, Hook, HookList, StepState

__all__ = ["StepState", "EpochPlan", "Hook", "HookList", "HOOK_POINTS"]
