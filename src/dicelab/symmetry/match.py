"""Alignment of model B to model A (spec 06 §4).

**Weight matching** (Git Re-Basin's coordinate ascent, arXiv 2209.04836): maximise Σ ⟨θ_A, g·θ_B⟩ over
group elements g. Each sweep visits the groups in a random order (``symmetry.match`` stream); for group p,
C = Σ over every tensor axis p acts on of W_A (n × rest) · W̃_Bᵀ with every other group's current element
applied to B, and ``scipy.optimize.linear_sum_assignment(C, maximize=True)`` gives p's new permutation.
Groups with sign flips assign on |C| and take sign(C_{j,π(j)}) ("signed matching"), so odd-activation copies
align back exactly. An assignment is kept only if the objective rises by more than 1e-12; the search stops
after a sweep without improvement or ``max_iter`` sweeps. Norm affine parameters are scored, running
statistics move along unscored, classes restrict the assignment to within-class blocks.

**Activation matching** (needs data): one independent assignment per group on the correlation (or
cross-moment) of post-activation values on ``n_samples`` training inputs.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from dicelab.symmetry._util import as_inputs, capture_taps, spec_for
from dicelab.symmetry.errors import SymmetryError
from dicelab.symmetry.spec import (
    Group,
    GroupElement,
    PermSpec,
    apply_state,
    apply_tensor,
    float_keys,
    unit_rows,
)

__all__ = ["MatchInfo", "weight_matching", "activation_matching", "align", "l2_distance", "check_alignable"]

IMPROVE_TOL = 1e-12


@dataclass
class MatchInfo:
    """How a matching went: sweeps run, sweeps that improved, objective per sweep, L2 distance of B to A
    before and after, seconds."""

    method: str
    sweeps: int = 0
    improving_sweeps: int = 0
    objective: list[float] = field(default_factory=list)
    l2_before: float = float("nan")
    l2_after: float = float("nan")
    seconds: float = 0.0
    skipped_groups: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def l2_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], spec: PermSpec) -> float:
    """L2 distance over the floating parameters and buffers (fixed structure excluded)."""
    keys = float_keys(spec, a)
    return float(sum(((a[k].to(torch.float64) - b[k].to(torch.float64)) ** 2).sum() for k in keys) ** 0.5)


def check_alignable(spec: PermSpec, state_a: dict, state_b: dict, what: str = "align") -> None:
    """Refuse fully symmetry-broken specs and models whose fixed structure differs."""
    if not any(len(m) > 1 for g in spec.groups for m in g.class_members()) and not any(g.signs for g in spec.groups):
        raise SymmetryError(f"{what}: every group is fully symmetry-broken (no class has more than one unit); "
                            "there is nothing to align, only the naive barrier means anything")
    for key in spec.structure:
        if not torch.equal(state_a[key], state_b[key]):
            raise SymmetryError(f"{what}: the models' fixed structure differs at {key!r}; they are not copies "
                                "of one architecture (use the same structure_seed)")


def _assign(C: torch.Tensor, g: Group, signed: bool) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """Best permutation (and signs) for score matrix C (rows: A's units, columns: B's units)."""
    M = C.abs() if signed else C
    Mn = M.numpy()
    n = g.n
    perm = np.arange(n)
    members = [m.numpy() for m in g.class_members()]

    def solve(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, float]:
        sub = Mn[np.ix_(rows, cols)]
        r, c = linear_sum_assignment(sub, maximize=True)
        out = np.empty(len(rows), dtype=np.int64)
        out[r] = cols[c]
        return out, float(sub[r, c].sum())

    if g.class_blocks and len(members) > 1:
        k = len(members)
        scores = np.zeros((k, k))
        sols = {}
        for a in range(k):
            for b in range(k):
                sols[a, b], scores[a, b] = solve(members[a], members[b])
        r, c = linear_sum_assignment(scores, maximize=True)
        for a, b in zip(r, c, strict=True):
            perm[members[a]] = sols[a, b]
    else:
        for m in members:
            perm[m] = solve(m, m)[0]
    perm_t = torch.as_tensor(perm, dtype=torch.long)
    picked = C[torch.arange(n), perm_t]
    if signed:
        s = torch.where(picked < 0, -1.0, 1.0).to(torch.float64)
        return perm_t, s, float((picked * s).sum())
    return perm_t, None, float(picked.sum())


def _value(C: torch.Tensor, perm: torch.Tensor, s: torch.Tensor | None) -> float:
    picked = C[torch.arange(len(perm)), perm]
    return float((picked * s).sum() if s is not None else picked.sum())


def _objective(A: dict, B: dict, g: GroupElement, spec: PermSpec, keys: list[str]) -> float:
    sizes = {gr.name: gr.n for gr in spec.groups}
    total = 0.0
    for k in keys:
        axes = spec.axes.get(k, ())
        tb = apply_tensor(B[k], axes, g, sizes) if axes else B[k]
        total += float((A[k] * tb).sum())
    return total


def _scored_keys(spec: PermSpec, state: dict) -> list[str]:
    """Tensors in the objective: every float tensor except running statistics and fixed structure."""
    stat = {k for k, axes in spec.axes.items() if any(r is not None and r.role == "stat" for r in axes)}
    return [k for k in float_keys(spec, state) if k not in stat]


def weight_matching(model_a: nn.Module, model_b: nn.Module, spec: PermSpec | None = None, *, max_iter: int = 100,
                    signs: bool | None = None, init: GroupElement | None = None,
                    generator: torch.Generator | None = None, example_input: Any = None) -> tuple[GroupElement, MatchInfo]:
    """The group element g that (locally) maximises Σ ⟨θ_A, g·θ_B⟩; ``apply_group(model_b, g)`` is B aligned
    to A. ``signs=False`` ignores sign flips; ``init`` starts from a given element."""
    t0 = time.perf_counter()
    spec = spec_for(model_a, spec, example_input)
    sa = {k: v.detach().cpu() for k, v in model_a.state_dict().items()}
    sb = {k: v.detach().cpu() for k, v in model_b.state_dict().items()}
    spec.check_state(sa, "model A")
    spec.check_state(sb, "model B")
    check_alignable(spec, sa, sb, "weight_matching")
    if generator is None:
        from dicelab.seeding import generator as make

        generator = make(0, "symmetry.match")
    A = {k: v.to(torch.float64) for k, v in sa.items() if v.is_floating_point()}
    B = {k: v.to(torch.float64) for k, v in sb.items() if v.is_floating_point()}
    sizes = {g.name: g.n for g in spec.groups}
    use_signs = {g.name: g.signs and (signs is None or signs) for g in spec.groups}
    cur = init if init is not None else GroupElement(
        {g.name: torch.arange(g.n) for g in spec.groups},
        {g.name: torch.ones(g.n, dtype=torch.float64) if use_signs[g.name] else None for g in spec.groups})
    cur = GroupElement(dict(cur.perms), {k: (v if use_signs.get(k) else None) for k, v in cur.signs.items()})
    refs = {g.name: spec.refs(g.name, roles=("in", "out", "norm")) for g in spec.groups}
    keys = _scored_keys(spec, A)
    obj = _objective(A, B, cur, spec, keys)
    info = MatchInfo("weight", objective=[obj], l2_before=l2_distance(A, B, spec))
    for _ in range(max_iter):
        info.sweeps += 1
        improved = False
        for gi in torch.randperm(len(spec.groups), generator=generator).tolist():
            g = spec.groups[gi]
            if g.n < 2 and not use_signs[g.name]:
                continue
            C = torch.zeros(g.n, g.n, dtype=torch.float64)
            for k, a, r in refs[g.name]:
                if k not in A:
                    continue
                tb = apply_tensor(B[k], spec.axes[k], cur, sizes, skip=g.name)
                C += unit_rows(A[k], a, r, g.n) @ unit_rows(tb, a, r, g.n).T
            perm, s, new_val = _assign(C, g, use_signs[g.name])
            old_val = _value(C, cur.perms[g.name], cur.signs.get(g.name))
            if new_val - old_val > IMPROVE_TOL:
                cur.perms[g.name], cur.signs[g.name] = perm, s
                obj += new_val - old_val
                improved = True
        info.objective.append(obj)
        if not improved:
            break
        info.improving_sweeps += 1
    info.l2_after = l2_distance(A, apply_state(B, cur, spec), spec)
    info.seconds = time.perf_counter() - t0
    return cur, info


def activation_matching(model_a: nn.Module, model_b: nn.Module, inputs: Any, spec: PermSpec | None = None, *,
                        n_samples: int = 2048, similarity: str = "corr", generator: torch.Generator | None = None,
                        example_input: Any = None) -> tuple[GroupElement, MatchInfo]:
    """Match each group independently on post-activation statistics over ``n_samples`` inputs.

    ``similarity="corr"`` (Pearson, scale-free; default) or ``"cross"`` (E[Z_A Z_Bᵀ], Git Re-Basin's
    choice). Residual groups sum the matrices over their tap points; signs come from the sign of the
    matched correlation. Groups without a tap (attention heads) keep the identity (listed in
    ``info.skipped_groups``)."""
    if similarity not in ("corr", "cross"):
        raise SymmetryError(f"activation_matching: similarity must be 'corr' or 'cross', got {similarity!r}")
    t0 = time.perf_counter()
    x = as_inputs(inputs)
    spec = spec_for(model_a, spec, example_input if example_input is not None else x[:2])
    sa, sb = model_a.state_dict(), model_b.state_dict()
    check_alignable(spec, sa, sb, "activation_matching")
    if generator is None:
        from dicelab.seeding import generator as make

        generator = make(0, "symmetry.match")
    if len(x) > n_samples:
        x = x[torch.randperm(len(x), generator=generator)[:n_samples]]
    dtype = next(model_a.parameters()).dtype
    fa = capture_taps(model_a, spec, x.to(dtype))
    fb = capture_taps(model_b, spec, x.to(dtype))
    perms, sgns = {}, {}
    info = MatchInfo("activation", sweeps=1, improving_sweeps=1,
                     l2_before=l2_distance(dict(sa), dict(sb), spec))
    for g in spec.groups:
        if g.name not in fa:
            perms[g.name], sgns[g.name] = torch.arange(g.n), (torch.ones(g.n, dtype=torch.float64) if g.signs else None)
            info.skipped_groups.append(g.name)
            continue
        C = torch.zeros(g.n, g.n, dtype=torch.float64)
        for za, zb in zip(fa[g.name], fb[g.name], strict=True):
            za, zb = za.to(torch.float64), zb.to(torch.float64)
            if similarity == "corr":
                za = za - za.mean(0)
                zb = zb - zb.mean(0)
                na, nb = za.norm(dim=0), zb.norm(dim=0)
                za = za / torch.where(na > 0, na, 1.0)
                zb = zb / torch.where(nb > 0, nb, 1.0)
                C += za.T @ zb
            else:
                C += za.T @ zb / len(za)
        perms[g.name], sgns[g.name], _ = _assign(C, g, g.signs)
    g_el = GroupElement(perms, sgns)
    info.l2_after = l2_distance(dict(sa), apply_state(dict(sb), g_el, spec), spec)
    info.seconds = time.perf_counter() - t0
    return g_el, info


def align(model_a: nn.Module, model_b: nn.Module, *, method: str = "weight", inputs: Any = None,
          spec: PermSpec | None = None, **kw: Any) -> tuple[nn.Module, MatchInfo]:
    """B aligned to A (a new module) by ``method="weight"`` (no data) or ``"activation"`` (needs ``inputs``)."""
    example = kw.pop("example_input", None)
    if example is None and inputs is not None:
        example = as_inputs(inputs)[:2]
    spec = spec_for(model_a, spec, example)
    if method == "weight":
        g, info = weight_matching(model_a, model_b, spec, **kw)
    elif method == "activation":
        if inputs is None:
            raise SymmetryError("align: method='activation' needs inputs (training data)")
        g, info = activation_matching(model_a, model_b, inputs, spec, **kw)
    else:
        raise SymmetryError(f"align: method must be 'weight' or 'activation', got {method!r}")
    new = copy.deepcopy(model_b)
    new.load_state_dict(apply_state(model_b.state_dict(), g, spec))
    return new, info
