"""``TechniqueSet``: the active techniques of one run, called at the engine's hook points in the fixed order
of spec 01 §3, and :func:`build`, which makes one from a ``[randomness]`` table.

Off means off (R2): a technique at its off value is never instantiated, so it wraps nothing, hooks nothing
and draws nothing; with every technique off :func:`build` returns a set that uses no hook point at all.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from dicelab.errors import ConfigError
from dicelab.hooks import HOOK_POINTS, Hook, StepState
from dicelab.models import model_sites
from dicelab.randomness import augment
from dicelab.randomness.base import Context, Technique
from dicelab.randomness.data import AffineTechnique
from dicelab.randomness.registry import HOOK_ORDER, technique, technique_names
from dicelab.seeding import SeedBank

__all__ = ["TechniqueSet", "build", "plain_module"]


def build(cfg, seeds: int | SeedBank, device: torch.device | str = "cpu", trace: bool = False, *,
          num_classes: int | None = None, input_shape: Sequence[int] | None = None,
          num_train: int | None = None) -> TechniqueSet:
    """The :class:`TechniqueSet` of ``cfg`` (a ``RandomnessConfig``): each active technique with its own
    generator, ``randomness.<name>`` derived from the root seed (or from ``[randomness.seeds] <name>``).

    ``num_classes``, ``input_shape`` and ``num_train`` describe the data (label smoothing, augmentation and
    shuffle need them); the engine passes them from the loaded dataset.
    """
    bank = seeds if isinstance(seeds, SeedBank) else SeedBank(int(seeds))
    for name, seed in cfg.seeds.items():
        bank.overrides[f"randomness.{name}"] = seed
    device = torch.device(device)
    ctx = Context(device=device, preset=cfg.preset, num_classes=num_classes, num_train=num_train,
                  **cfg.augment_options())
    chosen: list[Technique] = []
    for name in cfg.active():
        cls = technique(name)
        if cls.needs_images and input_shape is not None and len(input_shape) != 3:
            raise ConfigError(f"randomness.{name}: needs image inputs (C, H, W); this dataset's inputs have "
                              f"shape {tuple(input_shape)}")
        chosen.append(cls(cfg.resolved(name), bank.generator(f"randomness.{name}", device), context=ctx,
                          trace=trace))
    return TechniqueSet(chosen, ctx)


class TechniqueSet(Hook):
    """Active techniques, one method per hook point. In the engine it is a :class:`~dicelab.hooks.Hook`;
    in a loop of your own call :meth:`attach` once and the per-step hooks run from the optimizer."""

    def __init__(self, techniques: Sequence[Technique], context: Context) -> None:
        self.techniques = sorted(techniques, key=lambda t: t.paper_index)
        self.context = context
        self.by_name = {t.name: t for t in self.techniques}
        self._at: dict[str, list[Technique]] = {
            point: [self.by_name[n] for n in order if n in self.by_name and self.by_name[n].uses(point)]
            for point, order in HOOK_ORDER.items()
        }
        self._parametrized = False
        self._own_state: StepState | None = None

    def __len__(self) -> int:
        return len(self.techniques)

    def __repr__(self) -> str:
        return f"TechniqueSet({', '.join(t.name for t in self.techniques)})"

    @property
    def trace(self) -> dict[str, dict[str, torch.Tensor] | None]:
        return {t.name: t.trace for t in self.techniques}

    def uses(self, point: str) -> bool:
        if not self.techniques or point == "attach":
            return False  # attach is for loops of your own; the engine calls the step hooks itself
        if point in ("wrap_model", "unwrap", "configure"):
            return True   # sites, bound tensors, b0 and the plain view need these whenever anything is on
        return bool(self._at.get(point))

    # -- set-up ----------------------------------------------------------------------------------------
    def configure(self, train):
        for t in self._at["configure"]:
            train = t.configure(train)
        self.context.base_batch_size = train.batch_size
        return train

    def wrap_model(self, model: nn.Module) -> nn.Module:
        ctx = self.context
        ctx.model, ctx.sites = model, model_sites(model)
        for t in self._at["wrap_model"]:
            model = t.wrap_model(model)
            ctx.model = model
        self._parametrized = any(parametrize.is_parametrized(m) for m in model.modules())
        params = [p for p in model.parameters() if p.requires_grad]
        for t in self.techniques:
            t.bind(params)
        return model

    def unwrap(self, model: nn.Module) -> nn.Module:
        return plain_module(model) if self._parametrized else model

    # -- training ----------------------------------------------------------------------------------------
    def on_epoch(self, state, plan) -> None:
        for t in self._at["on_epoch"]:
            t.on_epoch(state, plan)

    def on_batch(self, x, y, state):
        affine: dict[str, torch.Tensor] = {}
        for t in self._at["on_batch"]:
            if isinstance(t, AffineTechnique):  # rotation, zoom, translation: drawn apart, applied together
                affine[t.part] = t.draw(x.shape[0], x.device)
                continue
            if affine:
                x, affine = self._apply_affine(x, affine), {}
            x, y = t.on_batch(x, y, state)
        if affine:
            x = self._apply_affine(x, affine)
        return x, y

    def _apply_affine(self, x, params):
        return augment.apply_affine(x, **params, resample=self.context.resample, padding=self.context.padding)

    def on_loss(self, per_sample, state):
        for t in self._at["on_loss"]:
            per_sample = t.on_loss(per_sample, state)
        return per_sample

    def on_grads(self, params, state) -> None:
        for t in self._at["on_grads"]:
            t.on_grads(params, state)

    def before_step(self, params, state) -> None:
        for t in self._at["before_step"]:
            t.before_step(params, state)

    def after_step(self, params, state) -> None:
        for t in self._at["after_step"]:
            t.after_step(params, state)

    # -- loops of your own ---------------------------------------------------------------------------------
    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Run on_grads + before_step as an optimizer step pre-hook and after_step as a post-hook, with ``t``
        counting this optimizer's steps (the engine does not use this: it calls the hooks itself)."""
        state = self._own_state = StepState(epoch=0, epochs=1, step=0, batch_size=0, lr=0.0)

        def params_of(opt):
            return [p for g in opt.param_groups for p in g["params"]]

        def pre(opt, args, kwargs):
            self.on_grads(params_of(opt), state)
            self.before_step(params_of(opt), state)

        def post(opt, args, kwargs):
            state.step += 1
            self.after_step(params_of(opt), state)

        optimizer.register_step_pre_hook(pre)
        optimizer.register_step_post_hook(post)

    # -- resume ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {t.name: t.state_dict() for t in self.techniques}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if set(state) != set(self.by_name):
            raise ConfigError(f"checkpoint holds randomness state for {sorted(state)}, this run has "
                              f"{sorted(self.by_name)}")
        for name, s in state.items():
            self.by_name[name].load_state_dict(s)


