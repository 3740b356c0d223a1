"""The ``[memorization]`` table as a training-engine hook.

The engine knows nothing about random labels; this hook plugs them in at its named points:

- ``wrap_model``: draws the random-label banks (``memorization.bank``, ``memorization.heldout``) and
  attaches the RLP heads (``memorization.heads``) by forward hooks — the model itself is not changed.
- ``attach``: the heads join the run's optimizer as their own param group (weight decay 0, the model's lr).
- ``on_epoch`` / ``on_batch``: the batch's dataset indices are the next ``plan.batch_size`` entries of
  ``plan.order`` (the engine's documented batching); the plan object is shared, so an order set later by
  another hook or by the engine itself is still the one read here.
- ``on_loss``: adds the per-sample L_rnd (ψ only) and λ·R (θ only) to the per-sample task loss, before the
  engine's reduction. With λ = 0 the added term has no path to the model, so training is bit-identical.
- ``on_grads``: clips the heads on their own when ``train.grad_clip`` is set (the engine clips the model).
- ``on_epoch_end``: adds ``metrics["memorization"]`` (one row per tap and label set) to the run record.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dicelab.errors import DicelabError
from dicelab.hooks import EpochPlan, Hook, StepState
from dicelab.memorization.bank import RandomLabelBank
from dicelab.memorization.config import MemorizationConfig
from dicelab.memorization.heads import RLPHeads
from dicelab.seeding import SeedBank

if TYPE_CHECKING:
    from dicelab.config import RunConfig, TrainConfig
    from dicelab.data import DataBundle, Split

__all__ = ["MemorizationHook", "heldout_split"]


def heldout_split(data: DataBundle, which: str) -> Split:
    """The split the held-out control reads: ``val``, ``test``, or ``auto`` (val if non-empty, else test)."""
    if which == "val" or (which == "auto" and len(data.val)):
        return data.val
    return data.test


def _targets_match(y: torch.Tensor, labels: torch.Tensor) -> bool:
    """Whether the batch targets ``y`` are the class ``labels`` the dataset indices give.

    Hard targets must be equal. Soft targets (B, K) from an earlier hook (label smoothing,
    ``(1−ε)·onehot + ε/K``) must put their unique largest mass on the labelled class; rows without a unique
    maximum (ε = 1 gives uniform rows) say nothing about the class and are skipped."""
    labels = labels.to(y.device)
    if y.dim() == 1:
        return torch.equal(y.to(labels.dtype), labels)
    if y.dim() != 2 or y.shape[0] != labels.shape[0]:
        return False
    top2 = y.topk(min(2, y.shape[1]), dim=1).values
    unique = top2[:, 0] > top2[:, -1] if y.shape[1] > 1 else torch.ones_like(labels, dtype=torch.bool)
    return bool((y.argmax(1) == labels)[unique].all())


class MemorizationHook(Hook):
    """RLP heads on a run, configured by a :class:`MemorizationConfig`.

    ``data`` is the run's :class:`~dicelab.data.DataBundle`; without it the hook loads the one the run
    config names (the embedded datasets are cached, so this is the engine's own tensors). Pass ``data``
    when training on data that the config does not describe.
    """

    def __init__(self, cfg: MemorizationConfig, seeds: SeedBank, device: torch.device | str = "cpu", *,
                 run_config: RunConfig | None = None, data: DataBundle | None = None) -> None:
        self.cfg, self.seeds, self.device = cfg, seeds, torch.device(device)
        self.run_config, self.data = run_config, data
        self.rlp: RLPHeads | None = None
        self.clip: float | None = None
        self._plan: EpochPlan | None = None
        self._pos = 0
        self._idx: torch.Tensor | None = None
        self._y: torch.Tensor | None = None
        self._checked_epoch = -1

    # -- setup -----------------------------------------------------------------------------------
    def configure(self, train: TrainConfig) -> TrainConfig:
        self.clip = train.grad_clip
        return train

    def _load_data(self) -> DataBundle:
        if self.data is None:
            if self.run_config is None:
                raise DicelabError("memorization: the hook needs data= or run_config= to know the training set")
            from dicelab.train.engine import load_data_for

            self.data = load_data_for(self.run_config)
        self.data = self.data.to(self.device)
        return self.data

    def wrap_model(self, model: nn.Module) -> nn.Module:
        cfg = self.cfg
        data = self._load_data()
        train = data.train
        bank = RandomLabelBank(len(train), cfg.num_labels, generator=self.seeds.generator("memorization.bank"),
                               mode=cfg.mode, per_class=cfg.per_class, targets=train.y.cpu(), num_sets=cfg.num_sets)
        held = None
        if cfg.heldout:
            split = heldout_split(data, cfg.heldout_split)
            if len(split):
                held = RandomLabelBank(len(split), cfg.num_labels,
                                       generator=self.seeds.generator("memorization.heldout"), mode=cfg.mode,
                                       per_class=cfg.per_class, targets=split.y.cpu(), num_sets=cfg.num_sets)
        lam: float | dict[str, float] = cfg.lam if isinstance(cfg.lam, float | int) else dict(cfg.lam)
        self.rlp = RLPHeads(model, cfg.taps, bank, generator=self.seeds.generator("memorization.heads"),
                            head=cfg.head, pool=cfg.pool, lam=lam, reg=cfg.reg, num_classes=data.num_classes,
                            rank=cfg.rank, example_input=train.x[:2], heldout_bank=held)
        if cfg.check_bank:
            bank.check_across_ranks()
        m = len(train)
        k = min(m, cfg.clean_subset or 10_000)
        # a fixed seeded subset when the training set is larger than the clean-accuracy budget
        self.subset = (None if k >= m else
                       torch.randperm(m, generator=self.seeds.generator("memorization.clean"))[:k].sort().values)
        self.model = model
        return model

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        (group,) = self.rlp.param_groups(lr=optimizer.param_groups[0]["lr"], weight_decay=0.0)
        optimizer.add_param_group(group)

    # -- training --------------------------------------------------------------------------------
    def on_epoch(self, state: StepState, plan: EpochPlan) -> None:
        self._plan, self._pos = plan, 0

    def on_batch(self, x: torch.Tensor, y: torch.Tensor, state: StepState) -> tuple[torch.Tensor, torch.Tensor]:
        plan = self._plan
        if plan is None or plan.order is None:
            raise DicelabError("memorization: a batch arrived before the epoch's order was known")
        idx = plan.order[self._pos:self._pos + plan.batch_size]
        self._pos += len(idx)
        if len(idx) != len(y):
            raise DicelabError(f"memorization: batch of {len(y)} samples but the epoch order gives {len(idx)}; "
                               "does another hook batch the data differently?")
        train_y = self.data.train.y
        if state.epoch != self._checked_epoch:
            # once per epoch: the indices must point at this very batch (same data, same batching)
            self._checked_epoch = state.epoch
            if len(plan.order) != len(train_y) or not _targets_match(y, train_y[idx.to(train_y.device)]):
                raise DicelabError("memorization: the trainer's training data differs from the hook's "
                                   "(pass data= to MemorizationHook)")
        self._idx = idx
        # per-class heads slice by the true class (not by a target another hook may have changed)
        self._y = train_y[idx.to(train_y.device)] if self.cfg.per_class else None
        return x, y

    def _lam_scale(self, state: StepState) -> float:
        w = self.cfg.lam_warmup_epochs
        if w <= 0:
            return 1.0
        progress = state.epoch + (self._pos / max(1, len(self._plan.order)))
        return min(1.0, progress / w)

    def on_loss(self, per_sample: torch.Tensor, state: StepState) -> torch.Tensor:
        out = self.rlp.losses(self._idx, self._y, lam_scale=self._lam_scale(state), reduction="none")
        # L_rnd reaches only ψ and λ·R only θ (see heads.py); a run with λ = 0 adds no path to the model
        return per_sample + out.rnd + out.reg if out.has_reg else per_sample + out.rnd

    def on_grads(self, params, state: StepState) -> None:
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(list(self.rlp.heads.parameters()), self.clip)

    def on_epoch_end(self, state: StepState, metrics: dict[str, Any]) -> None:
        cfg, data = self.cfg, self.data
        clean = cfg.clean_every > 0 and ((state.epoch + 1) % cfg.clean_every == 0 or state.epoch + 1 == state.epochs)
        held_split = heldout_split(data, cfg.heldout_split) if cfg.heldout else None
        rows = self.rlp.end_epoch(
            self.model, data.train.x if clean else None, held_split.x if held_split is not None else None,
            epoch=state.epoch, train_y=data.train.y, heldout_y=held_split.y if held_split is not None else None,
            subset=self.subset, extra={"lam_scale": self._lam_scale(state) if cfg.lam_warmup_epochs else 1.0})
        metrics["memorization"] = rows

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"rlp": self.rlp.state_dict(), "history": json.dumps(self.rlp.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rlp.load_state_dict(state["rlp"])
        self.rlp.history = json.loads(state["history"])
