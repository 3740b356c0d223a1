"""Offline probe and capacity floor (spec 04 §7): how much of a random labelling a fresh head can fit.

The probe freezes the model, caches the tap features once and trains a new head to convergence (full
batch, Adam by default). It is post-hoc and never a regulariser. :func:`capacity_floor` runs the same probe
on i.i.d. N(0, 1) features of the same size: what the head alone fits without any input structure —
print it beside every probe result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dicelab.errors import ConfigError
from dicelab.memorization.bank import RandomLabelBank
from dicelab.memorization.heads import (
    HeadFactory,
    PoolFn,
    build_head,
    module_names,
    pool_features,
    resolve_taps,
)

__all__ = ["ProbeResult", "fit_offline_probe", "capacity_floor", "tap_features", "fit_head"]


@dataclass
class ProbeResult:
    """Train (and held-out) RLP accuracy of an offline head, with its loss curve."""

    train_acc: float
    heldout_acc: float | None
    losses: list[float] = field(default_factory=list)
    d: int = 0
    n: int = 0
    m: int = 0
    head_params: int = 0

    def to_json(self) -> dict:
        return {"train_acc": self.train_acc, "heldout_acc": self.heldout_acc, "d": self.d, "n": self.n, "m": self.m,
                "head_params": self.head_params, "final_loss": self.losses[-1] if self.losses else None}


@torch.no_grad()
def tap_features(model: nn.Module, tap: str, x: Tensor, *, pool: str | PoolFn = "auto",
                 batch_size: int = 1024) -> Tensor:
    """Pooled features (m, d) of ``x`` at ``tap``, from eval-mode forwards (the model is left as it was)."""
    (t,) = resolve_taps(model, [tap])
    module = module_names(model)[t.name]
    chunks: list[Tensor] = []

    def grab(mod, args, output):
        a = args[0] if t.kind == "input" else (output[0] if isinstance(output, (tuple, list)) else output)
        chunks.append(pool_features(a, pool).detach())

    handle = module.register_forward_hook(grab)
    was = model.training
    model.eval()
    try:
        for start in range(0, len(x), batch_size):
            model(x[start:start + batch_size])
    finally:
        model.train(was)
        handle.remove()
    return torch.cat(chunks)


def fit_head(features: Tensor, labels: Tensor, n: int, *, generator: torch.Generator,
             head: str | HeadFactory = "linear", epochs: int = 300, lr: float = 1e-2, optimizer: str = "adam",
             batch_size: int | None = None, heldout: tuple[Tensor, Tensor] | None = None) -> ProbeResult:
    """Train a fresh head on fixed ``features`` (m, d) to predict ``labels`` (m,) in {0..n−1}."""
    if features.dim() != 2 or len(features) != len(labels):
        raise ValueError(f"fit_head: features {tuple(features.shape)} and labels {tuple(labels.shape)} do not match")
    m, d = features.shape
    h = build_head(head, d, n, generator).to(features.device)
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(h.parameters(), lr=lr)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(h.parameters(), lr=lr, momentum=0.9)
    else:
        raise ConfigError(f"probe optimizer: unknown {optimizer!r} (adam, sgd)")
    bs = m if batch_size is None else batch_size
    losses: list[float] = []
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(m, generator=generator).to(features.device) if bs < m else None
            total = torch.zeros((), device=features.device)
            for start in range(0, m, bs):
                sel = slice(start, start + bs) if order is None else order[start:start + bs]
                loss = F.cross_entropy(h(features[sel]), labels[sel])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total = total + loss.detach() * (min(start + bs, m) - start)
            losses.append(total / m)
    with torch.no_grad():
        train_acc = float((h(features).argmax(dim=1) == labels).float().mean())
        held_acc = None
        if heldout is not None and len(heldout[0]):
            held_acc = float((h(heldout[0]).argmax(dim=1) == heldout[1]).float().mean())
    return ProbeResult(train_acc, held_acc, [float(v) for v in torch.stack(losses).tolist()], d, n, m,
                       sum(p.numel() for p in h.parameters()))


def fit_offline_probe(model: nn.Module, tap: str, train_data: Tensor, bank: RandomLabelBank, *,
                      generator: torch.Generator, head: str | HeadFactory = "linear", epochs: int = 300,
                      lr: float = 1e-2, optimizer: str = "adam", batch_size: int | None = None,
                      heldout: tuple[Tensor, RandomLabelBank] | None = None, pool: str | PoolFn = "auto",
                      label_set: int = 0) -> ProbeResult:
    """Freeze ``model``, cache the features of ``train_data`` at ``tap`` and fit a fresh head to ``bank``.

    ``heldout=(x, heldout_bank)`` adds the held-out accuracy (a control: it should sit at chance).
    Generator source name by convention: ``memorization.probe``.
    """
    if len(train_data) != bank.num_samples:
        raise ConfigError(f"probe: {len(train_data)} training inputs but the bank has {bank.num_samples} labels")
    feats = tap_features(model, tap, train_data, pool=pool)
    labels = bank.labels[label_set].to(feats.device)
    held = None
    if heldout is not None:
        hx, hbank = heldout
        held = (tap_features(model, tap, hx, pool=pool), hbank.labels[label_set].to(feats.device))
    return fit_head(feats, labels, bank.num_labels, generator=generator, head=head, epochs=epochs, lr=lr,
                    optimizer=optimizer, batch_size=batch_size, heldout=held)


def capacity_floor(d: int, n: int, m: int, *, generator: torch.Generator, head: str | HeadFactory = "linear",
                   epochs: int = 300, lr: float = 1e-2) -> float:
    """Train accuracy of the offline probe on m i.i.d. N(0, 1) features of size d with uniform labels in
    {0..n−1}: the part of an RLP accuracy the head reaches with no input structure at all."""
    feats = torch.randn(m, d, generator=generator)
    labels = torch.randint(0, n, (m,), generator=generator)
    return fit_head(feats, labels, n, generator=generator, head=head, epochs=epochs, lr=lr).train_acc


def capacity_floors(d: int, n: int, m: int, seeds: Sequence[int], **kw) -> list[float]:
    """:func:`capacity_floor` over several seeds (generator ``memorization.probe`` of each seed)."""
    from dicelab.seeding import generator as gen

    return [capacity_floor(d, n, m, generator=gen(s, "memorization.probe"), **kw) for s in seeds]
