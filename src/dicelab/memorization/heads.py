"""RLP heads attached by layer name to any ``nn.Module`` (spec 04 §4, §5, §6).

A *tap* names where a head reads: ``"NAME"`` / ``"output:NAME"`` (the module's output, element 0 of a
tuple), ``"input:NAME"`` (its first positional argument) or ``"penultimate"`` (the input of the last
``nn.Linear``). A forward hook stores the pooled features of the latest forward and never changes them.

Gradient routing (the contract of spec 04 §2):

=================  ===========  ===========  ==========  ==========================================
term               extractor θ  task head φ  RLP head ψ  how
=================  ===========  ===========  ==========  ==========================================
L_class            yes          yes          no          the caller's ordinary loss
L_rnd              no           no           yes         the head reads ``a.detach()``
λ·R                yes          no           no          head run with detached parameters
grl                −λ·∂L_rnd    no           yes         gradient reversal on the head input
=================  ===========  ===========  ==========  ==========================================

A tap whose λ is 0 builds no regulariser graph at all, so with λ = 0 the heads are pure observers.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from dicelab.errors import ConfigError
from dicelab.memorization.bank import RandomLabelBank
from dicelab.memorization.losses import grad_reverse, penalty, random_label_loss
from dicelab.memorization.metrics import TapStats, summarize

__all__ = ["Tap", "RLPHeads", "RLPOutput", "BatchStats", "resolve_taps", "pool_features", "build_head", "module_names"]

log = logging.getLogger("dicelab.memorization")

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")   # DDP and torch.compile wrappers
_FLUSH_NUMEL = 1 << 22   # buffered head logits (per epoch window) before they are reduced into the sums
HeadFactory = Callable[[int, int], nn.Module]
PoolFn = Callable[[Tensor], Tensor]


# -- taps ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tap:
    """One resolved tap: ``key`` is how metrics name it, ``name`` the module (wrapper prefixes stripped)."""

    spec: str
    key: str
    kind: str        # "input" | "output"
    name: str


def _strip(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _WRAPPER_PREFIXES:
            if name.startswith(p):
                name, changed = name[len(p):], True
    return name


def module_names(model: nn.Module) -> dict[str, nn.Module]:
    """Every submodule by name, wrapper prefixes (``module.``, ``_orig_mod.``) stripped; the root is ``""``."""
    out: dict[str, nn.Module] = {}
    for n, m in model.named_modules():
        out.setdefault(_strip(n), m)
    return out


def resolve_taps(model: nn.Module, taps: Sequence[str]) -> list[Tap]:
    """Resolve tap strings against ``model``; an unknown name is a :class:`ConfigError` with the 3 closest."""
    modules = module_names(model)
    out: list[Tap] = []
    for spec in taps:
        kind, name = spec.split(":", 1) if ":" in spec else ("output", spec)
        if kind not in ("input", "output"):
            raise ConfigError(f"memorization.taps: {spec!r} is not NAME, output:NAME or input:NAME")
        name = _strip(name)
        if name == "penultimate" and name not in modules:
            linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
            if not linears:
                raise ConfigError("memorization.taps: 'penultimate' needs an nn.Linear in the model")
            kind, name = "input", linears[-1]
            log.info("memorization: tap 'penultimate' resolved to input:%s", name)
        if name not in modules or name == "":
            close = difflib.get_close_matches(name, [n for n in modules if n], n=3, cutoff=0.0)
            raise ConfigError(f"memorization.taps: no module named {name!r} (closest: {', '.join(close) or 'none'}); "
                              "`dicelab memorization taps CONFIG` lists them")
        key = name if kind == "output" else f"input:{name}"
        if any(t.key == key for t in out):
            raise ConfigError(f"memorization.taps: {spec!r} names the same tap twice")
        out.append(Tap(spec, key, kind, name))
    return out


# -- pooling -------------------------------------------------------------------------------------
def pool_features(t: Tensor, how: str | PoolFn = "auto") -> Tensor:
    """(B, ...) features → (B, d). ``auto``: GAP over H, W for 4-D, token mean for 3-D, identity for 2-D."""
    if callable(how):
        return how(t)
    if t.dim() == 1:
        t = t.unsqueeze(1)
    if how == "auto":
        if t.dim() == 2:
            return t
        if t.dim() == 3:
            return t.mean(dim=1)
        return t.mean(dim=tuple(range(2, t.dim())))
    if how == "none":
        if t.dim() != 2:
            raise ConfigError(f"memorization.pool: 'none' needs (B, d) features, got shape {tuple(t.shape)}")
        return t
    if how == "flatten":
        return t.flatten(1)
    if t.dim() < 3:
        raise ConfigError(f"memorization.pool: {how!r} needs features with more than 2 dims, got {tuple(t.shape)}")
    if how == "gap":
        return t.mean(dim=tuple(range(2, t.dim())))
    if how == "gmp":
        return t.amax(dim=tuple(range(2, t.dim())))
    if how == "cls":
        return t[:, 0]
    if how == "mean_tokens":
        return t.mean(dim=1)
    raise ConfigError(f"memorization.pool: unknown pooling {how!r}")


# -- heads ---------------------------------------------------------------------------------------
def _linear(d: int, out: int, g: torch.Generator, bias: bool = True) -> nn.Linear:
    """nn.Linear with torch's default init (U(±1/√d)) drawn from ``g``; built without touching the global RNG."""
    lin = torch.nn.utils.skip_init(nn.Linear, d, out, bias=bias)
    bound = 1.0 / math.sqrt(d)
    with torch.no_grad():
        lin.weight.uniform_(-bound, bound, generator=g)
        if bias:
            lin.bias.uniform_(-bound, bound, generator=g)
    return lin


