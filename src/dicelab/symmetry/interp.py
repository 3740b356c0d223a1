"""Linear interpolation between two models and loss/error barriers (spec 06 §4 BatchNorm, REPAIR; §5).

θ(t) = (1−t)θ_A + tθ_B with ``torch.lerp`` (exact at the endpoints and where θ_A = θ_B); integer buffers
and fixed structure come from A. BatchNorm: interpolated running statistics are not the statistics of the
interpolated network (variance collapse), so ``bn="reset"`` (default when a BatchNorm is present)
re-estimates them on the training inputs; ``bn="none"`` keeps them and warns. REPAIR (Jordan et al.,
arXiv 2211.08403) rescales every hidden pre-activation of the interpolated net to the interpolated
endpoint mean and std, layer by layer, folded into the producing layer's weight and bias.

Barrier kinds: ``sup_linear`` (Entezari et al.) max_t [L(θ(t)) − ((1−t)L_A + tL_B)];
``max_minus_mean`` max_t L(θ(t)) − ½(L_A + L_B); ``midpoint`` L(θ(½)) − ½(L_A + L_B).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from dicelab.symmetry._util import as_inputs, as_splits, evaluate_split, spec_for
from dicelab.symmetry.errors import SymmetryError, SymmetryWarning
from dicelab.symmetry.match import align as align_models
from dicelab.symmetry.match import l2_distance
from dicelab.symmetry.spec import PermSpec

__all__ = ["interpolate", "reset_bn_stats", "fold_bn", "repair", "barrier", "barrier_value", "BarrierResult",
           "KINDS", "BN_MODES"]

KINDS = ("sup_linear", "max_minus_mean", "midpoint")
BN_MODES = ("auto", "reset", "none")
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_BN_WARNING = ("symmetry: interpolating BatchNorm running statistics (bn='none'): they are not the statistics of "
               "the interpolated network (variance collapse); use bn='reset'")


def _has_bn(model: nn.Module) -> bool:
    return any(isinstance(m, _BN) for m in model.modules())


def _bn_mode(model: nn.Module, bn: str) -> str:
    if bn not in BN_MODES:
        raise SymmetryError(f"bn must be one of {', '.join(BN_MODES)}, got {bn!r}")
    if not _has_bn(model):
        return "off"
    return "reset" if bn == "auto" else bn


@torch.no_grad()
def reset_bn_stats(model: nn.Module, inputs: torch.Tensor, batch: int = 256) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on ``inputs`` (cumulative average, train mode for
    the BN layers only, no gradient); the model is left in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, _BN)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.eval()
    for m in bns:
        m.train()
    dtype = next(model.parameters()).dtype
    for s in range(0, len(inputs), batch):
        model(inputs[s:s + batch].to(dtype))
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    model.eval()
    return model


def _lerp_state(a: dict, b: dict, t: float) -> dict:
    out = {}
    for k, va in a.items():
        vb = b[k]
        out[k] = torch.lerp(va, vb.to(va), float(t)) if va.is_floating_point() else va.clone()
    return out


def _interp(model_a: nn.Module, model_b: nn.Module, t: float, mode: str, inputs: torch.Tensor | None) -> nn.Module:
    m = copy.deepcopy(model_a)
    m.load_state_dict(_lerp_state(model_a.state_dict(), model_b.state_dict(), t))
    if mode == "reset":
        if inputs is None:
            raise SymmetryError("interpolate: bn='reset' needs the training inputs (inputs=)")
        reset_bn_stats(m, inputs)
    m.eval()
    return m


def interpolate(model_a: nn.Module, model_b: nn.Module, t: float, *, bn: str = "auto",
                inputs: Any = None) -> nn.Module:
    """The model at θ(t) = lerp(θ_A, θ_B, t), in eval mode, with BatchNorm statistics handled per ``bn``."""
    mode = _bn_mode(model_a, bn)
    if mode == "none":
        warnings.warn(_BN_WARNING, SymmetryWarning, stacklevel=2)
    return _interp(model_a, model_b, t, mode, as_inputs(inputs) if inputs is not None else None)


def fold_bn(model: nn.Module, example_input: Any = None) -> nn.Module:
    """A copy of ``model`` with every eval-mode BatchNorm folded into the Linear/Conv right before it
    (the BN becomes ``nn.Identity``). A BatchNorm that does not directly follow one raises."""
    from dicelab.symmetry.trace import _Tracer

    graph = _Tracer().trace(model)
    new = copy.deepcopy(model)
    mods = dict(model.named_modules())
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(mods[node.target], _BN):
            continue
        src = node.args[0]
        prev = mods.get(src.target) if isinstance(src, fx.Node) and src.op == "call_module" else None
        if not isinstance(prev, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d) or len(src.users) != 1:
            raise SymmetryError(f"fold_bn: BatchNorm '{node.target}' does not directly follow a Linear/Conv; "
                                "it cannot be folded")
        bn = new.get_submodule(node.target)
        layer = new.get_submodule(src.target)
        with torch.no_grad():
            inv = torch.rsqrt(bn.running_var + bn.eps)
            gamma = bn.weight if bn.affine else torch.ones_like(inv)
            beta = bn.bias if bn.affine else torch.zeros_like(inv)
            scale = gamma * inv
            shape = (-1,) + (1,) * (layer.weight.dim() - 1)
            layer.weight.mul_(scale.view(shape))
            bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
            new_bias = (bias - bn.running_mean) * scale + beta
            if layer.bias is None:
                layer.bias = nn.Parameter(new_bias.clone())
            else:
                layer.bias.copy_(new_bias)
        parent_name, _, child = node.target.rpartition(".")
        setattr(new.get_submodule(parent_name) if parent_name else new, child, nn.Identity())
    return new


@torch.no_grad()
def _producer_stats(model: nn.Module, names: list[str], x: torch.Tensor, batch: int = 512) -> dict[str, tuple]:
    """Per producing module, per-unit (mean, std) of its output over ``x`` (float64, population std)."""
    acc: dict[str, list] = {n: [0, None, None] for n in names}
    handles = []
    for name in names:
        mod = model.get_submodule(name)
        fdim = 1 if isinstance(mod, nn.Conv1d | nn.Conv2d | nn.Conv3d) else -1

        def hook(_m, _args, out, _name=name, _fdim=fdim):
            z = out.detach().to(torch.float64).movedim(_fdim, -1)
            z = z.reshape(-1, z.shape[-1])
            a = acc[_name]
            a[0] += z.shape[0]
            a[1] = z.sum(0) if a[1] is None else a[1] + z.sum(0)
            a[2] = (z * z).sum(0) if a[2] is None else a[2] + (z * z).sum(0)

        handles.append(mod.register_forward_hook(hook))
    was = model.training
    model.eval()
    dtype = next(model.parameters()).dtype
    try:
        for s in range(0, len(x), batch):
            model(x[s:s + batch].to(dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    out = {}
    for name, (n, s1, s2) in acc.items():
        mean = s1 / n
        out[name] = (mean, (s2 / n - mean * mean).clamp_min(0).sqrt())
    return out


@torch.no_grad()
def repair(model_t: nn.Module, model_a: nn.Module, model_b: nn.Module, t: float, inputs: Any,
           spec: PermSpec | None = None, *, repair_output: bool = True) -> nn.Module:
    """REPAIR: a copy of the interpolated ``model_t`` whose hidden pre-activations (groups without BatchNorm,
    produced by one Linear/Conv) have, layer by layer, the per-unit mean (1−t)μ_A + tμ_B and std
    (1−t)σ_A + tσ_B measured on ``inputs``; the affine correction is folded into the producing layer.

    **Decision** (``repair_output=True``): the layer that writes the logits is corrected too. The spec's
    digits calibration (§12, WM + REPAIR 0.007–0.028 at width 64) is reproduced only this way; correcting the
    hidden layers alone gives 0.036–0.072 on the same nets (``repair_output=False``)."""
    x = as_inputs(inputs)
    spec = spec_for(model_a, spec, x[:2])
    names = [spec.producers[g.name] for g in spec.groups if g.name in spec.producers]
    if repair_output:
        names += [n for n in spec.output_producers if n not in names]
    if not names:
        return copy.deepcopy(model_t)
    stats_a = _producer_stats(model_a, names, x)
    stats_b = _producer_stats(model_b, names, x)
    m = copy.deepcopy(model_t)
    for name in names:
        mu_hat, sd_hat = _producer_stats(m, [name], x)[name]
        mu_t = torch.lerp(stats_a[name][0], stats_b[name][0], float(t))
        sd_t = torch.lerp(stats_a[name][1], stats_b[name][1], float(t))
        scale = torch.where(sd_hat > 1e-12, sd_t / torch.where(sd_hat > 1e-12, sd_hat, 1.0), torch.ones_like(sd_hat))
        layer = m.get_submodule(name)
        shape = (-1,) + (1,) * (layer.weight.dim() - 1)
        layer.weight.mul_(scale.view(shape).to(layer.weight))
        if hasattr(layer, "frozen") and isinstance(layer.frozen, torch.Tensor):
            layer.frozen.mul_(scale.view(shape).to(layer.frozen))
        if layer.bias is not None:
            layer.bias.copy_(((layer.bias.to(torch.float64) - mu_hat) * scale + mu_t).to(layer.bias))
    return m


def barrier_value(ts: list[float], ys: list[float], kind: str) -> float:
    """The barrier of curve ``ys`` over ``ts`` (which hold 0 and 1; 0.5 for ``midpoint``)."""
    y0, y1 = ys[0], ys[-1]
    if kind == "sup_linear":
        return max(y - (y0 + t * (y1 - y0)) for t, y in zip(ts, ys, strict=True))
    if kind == "max_minus_mean":
        return max(ys) - 0.5 * (y0 + y1)
    if kind == "midpoint":
        return ys[ts.index(0.5)] - 0.5 * (y0 + y1)
    raise SymmetryError(f"barrier: kind must be one of {', '.join(KINDS)}, got {kind!r}")


@dataclass
class BarrierResult:
    """Interpolation curves (per curve name: ``t`` → train/test loss and error) and their barriers."""

    kind: str
    t: list[float]
    curves: dict[str, dict[str, list[float]]]
    barriers: dict[str, dict[str, float]]
    bn: str
    l2: dict[str, float] = field(default_factory=dict)
    match: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def value(self, curve: str = "before", metric: str = "train_loss") -> float:
        return self.barriers[curve][metric]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "t": self.t, "curves": self.curves, "barriers": self.barriers, "bn": self.bn,
                "l2": self.l2, "match": self.match, "notes": self.notes}


def _curve(model_a: nn.Module, model_b: nn.Module, ts: list[float], mode: str, splits: dict, loss_fn: Any,
           x_train: torch.Tensor, do_repair: bool, spec: PermSpec | None,
           repair_output: bool = True) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {f"{s}_{m}": [] for s in splits for m in ("loss", "error")}
    for t in ts:
        m = _interp(model_a, model_b, t, mode, x_train)
        if do_repair:
            m = repair(m, model_a, model_b, t, x_train, spec, repair_output=repair_output)
        for s, split in splits.items():
            loss, err = evaluate_split(m, split, loss_fn)
            out[f"{s}_loss"].append(loss)
            out[f"{s}_error"].append(err)
    return out


def barrier(model_a: nn.Module, model_b: nn.Module, data: Any, *, points: int = 25, kind: str = "sup_linear",
            align: str | None = None, bn: str = "auto", repair: bool = False, loss_fn: Any = None,
            spec: PermSpec | None = None, generator: torch.Generator | None = None,
            max_iter: int = 100, repair_output: bool = True) -> BarrierResult:
    """Loss and error barriers along the linear path from A to B, naive (``before``) and, with
    ``align="weight"|"activation"|"both"``, after aligning B to A (``after``, ``after_activation``);
    ``repair=True`` adds REPAIR on the (aligned) path (``after_repair``; ``repair_output`` also corrects the
    logits layer, see :func:`repair`). ``data``: a DataBundle or Splits
    (train for BN statistics, activation matching and REPAIR; test if present)."""
    if kind not in KINDS:
        raise SymmetryError(f"barrier: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if points < 2:
        raise SymmetryError(f"barrier: points must be >= 2, got {points}")
    if align not in (None, "none", "weight", "activation", "both"):
        raise SymmetryError(f"barrier: align must be none, weight, activation or both, got {align!r}")
    splits = as_splits(data)
    if "train" not in splits:
        raise SymmetryError("barrier: data needs a training split")
    x_train = splits["train"].x
    mode = _bn_mode(model_a, bn)
    notes = []
    if mode == "none":
        warnings.warn(_BN_WARNING, SymmetryWarning, stacklevel=2)
        notes.append(_BN_WARNING)
    ts = [i / (points - 1) for i in range(points)]
    if kind == "midpoint" and 0.5 not in ts:
        ts = sorted([*ts, 0.5])
    need_spec = align not in (None, "none") or repair
    spec = spec_for(model_a, spec, x_train[:2]) if need_spec else spec
    curves = {"before": _curve(model_a, model_b, ts, mode, splits, loss_fn, x_train, False, spec)}
    result = BarrierResult(kind, ts, curves, {}, mode, notes=notes)
    if need_spec:
        result.l2["before"] = l2_distance(model_a.state_dict(), model_b.state_dict(), spec)
    aligned_b = model_b
    methods = {"weight": ["weight"], "activation": ["activation"], "both": ["weight", "activation"]}.get(align or "", [])
    for i, method in enumerate(methods):
        kw: dict[str, Any] = {"generator": generator}
        if method == "weight":
            kw["max_iter"] = max_iter
        b_al, info = align_models(model_a, model_b, method=method, inputs=x_train, spec=spec, **kw)
        name = "after" if i == 0 else f"after_{method}"
        curves[name] = _curve(model_a, b_al, ts, mode, splits, loss_fn, x_train, False, spec)
        result.match[name] = info.to_dict()
        result.l2[name] = info.l2_after
        if i == 0:
            aligned_b = b_al
    if repair:
        name = "after_repair" if methods else "before_repair"
        curves[name] = _curve(model_a, aligned_b, ts, mode, splits, loss_fn, x_train, True, spec, repair_output)
    result.barriers = {c: {m: barrier_value(ts, ys, kind) for m, ys in curve.items()} for c, curve in curves.items()}
    return result