_FORWARD_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                       "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs")


def plain_module(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s module tree without parametrizations or forward hooks that shares every parameter
    and buffer with ``model``: its ``state_dict`` has the plain keys (``fc1.weight``), and loading a state dict
    into it loads into ``model``'s tensors."""
    memo: dict[int, Any] = {id(t): t for t in (*model.parameters(), *model.buffers())}
    for m in model.modules():
        if parametrize.is_parametrized(m):
            for plist in m.parametrizations.values():
                for q in plist:
                    memo[id(q)] = q   # shared, never copied (they refer to their technique and generator)
    saved = []
    for m in model.modules():
        saved.append({k: getattr(m, k) for k in _FORWARD_HOOK_DICTS if hasattr(m, k)})
        for k in saved[-1]:
            setattr(m, k, OrderedDict())
    try:
        clone = copy.deepcopy(model, memo)
    finally:
        for m, hooks in zip(model.modules(), saved, strict=True):
            for k, v in hooks.items():
                setattr(m, k, v)
    # parametrize.remove_parametrizations would edit the generated class, which the copy shares with
    # ``model``; instead the copy gets the plain class back and the original tensors as its parameters.
    for m in [m for m in clone.modules() if parametrize.is_parametrized(m)]:
        plists = m._modules.pop("parametrizations")
        m.__class__ = type(m).__bases__[0]
        # parametrized tensors first, as in the plain layers (weight before bias)
        m._parameters = OrderedDict([*((n, p.original) for n, p in plists.items()), *m._parameters.items()])
    return clone


assert set(HOOK_ORDER) <= set(HOOK_POINTS)
assert all(n in technique_names() for order in HOOK_ORDER.values() for n in order)