def build_head(kind: str | HeadFactory, d: int, out: int, g: torch.Generator, rank: int = 64) -> nn.Module:
    """A head d → out: ``linear``, ``mlp`` (d → min(512, d) → ReLU → out), ``lowrank`` (d → r → out) or a factory.

    Built-in heads draw their weights from ``g``; a factory runs under a forked global RNG seeded from ``g``,
    so the caller's global RNG (dropout masks, data order) never moves.
    """
    if callable(kind):
        seed = int(torch.randint(0, 2**62, (1,), generator=g))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return kind(d, out)
    if kind == "linear":
        return _linear(d, out, g)
    if kind == "mlp":
        h = min(512, d)
        return nn.Sequential(_linear(d, h, g), nn.ReLU(), _linear(h, out, g))
    if kind == "lowrank":
        return nn.Sequential(_linear(d, rank, g, bias=False), _linear(rank, out, g))
    raise ConfigError(f"memorization.head: unknown head {kind!r} (linear, mlp, lowrank or a factory)")


@dataclass
class RLPOutput:
    """What :meth:`RLPHeads.losses` returns: the random-label loss (ψ only), the regulariser (θ only;
    already multiplied by λ) and per-tap statistics of the batch."""

    rnd: Tensor
    reg: Tensor
    stats: dict[str, list[BatchStats]] = field(default_factory=dict)
    has_reg: bool = False      # False: no tap has λ > 0 (reg is zeros with no graph)


@dataclass
class BatchStats:
    """One batch at one tap and label set: the head's (detached) logits and the random labels; the
    statistics are computed when read, so a training step pays nothing for them."""

    z: Tensor
    yhat: Tensor

    @property
    def count(self) -> int:
        return len(self.yhat)

    @property
    def acc(self) -> Tensor:
        return (self.z.argmax(dim=1) == self.yhat).float().mean()

    @property
    def rnd(self) -> Tensor:
        return random_label_loss(self.z, self.yhat).mean()

    @property
    def p_hat(self) -> Tensor:
        return torch.exp(-random_label_loss(self.z, self.yhat)).mean()


def _frozen_forward(head: nn.Module, a: Tensor) -> Tensor:
    """The head on ``a`` with its parameters detached: gradients reach ``a`` (θ), never ψ."""
    if type(head) is nn.Linear:  # the default head: skip functional_call's bookkeeping
        return F.linear(a, head.weight.detach(), None if head.bias is None else head.bias.detach())
    return functional_call(head, {k: v.detach() for k, v in head.named_parameters()}, (a,))


def _static_dim(module: nn.Module, kind: str) -> int | None:
    if isinstance(module, nn.Linear):
        return module.in_features if kind == "input" else module.out_features
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return module.in_channels if kind == "input" else module.out_channels
    return None


