"""Reinforced SGD (R-SGD), after H. Huang and T. Toyoizumi, arXiv 1701.07974, as dicelab defines it.

R-SGD adds earlier gradients to the current one *at random*, with a probability Γ that grows during
training. The paper's exact equation, schedule and constants are not available; every rule and default
here is dicelab's own (spec 05 §2-§3), with the paper's limits kept exact:

    t = 0 :  buf ← g_0,                            d_0 = g_0
    t ≥ 1 :  b_t = [u_t < Γ(τ)],  u_t ~ U[0, 1) from the optimizer's own generator
             accumulated (default):  buf ← b_t ⊙ buf + g_t,     d_t = buf
             previous:               d_t = g_t + b_t ⊙ buf,     buf ← g_t
    w ← w − lr · d_t
    Γ(τ) = min(max_prob, 1 − gamma0 · gamma**τ)    (schedule="exp"; τ = step or epoch)

Γ ≡ 0 is plain SGD and Γ ≡ 1 with ``accumulated`` is ``torch.optim.SGD(momentum=1, dampening=0)``,
bit for bit. In expectation R-SGD is SGD with momentum β_t = Γ(τ) (see :class:`MomentumSchedule` in
:mod:`dicelab.optim.baselines`); the difference is the random resetting of the memory.

Random numbers. Each element's u is the low 31 bits of one 32-bit word of the generator, u = r / 2**31,
so ``u < Γ`` is the exact integer test ``r < ceil(Γ · 2**31)``. Words are drawn as int64 pairs (two
words per draw) and a reset is applied as a bitwise AND on the buffer's bits, a select, so an element
with b = 0 becomes exactly g_t and no 0·inf arithmetic reaches the buffer. Why not ``torch.rand`` and
``masked_fill_``: on one CPU thread, for 78,858 elements, ``torch.rand`` took 2.2× as long as drawing the
same number of words as int64 pairs, and ``masked_fill_`` 25× as long as the bitwise AND. On the foreach
path a group's buffers are views of one flat tensor, so the mask costs one kernel, not one per tensor.
A full training iteration then costs 1.15-1.27× one with ``torch.optim.SGD(momentum=0.9)``
(benchmarks/rsgd_step_time.py); ``granularity="tensor"`` / ``"step"`` cost about the same as SGD.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from dicelab.errors import ConfigError
from dicelab.seeding import derive_seed

__all__ = ["ReinforcedSGD", "gamma_for", "SOURCE", "rsgd_factory"]

SOURCE = "optim.reinforce"  # the seeding source name: generator seed = derive_seed(root seed, SOURCE)

SCHEDULES = ("exp", "constant")
VARIANTS = ("accumulated", "previous")
GRANULARITIES = ("element", "tensor", "step")
TIME_UNITS = ("step", "epoch")
_WORD_BITS = 31
_WORD_SCALE = 1 << _WORD_BITS
_LOW31 = _WORD_SCALE - 1
_INT_OF_SIZE = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def gamma_for(t90: int, level: float = 0.9) -> float:
    """The ``gamma`` with Γ(t90) = ``level`` for ``schedule="exp", gamma0=1``: (1 − level)**(1/t90)."""
    if not isinstance(t90, int) or isinstance(t90, bool) or t90 < 1:
        raise ValueError(f"t90: must be an int >= 1 (got {t90!r})")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: must be in (0, 1) (got {level!r})")
    return (1.0 - level) ** (1.0 / t90)


def _check_unit(name: str, value: Any, *, low_open: bool = False, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            (0.0 < value if low_open else 0.0 <= value) and value <= 1.0):
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(f"{name}: must be in {interval} (got {value!r})")


def _threshold(prob: float) -> int:
    """Integer threshold T with ``u < prob`` ⟺ ``r < T`` for u = r / 2**31, r ∈ [0, 2**31)."""
    # prob within 2**-31 of 1 is capped at 2**31 − 1 so that r − T fits in an int32 (see _keep_masks).
    return min(math.ceil(prob * _WORD_SCALE), _WORD_SCALE - 1)


class ReinforcedSGD(torch.optim.Optimizer):
    """Reinforced SGD: SGD whose memory of earlier gradients is kept at random with a rising probability.

    Args:
        params: parameters or parameter groups, as for any ``torch.optim`` optimizer.
        lr: learning rate η (float or 0-d tensor, >= 0).
        schedule: ``"exp"`` (Γ = 1 − gamma0·gamma**τ), ``"constant"`` (Γ = prob) or a callable τ -> [0, 1].
        gamma, gamma0: the exponential schedule; defaults give Γ(0) = 0 and a time constant of 1,000 steps.
            :func:`gamma_for` converts "Γ = 0.9 at step t90" into gamma.
        prob: Γ for ``schedule="constant"`` (required there, unused otherwise).
        max_prob: cap on Γ (None: no cap; 0.99 is advisable beyond ~5/(1 − gamma) steps).
        variant: ``"accumulated"`` (buf ← b⊙buf + g) or ``"previous"`` (d = g + b⊙g_prev).
        granularity: one draw per ``"element"``, per ``"tensor"``, or one per ``"step"`` shared by all groups.
        time_unit: τ counts optimizer steps (``"step"``) or epochs (``"epoch"``, set with :meth:`set_epoch`).
        weight_decay: coupled L2, added to the gradient as in ``torch.optim.SGD``.
        maximize: ascend instead of descend.
        foreach: use ``torch._foreach_*`` kernels (None: when a group's parameters are dense and on one device).
        generator: the ``torch.Generator`` to draw from (it is advanced by :meth:`step`).
        seed: root seed of the draws; the generator is seeded with ``derive_seed(seed, "optim.reinforce")``, the
            stream a dicelab run with root seed ``seed`` uses. Default: ``torch.initial_seed()`` (read only).

    ``lr, weight_decay, gamma, gamma0, prob, max_prob, variant, maximize`` live in each param group;
    ``schedule, granularity, time_unit, foreach`` and the generators are optimizer-wide. The draws never
    touch the global RNG. ``state_dict()`` holds one ``buf`` per parameter plus ``"reinforce"``: the step
    and epoch counters and every generator's state, so a resumed run is bit-identical.

    Example::

        opt = ReinforcedSGD(model.parameters(), lr=0.05, seed=0)
        for x, y in batches:
            opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
    """

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-3, *,
                 schedule: str | Callable[[int], float] = "exp",
                 gamma: float = 0.999, gamma0: float = 1.0, prob: float | None = None,
                 max_prob: float | None = None, variant: str = "accumulated", granularity: str = "element",
                 time_unit: str = "step", weight_decay: float = 0.0, maximize: bool = False,
                 foreach: bool | None = None, generator: torch.Generator | None = None, seed: int | None = None,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        if differentiable:
            raise ValueError("differentiable: ReinforcedSGD does not support differentiable=True")
        if fused:
            raise ValueError("fused: ReinforcedSGD has no fused implementation")
        if not (callable(schedule) or schedule in SCHEDULES):
            raise ValueError(f"schedule: must be one of {', '.join(SCHEDULES)} or a callable (got {schedule!r})")
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity: must be one of {', '.join(GRANULARITIES)} (got {granularity!r})")
        if time_unit not in TIME_UNITS:
            raise ValueError(f"time_unit: must be one of {', '.join(TIME_UNITS)} (got {time_unit!r})")
        if foreach is not None and not isinstance(foreach, bool):
            raise ValueError(f"foreach: must be None, True or False (got {foreach!r})")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator: must be a torch.Generator (got {type(generator).__name__})")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed: must be an int (got {seed!r})")
        self.schedule = schedule
        self.granularity = granularity
        self.time_unit = time_unit
        self.foreach = foreach
        if seed is not None:
            self._root_seed = seed
        else:
            self._root_seed = generator.initial_seed() if generator is not None else torch.initial_seed()
        self._user_generator = generator
        self._generators: dict[str, torch.Generator] = {}
        self._t = 0
        self._epoch = 0
        self._last: tuple[int, list[Tensor], int] | None = None  # (resets counted, masks still to count, total)
        self._flats: dict[int, tuple[Tensor, list[Tensor]]] = {}  # group -> (flat buffer, its per-parameter views)
        defaults = dict(lr=lr, weight_decay=weight_decay, gamma=gamma, gamma0=gamma0, prob=prob,
                        max_prob=max_prob, variant=variant, maximize=maximize)
        self._check_group(defaults, defaults=True)  # each group is checked again with its own values
        super().__init__(params, defaults)

    # -- groups, validation, generators ----------------------------------------------------------
    def _check_group(self, group: dict[str, Any], defaults: bool = False) -> None:
        lr = group["lr"]
        if isinstance(lr, Tensor):
            if lr.numel() != 1 or lr.dim() != 0:
                raise ValueError(f"lr: a tensor lr must be 0-d (got shape {tuple(lr.shape)})")
            lr_value = float(lr)
        elif isinstance(lr, bool) or not isinstance(lr, int | float):
            raise ValueError(f"lr: must be a float or a 0-d tensor (got {lr!r})")
        else:
            lr_value = float(lr)
        if not lr_value >= 0.0:
            raise ValueError(f"lr: must be >= 0 (got {lr_value!r})")
        wd = group["weight_decay"]
        if isinstance(wd, bool) or not isinstance(wd, int | float) or not wd >= 0.0:
            raise ValueError(f"weight_decay: must be >= 0 (got {wd!r})")
        _check_unit("gamma", group["gamma"], low_open=True)
        _check_unit("gamma0", group["gamma0"])
        _check_unit("prob", group["prob"], optional=True)
        _check_unit("max_prob", group["max_prob"], optional=True)
        if self.schedule == "constant" and group["prob"] is None and not defaults:
            raise ValueError("prob: schedule='constant' needs prob in [0, 1]")
        if group["prob"] is not None and self.schedule != "constant":
            raise ValueError("prob: only used with schedule='constant' (use gamma/gamma0 or a callable)")
        if group["variant"] not in VARIANTS:
            raise ValueError(f"variant: must be one of {', '.join(VARIANTS)} (got {group['variant']!r})")
        if not isinstance(group["maximize"], bool):
            raise ValueError(f"maximize: must be a bool (got {group['maximize']!r})")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        merged = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        self._check_group(merged)
        super().add_param_group(param_group)
        for p in self.param_groups[-1]["params"]:
            self._generator(p.device)

    def _generator(self, device: torch.device) -> torch.Generator:
        """The generator of ``device``, created on first use: the user's generator on its own device,
        ``derive_seed(root, "optim.reinforce")`` on the first parameters' device, a device-named source elsewhere."""
        key = str(device)
        gen = self._generators.get(key)
        if gen is None:
            user = self._user_generator
            if user is not None and str(_normal_device(user.device)) == key:
                gen = user
            else:
                name = SOURCE if not self._generators else f"{SOURCE}/{key}"
                gen = torch.Generator(device=device)
                gen.manual_seed(derive_seed(self._root_seed, name))
            self._generators[key] = gen
        return gen

    @property
    def generators(self) -> dict[str, torch.Generator]:
        """The generators by device name (``"cpu"``, ``"cuda:0"``), in creation order."""
        return dict(self._generators)

    # -- schedule ----------------------------------------------------------------------------------
    def _tau(self) -> int:
        return self._epoch if self.time_unit == "epoch" else self._t

    def _prob(self, group: dict[str, Any], tau: int) -> float:
        schedule = self.schedule
        if schedule == "exp":
            value = 1.0 - group["gamma0"] * group["gamma"] ** tau
        elif schedule == "constant":
            value = float(group["prob"])
        else:
            value = float(schedule(tau))  # type: ignore[operator]
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"schedule: returned {value!r} at tau={tau}, outside [0, 1]")
        cap = group["max_prob"]
        return value if cap is None else min(value, float(cap))

    def reinforce_prob(self, group: int = 0) -> float:
        """Γ that the next :meth:`step` uses for param group ``group`` (float64)."""
        return self._prob(self.param_groups[group], self._tau())

    def set_epoch(self, epoch: int) -> None:
        """Tell the optimizer the current epoch (τ for ``time_unit="epoch"``; the engine calls it)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch: must be an int >= 0 (got {epoch!r})")
        self._epoch = epoch

    @property
    def steps(self) -> int:
        """Completed :meth:`step` calls (t)."""
        return self._t

    @property
    def last_reset_fraction(self) -> float:
        """Fraction of elements with b = 0 (memory reset) at the last step; 1.0 at the first, nan before."""
        if self._last is None:
            return math.nan
        resets, masks, total = self._last
        if masks:  # element masks are counted here, once, not on every step
            resets += sum(int((m == 0).sum()) for m in masks)
            self._last = (resets, [], total)
        return resets / total if total else math.nan

    @torch.no_grad()
    def buffer_norm(self) -> float:
        """Global L2 norm of all buffers (0.0 before the first step)."""
        bufs = [s["buf"] for s in self.state.values() if "buf" in s]
        if not bufs:
            return 0.0
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(b.float()) for b in bufs])))

    # -- the update ------------------------------------------------------------------------------
    def _draw_words(self, n: int, device: torch.device) -> Tensor:
        """``n`` int32 words r ∈ [0, 2**31) from the device's generator (u = r / 2**31)."""
        pairs = torch.empty((n + 1) // 2, dtype=torch.int64, device=device)
        pairs.random_(generator=self._generator(device))  # each int64 is two 32-bit generator outputs
        words = pairs.view(torch.int32)
        return (words if n == words.numel() else words[:n]).bitwise_and_(_LOW31)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One R-SGD update of every parameter that has a gradient. Returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        tau = self._tau()
        work = []  # per group with gradients: (index, group, params, grads, buffers or None, Γ)
        for gi, group in enumerate(self.param_groups):
            params, grads, bufs = [], [], []
            for pi, p in enumerate(group["params"]):
                grad = p.grad
                if grad is None:
                    continue
                if grad.is_sparse:
                    raise ValueError(f"params: parameter {pi} of param group {gi} has a sparse gradient, "
                                     "which ReinforcedSGD does not support")
                params.append(p)
                grads.append(grad)
                bufs.append(self.state[p].get("buf"))
            if params:
                work.append((gi, group, params, grads, bufs, self._prob(group, tau)))
        shared = self._shared_draws(work) if self.granularity != "element" else None
        resets = total = 0
        masks: list[Tensor] = []
        for gi, group, params, grads, bufs, prob in work:
            # foreach kernels take one device at a time; a group spread over devices goes tensor by tensor
            foreach = self.foreach is not False and len({p.device for p in params}) == 1
            grads = self._effective_grads(group, params, grads, foreach)
            fresh = [i for i, b in enumerate(bufs) if b is None]
            for i in fresh:  # t = 0 (or a parameter's first gradient): buf ← g, d = g
                bufs[i] = self.state[params[i]]["buf"] = torch.clone(grads[i]).detach()
            old = [i for i in range(len(params)) if i not in fresh] if fresh else list(range(len(params)))
            keep: list[int] = []   # buffers that become buf + g (element masks already applied)
            reset: list[int] = []  # buffers that become g
            if not 0.0 < prob < 1.0:  # a constant mask: nothing is drawn
                (keep if prob >= 1.0 else reset).extend(old)
            elif self.granularity == "element":
                if old:
                    masks.extend(self._element_masks(gi, params, bufs, old, _threshold(prob), foreach))
                keep = old
            else:
                for i in old:
                    (keep if shared(prob) else reset).append(i)
            total += sum(p.numel() for p in params)
            resets += sum(params[i].numel() for i in fresh) + sum(params[i].numel() for i in reset)
            self._update(group, params, grads, bufs, fresh, keep, reset, foreach)
        self._t += 1
        self._last = (resets, masks, total)
        return loss

    def _shared_draws(self, work: list) -> Callable[[float], bool] | None:
        """``tensor`` / ``step`` granularity: the draws of this step as Python ints, made at once.

        ``tensor``: one u per old buffer of every drawing group, in group order; ``step``: one u shared by
        all groups. Returns ``keep(prob)``, called once per old buffer in the same order."""
        n = sum(sum(b is not None for b in bufs) for *_, bufs, prob in work if 0.0 < prob < 1.0)
        if n == 0:
            return None
        device = work[0][2][0].device
        if self.granularity == "step":
            r = int(self._draw_words(1, device))
            return lambda prob: r < _threshold(prob)
        words = iter(self._draw_words(n, device).tolist())
        return lambda prob: next(words) < _threshold(prob)

    def _element_masks(self, gi: int, params: list[Tensor], bufs: list[Tensor], old: list[int], threshold: int,
                       foreach: bool) -> list[Tensor]:
        """``element`` granularity: draw one u per element of the old buffers (parameter order, one flat draw
        per device), turn it into a mask (−1 keep, 0 reset) and zero the reset elements of the buffers.

        On the foreach path the group's buffers are views of one flat tensor, so the mask is applied by one
        kernel instead of one per tensor; the draws and the result are the same."""
        if foreach and len(old) == len(params):
            flat = self._flat(gi, params, bufs)
            if flat is not None:
                words = self._draw_words(flat.numel(), flat.device)
                words.sub_(threshold).bitwise_right_shift_(_WORD_BITS)  # r − T < 0 ⟺ keep; fits in int32
                _zero_where_reset(flat, words)
                return [words]
        by_device: dict[torch.device, list[int]] = {}
        for i in old:
            by_device.setdefault(params[i].device, []).append(i)
        masks = []
        for device, idx in by_device.items():
            sizes = [params[i].numel() for i in idx]
            words = self._draw_words(sum(sizes), device)
            words.sub_(threshold).bitwise_right_shift_(_WORD_BITS)
            for i, mask in zip(idx, words.split(sizes), strict=True):
                _zero_where_reset(bufs[i], mask.view(bufs[i].shape))
            masks.append(words)
        return masks

    def _flat(self, gi: int, params: list[Tensor], bufs: list[Tensor]) -> Tensor | None:
        """Group ``gi``'s buffers as views of one flat tensor (rebuilt, values unchanged, when they are not)."""
        entry = self._flats.get(gi)
        if entry is not None and len(entry[1]) == len(bufs) and all(
                b is v for b, v in zip(bufs, entry[1], strict=True)):
            return entry[0]
        if len({b.dtype for b in bufs}) != 1 or len({b.device for b in bufs}) != 1:
            return None
        flat = torch.cat([b.reshape(-1) for b in bufs])
        views = [v.view(b.shape) for v, b in zip(flat.split([b.numel() for b in bufs]), bufs, strict=True)]
        for i, (p, v) in enumerate(zip(params, views, strict=True)):
            bufs[i] = self.state[p]["buf"] = v
        self._flats[gi] = (flat, views)
        return flat

    @staticmethod
    def _effective_grads(group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
                         foreach: bool) -> list[Tensor]:
        """g = ±grad + wd·w, with the same kernels as ``torch.optim.SGD`` (so the limits are bit-exact)."""
        wd, maximize = group["weight_decay"], group["maximize"]
        if foreach:
            if maximize:
                grads = torch._foreach_neg(grads)
            if wd != 0:
                grads = torch._foreach_add(grads, params, alpha=wd)
            return list(grads)
        out = []
        for p, g in zip(params, grads, strict=True):
            g = -g if maximize else g
            out.append(g.add(p, alpha=wd) if wd != 0 else g)
        return out

    @staticmethod
    def _update(group: dict[str, Any], params: list[Tensor], grads: list[Tensor], bufs: list[Tensor],
                fresh: list[int], keep: list[int], reset: list[int], foreach: bool) -> None:
        """Buffers in ``keep`` become buf + g, in ``reset`` g; then w ← w − lr·d for the group's variant."""
        lr = group["lr"]
        neg_lr = -(lr.item() if isinstance(lr, Tensor) else lr)
        previous = group["variant"] == "previous"
        if previous:  # d = g + b⊙buf: from the updated buffer if kept, else g itself; then buf ← g
            step_from = list(bufs)
            for i in (*fresh, *reset):
                step_from[i] = grads[i]
        else:  # d = buf
            step_from = bufs
        everything = len(keep) == len(params)
        if foreach:
            if everything:
                torch._foreach_add_(bufs, grads)
            elif keep:
                torch._foreach_add_([bufs[i] for i in keep], [grads[i] for i in keep])
            if reset and not previous:
                torch._foreach_copy_([bufs[i] for i in reset], [grads[i] for i in reset])
            torch._foreach_add_(params, step_from, alpha=neg_lr)
            if previous and (keep or reset):
                old = [*keep, *reset]
                torch._foreach_copy_([bufs[i] for i in old], [grads[i] for i in old])
            return
        for i in keep:
            bufs[i].add_(grads[i])
        if not previous:
            for i in reset:
                bufs[i].copy_(grads[i])
        for p, d in zip(params, step_from, strict=True):
            p.add_(d, alpha=neg_lr)
        if previous:
            for i in (*keep, *reset):
                bufs[i].copy_(grads[i])

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``torch.optim`` state (one ``buf`` per parameter) plus ``"reinforce"``: t, epoch and the
        generators' states (uint8 tensors by device)."""
        sd = super().state_dict()
        sd["reinforce"] = {"t": self._t, "epoch": self._epoch,
                           "rng_state": {k: g.get_state() for k, g in self._generators.items()}}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("reinforce", None)
        if not isinstance(extra, dict) or not {"t", "epoch", "rng_state"} <= set(extra):
            raise ValueError("state_dict: no 'reinforce' entry (t, epoch, rng_state); not a ReinforcedSGD state")
        missing = sorted(set(self._generators) - set(extra["rng_state"]))
        if missing:
            raise ValueError(f"state_dict: no generator state for device {missing[0]} "
                             f"(saved: {', '.join(extra['rng_state']) or 'none'})")
        super().load_state_dict(state_dict)
        self._t, self._epoch = int(extra["t"]), int(extra["epoch"])
        for key, gen in self._generators.items():
            gen.set_state(extra["rng_state"][key].cpu())  # a checkpoint may be mapped to another device
        self._last = None
        self._flats.clear()


def _normal_device(device: torch.device) -> torch.device:
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _zero_where_reset(buf: Tensor, mask: Tensor) -> None:
    """buf ← 0 where mask == 0 (mask is −1 / 0), by AND on the bits: exact, and 0·inf never happens."""
    int_type = _INT_OF_SIZE.get(buf.element_size())
    if int_type is None:
        torch.where(mask.ne(0), buf, torch.zeros((), dtype=buf.dtype, device=buf.device), out=buf)
        return
    if int_type != torch.int32:
        mask = mask.to(int_type)  # sign extension keeps −1 as all ones
    buf.view(int_type).bitwise_and_(mask)


def rsgd_factory(params: Iterable, *, lr: float, momentum: float | None, weight_decay: float,
                 **options: Any) -> ReinforcedSGD:
    """Registry factory for ``train.optimizer = "rsgd"``; options come from ``train.optimizer_options``."""
    if momentum is not None:
        raise ConfigError("train.momentum: rsgd has no fixed momentum; its reinforcement probability is set by "
                          "train.optimizer_options (schedule, gamma, gamma0, prob, max_prob)")
    if "generator" in options:
        raise ConfigError("train.optimizer_options.generator: not a config value; use seed")
    try:
        return ReinforcedSGD(params, lr=lr, weight_decay=weight_decay, **options)
    except ValueError as exc:
        field = str(exc).split(":", 1)[0]
        prefix = "train." if field in ("lr", "weight_decay") else "train.optimizer_options."
        raise ConfigError(f"{prefix}{exc}") from None
