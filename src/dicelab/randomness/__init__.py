"""The randomness catalog (spec 01): 22 techniques in four levels, each drawing from its own generator.

>>> from dicelab.randomness import RandomnessConfig, build, techniques
>>> [t.name for t in techniques("data")]
['shuffle', 'flip', 'rotation', 'zoom', 'translation', 'contrast', 'input_noise', 'label_smoothing']
>>> cfg = RandomnessConfig(loss_noise=0.1, gradient_dropout={"p": 0.1})
>>> cfg.active()
['loss_noise', 'gradient_dropout']

In a run config the same is a ``[randomness]`` table; ``dicelab train`` applies it.
"""

from dicelab.randomness.base import Context, Knob, Level, Technique
from dicelab.randomness.config import AugmentOptions, RandomnessConfig
from dicelab.randomness.optimization import annealed_sigma, rescale_schedule, schedule_period
from dicelab.randomness.registry import HOOK_ORDER, TECHNIQUES, technique, technique_names, techniques
from dicelab.randomness.techniqueset import TechniqueSet, build, plain_module

__all__ = ["Level", "Knob", "Technique", "Context", "RandomnessConfig", "AugmentOptions", "TechniqueSet", "build",
           "plain_module", "techniques", "technique", "technique_names", "TECHNIQUES", "HOOK_ORDER",
           "annealed_sigma", "schedule_period", "rescale_schedule"]