class RLPHeads(nn.Module):
    """Random-label prediction heads at several taps of ``model`` (one per tap and label set).

    ``bank`` gives every training sample its random labels; ``lam`` (float or ``{tap: λ}``) and ``reg``
    select the regulariser. The head's feature size d is read from one eval-mode forward of
    ``example_input`` (a couple of real inputs), or from the module's shape for Linear/Conv taps.
    ``num_classes`` is needed for a per-class bank (heads with N·n outputs, sliced by class).

    Typical loop (the engine does this itself through :class:`~dicelab.memorization.hook.MemorizationHook`)::

        logits = model(x)                      # hooks capture tap features
        out = rlp.losses(idx, y)               # rnd: ψ only; reg: θ only
        loss = F.cross_entropy(logits, y) + out.rnd + out.reg
    """

    def __init__(self, model: nn.Module, taps: Sequence[str], bank: RandomLabelBank, *,
                 generator: torch.Generator, head: str | HeadFactory = "linear", pool: str | PoolFn = "auto",
                 lam: float | Mapping[str, float] = 0.0, reg: str = "complement", num_classes: int | None = None,
                 rank: int = 64, example_input: Tensor | None = None, heldout_bank: RandomLabelBank | None = None,
                 warn_fraction: float = 0.10) -> None:
        super().__init__()
        if reg not in ("complement", "uniform", "grl"):
            raise ConfigError(f"memorization.reg: unknown regulariser {reg!r} (complement, uniform, grl)")
        if bank.per_class and not num_classes:
            raise ConfigError("memorization.per_class: per-class heads need num_classes")
        self.taps = resolve_taps(model, taps)
        self.bank, self.heldout_bank = bank, heldout_bank
        self.reg, self.pool = reg, pool
        self.num_classes = num_classes
        self.n = bank.num_labels
        self.lam = self._lam_table(lam)
        self._feats: dict[str, Tensor | None] = {t.key: None for t in self.taps}
        self._capturing = True
        self._handles: list[Any] = []
        self._order: list[str] = []    # taps in the order the forward reached them (for depth curves)
        modules = module_names(model)
        for tap in self.taps:
            self._handles.append(modules[tap.name].register_forward_hook(self._hook_fn(tap), prepend=True))
        self.dims = self._feature_dims(model, modules, example_input)
        self.forward_order = [k for k in self._order if k in self.dims] or [t.key for t in self.taps]
        out = self.n * (num_classes if bank.per_class else 1)
        device = _device_of(model, example_input)
        self.heads = nn.ModuleList(
            nn.ModuleList(build_head(head, self.dims[t.key], out, generator, rank) for _ in range(bank.num_sets))
            for t in self.taps
        ).to(device)
        self.bank.to(device)
        if heldout_bank is not None:
            heldout_bank.to(device)
        self.head_params = {t.key: sum(p.numel() for p in self.heads[i][0].parameters())
                            for i, t in enumerate(self.taps)}
        total = sum(p.numel() for p in self.heads.parameters())
        model_params = sum(p.numel() for p in model.parameters())
        if model_params and total > warn_fraction * model_params:
            warnings.warn(f"memorization: RLP heads hold {total:,} parameters, {total / model_params:.0%} of the "
                          f"model's {model_params:,} (head cost d·n per tap; consider a smaller n or head='lowrank')",
                          stacklevel=2)
        self.history: list[dict[str, Any]] = []
        self._device = device
        self._reset_online()

    # -- setup helpers ---------------------------------------------------------------------------
    def _lam_table(self, lam: float | Mapping[str, float]) -> dict[str, float]:
        if isinstance(lam, Mapping):
            by_key = {t.spec: t.key for t in self.taps} | {t.key: t.key for t in self.taps}
            by_key |= {f"output:{t.name}": t.key for t in self.taps if t.kind == "output"}
            table = {t.key: 0.0 for t in self.taps}
            for k, v in lam.items():
                if k not in by_key:
                    raise ConfigError(f"memorization.lam: key {k!r} is not one of the taps {[t.spec for t in self.taps]}")
                table[by_key[k]] = float(v)
        else:
            table = {t.key: float(lam) for t in self.taps}
        for k, v in table.items():
            if not (v >= 0.0 and math.isfinite(v)):
                raise ConfigError(f"memorization.lam: {k} = {v} must be finite and >= 0")
        return table

    def _hook_fn(self, tap: Tap) -> Callable[..., None]:
        def fn(module: nn.Module, args: tuple, output: Any) -> None:
            if not self._capturing:
                return None
            if tap.kind == "input":
                if not args:
                    raise ConfigError(f"memorization.taps: input:{tap.name} got no positional argument")
                t = args[0]
            else:
                t = output[0] if isinstance(output, (tuple, list)) else output
            self._feats[tap.key] = pool_features(t, self.pool)
            if tap.key not in self._order:
                self._order.append(tap.key)
            return None  # read only: the model's forward is never changed

        return fn

    def _feature_dims(self, model: nn.Module, modules: dict[str, nn.Module], x: Tensor | None) -> dict[str, int]:
        if x is not None:
            was = model.training
            model.eval()  # eval mode and no grad: no dropout draw, no BatchNorm update, nothing learned
            try:
                with torch.no_grad():
                    model(x)
            finally:
                model.train(was)
            dims = {}
            for t in self.taps:
                f = self._feats[t.key]
                if f is None:
                    raise ConfigError(f"memorization.taps: {t.spec!r} was not reached by the model's forward")
                dims[t.key] = int(f.shape[1])
            self._clear()
            return dims
        dims = {}
        for t in self.taps:
            d = _static_dim(modules[t.name], t.kind)
            if d is None or (self.pool in ("flatten", "cls", "mean_tokens")):
                raise ConfigError(f"memorization.taps: cannot tell the feature size of {t.spec!r} from the module; "
                                  "pass example_input=")
            dims[t.key] = d
        return dims

    def _reset_online(self) -> None:
        # per (tap, set): correct, sum p̂_ŷ, sum L_rnd, sum R over the epoch's training batches
        self._sums = torch.zeros(len(self.taps), self.bank.num_sets, 4, dtype=torch.float64, device=self._device)
        self._buf: list[list[list[tuple[Tensor, Tensor]]]] = [[[] for _ in range(self.bank.num_sets)] for _ in self.taps]
        self._buf_numel = 0
        self._seen = 0

    @torch.no_grad()
    def _flush(self) -> None:
        """Reduce the buffered logits of recent batches into the epoch sums in a few large operations
        (cheaper than a dozen tiny ones per step)."""
        for i, per_tap in enumerate(self._buf):
            for s, items in enumerate(per_tap):
                if not items:
                    continue
                z = torch.cat([zz for zz, _ in items]).float()
                y = torch.cat([yy for _, yy in items])
                rnd = random_label_loss(z, y)
                if self.reg == "uniform":
                    r = penalty("uniform", z, y)
                else:  # −log(1 − p̂_ŷ) from L_rnd = −log p̂_ŷ, elementwise (stable as p̂_ŷ → 1)
                    r = -torch.log(-torch.expm1(-rnd))
                row = torch.stack([(z.argmax(dim=1) == y).sum().to(torch.float64), torch.exp(-rnd).sum().double(),
                                   rnd.sum().double(), r.sum().double()])
                self._sums[i, s] += row
                items.clear()
        self._buf_numel = 0

    def _online_sums(self) -> list[list[list[float]]]:
        self._flush()
        flat = self._sums.tolist()   # one device sync per epoch
        self._reset_online()
        return flat

    def _clear(self) -> None:
        for k in self._feats:
            self._feats[k] = None

    # -- public API ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def capture(self, enabled: bool = True) -> Iterator[None]:
        """``with rlp.capture(False):`` runs forwards that the heads do not see."""
        old, self._capturing = self._capturing, enabled
        try:
            yield
        finally:
            self._capturing = old

    def param_groups(self, lr: float | None = None, weight_decay: float = 0.0) -> list[dict[str, Any]]:
        """The heads' parameters as one optimizer param group (lr defaults to the optimizer's; no decay,
        so a weight-decay sweep changes only the network)."""
        group: dict[str, Any] = {"params": list(self.heads.parameters()), "weight_decay": weight_decay}
        if lr is not None:
            group["lr"] = lr
        return [group]

    def remove(self) -> None:
        """Detach every forward hook from the model."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._clear()

    def _select(self, z: Tensor, y: Tensor | None) -> Tensor:
        if not self.bank.per_class:
            return z
        if y is None:
            raise ConfigError("memorization.per_class: losses() needs the class labels y")
        return z.view(z.shape[0], self.num_classes, self.n)[torch.arange(z.shape[0], device=z.device), y.to(z.device)]

    def losses(self, idx: Tensor, y: Tensor | None = None, *, lam_scale: float = 1.0,
               reduction: str = "mean") -> RLPOutput:
        """The random-label loss and regulariser of the latest forward, for dataset indices ``idx``.

        ``reduction="none"`` gives per-sample vectors (B,) (the engine adds them to the per-sample task
        loss before its own reduction). ``lam_scale`` multiplies every λ (warm-up). Raises if no forward
        was captured since the last call or if the batch size differs from ``len(idx)``.
        """
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")
        labels = self.bank[idx]                          # (sets, B)
        b = len(idx)
        rnd_total: Tensor = 0.0  # type: ignore[assignment]  (a tensor after the first head)
        reg_total: Tensor | None = None
        stats: dict[str, list[BatchStats]] = {}
        if not self.heads.training:
            self.heads.train()
        for i, tap in enumerate(self.taps):
            a = self._feats[tap.key]
            if a is None:
                raise RuntimeError(f"RLPHeads.losses: no forward captured at {tap.key!r} since the last call")
            if a.shape[0] != b:
                raise RuntimeError(f"RLPHeads.losses: the forward saw {a.shape[0]} samples but idx has {b}")
            lam = self.lam[tap.key] * lam_scale
            tap_reg: Tensor | None = None
            stats[tap.key] = []
            for s, head in enumerate(self.heads[i]):
                yhat = labels[s]
                if self.reg == "grl" and lam > 0:
                    # ψ descends L_rnd; θ receives −λ·∂L_rnd/∂a through the reversal layer
                    z = self._select(head(grad_reverse(a, lam)), y)
                    rnd = random_label_loss(z, yhat)
                else:
                    z = self._select(head(a.detach()), y)
                    rnd = random_label_loss(z, yhat)
                    if lam > 0:
                        r = penalty(self.reg, self._select(_frozen_forward(head, a), y), yhat)
                        tap_reg = r if tap_reg is None else tap_reg + r
                rnd_total = rnd if isinstance(rnd_total, float) else rnd_total + rnd
                zd = z.detach()
                self._buf[i][s].append((zd, yhat))
                self._buf_numel += zd.numel()
                stats[tap.key].append(BatchStats(zd, yhat))
            if tap_reg is not None:
                # mean over label sets keeps λ's meaning independent of num_sets
                scale = lam / self.bank.num_sets
                reg_total = tap_reg * scale if reg_total is None else reg_total + tap_reg * scale
        self._clear()
        self._seen += b
        if self._buf_numel > _FLUSH_NUMEL:
            self._flush()
        if reduction == "mean":
            rnd_total = rnd_total.mean()
            reg_total = reg_total.mean() if reg_total is not None else None
        elif reduction == "sum":
            rnd_total = rnd_total.sum()
            reg_total = reg_total.sum() if reg_total is not None else None
        if reg_total is None:   # no tap regularises: a zero with no graph (has_reg tells the caller)
            return RLPOutput(rnd_total, torch.zeros((), device=rnd_total.device, dtype=rnd_total.dtype), stats)
        return RLPOutput(rnd_total, reg_total, stats, has_reg=True)

    # -- evaluation and metrics ------------------------------------------------------------------
    def accuracy(self, model: nn.Module, x: Tensor, bank: RandomLabelBank, *, idx: Tensor | None = None,
                 y: Tensor | None = None, batch_size: int = 1024) -> dict[tuple[str, int], float]:
        """Eval-mode RLP accuracy of every (tap, set) on inputs ``x`` whose random labels are ``bank[idx]``
        (``idx`` defaults to 0..len(x)−1). ``y`` (class labels) is needed for per-class heads."""
        return self._evaluate(model, x, bank, idx=idx, y=y, batch_size=batch_size)[0]

    @torch.no_grad()
    def _evaluate(self, model: nn.Module, x: Tensor, bank: RandomLabelBank, *, idx: Tensor | None = None,
                  y: Tensor | None = None, batch_size: int = 1024) -> tuple[dict[tuple[str, int], float], float | None]:
        """RLP accuracies plus, when ``y`` is given, the task accuracy of the same forwards."""
        idx = torch.arange(len(x)) if idx is None else idx
        if len(idx) != len(x):
            raise ValueError(f"accuracy: {len(x)} inputs but {len(idx)} indices")
        was, heads_was = model.training, self.heads.training
        model.eval()
        self.heads.eval()
        correct = torch.zeros(len(self.taps), bank.num_sets, dtype=torch.int64, device=self._device)
        task_correct = torch.zeros((), dtype=torch.int64, device=self._device)
        try:
            with self.capture(True):
                for start in range(0, len(x), batch_size):
                    xb = x[start:start + batch_size]
                    ib = idx[start:start + batch_size]
                    yb = None if y is None else y[start:start + batch_size]
                    logits = model(xb)
                    if yb is not None and isinstance(logits, Tensor) and logits.dim() == 2:
                        task_correct += (logits.argmax(dim=1) == yb).sum()
                    labels = bank[ib]
                    for i, tap in enumerate(self.taps):
                        a = self._feats[tap.key]
                        if a is None:
                            raise RuntimeError(f"RLPHeads.accuracy: the forward did not reach {tap.key!r}")
                        for s, head in enumerate(self.heads[i]):
                            z = self._select(head(a), yb)
                            correct[i, s] += (z.argmax(dim=1) == labels[s]).sum()
        finally:
            model.train(was)
            self.heads.train(heads_was)
            self._clear()
        counts = correct.tolist()
        accs = {(t.key, s): counts[i][s] / len(x) for i, t in enumerate(self.taps) for s in range(bank.num_sets)}
        return accs, (task_correct.item() / len(x) if y is not None and len(x) else None)

    def end_epoch(self, model: nn.Module, train_x: Tensor | None = None, heldout_x: Tensor | None = None, *,
                  epoch: int | None = None, train_y: Tensor | None = None, heldout_y: Tensor | None = None,
                  subset: Tensor | None = None, extra: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Close an epoch: online accuracy of the batches since the last call, clean (eval-mode) accuracy
        on ``train_x`` (restricted to ``subset`` indices if given) and held-out accuracy on ``heldout_x``
        against ``heldout_bank``. Appends one row per (tap, set) to :attr:`history` and returns them."""
        epoch = len({r["epoch"] for r in self.history}) if epoch is None else epoch
        seen = self._seen
        sums = self._online_sums()
        clean: dict[tuple[str, int], float] = {}
        m_clean = 0
        if train_x is not None:
            idx = torch.arange(len(train_x)) if subset is None else subset.cpu()
            xs = train_x if subset is None else train_x[idx.to(train_x.device)]
            ys = None if train_y is None else (train_y if subset is None else train_y[idx.to(train_y.device)])
            clean = self.accuracy(model, xs, self.bank, idx=idx, y=ys)
            m_clean = len(idx)
        held: dict[tuple[str, int], float] = {}
        held_task = None
        if heldout_x is not None and self.heldout_bank is not None and len(heldout_x):
            held, held_task = self._evaluate(model, heldout_x, self.heldout_bank, y=heldout_y)
        rows = []
        for i, tap in enumerate(self.taps):
            for s in range(self.bank.num_sets):
                correct, p_sum, rnd_sum, reg_sum = sums[i][s]
                st = TapStats(correct, seen, p_sum, rnd_sum, reg_sum)
                row: dict[str, Any] = {"epoch": epoch, "tap": tap.key, "set": s, "n": self.n,
                                       "m": self.bank.num_samples, "clean_m": m_clean or None,
                                       "depth": self.forward_order.index(tap.key), "d": self.dims[tap.key],
                                       "head_params": self.head_params[tap.key], "lam": self.lam[tap.key],
                                       "reg_kind": self.reg}
                row.update(st.means())
                c = clean.get((tap.key, s))
                row["clean_acc"] = c
                row.update(summarize(c if c is not None else row["online_acc"], self.n, m_clean or self.bank.num_samples))
                row["online_z"] = summarize(row["online_acc"], self.n, max(st.count, 1))["z"]
                h = held.get((tap.key, s))
                row["heldout_acc"] = h
                row["heldout_z"] = summarize(h, self.n, len(heldout_x))["z"] if h is not None else None
                row["heldout_task_acc"] = held_task   # the task accuracy of the same held-out forwards
                if extra:
                    row.update(extra)
                rows.append(row)
        self.history.extend(rows)
        return rows

    def metrics(self) -> list[dict[str, Any]]:
        """Every row so far: epoch, tap, set, online/clean/held-out accuracy, chance, se, z, r_proxy, ..."""
        return list(self.history)


def _device_of(model: nn.Module, x: Tensor | None) -> torch.device:
    for p in model.parameters():
        return p.device
    return x.device if x is not None else torch.device("cpu")
