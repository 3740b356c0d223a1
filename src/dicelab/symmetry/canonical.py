"""Canonical form by re-ordering units (spec 06 §3): one representative per orbit, bit-identical for every
permuted (and sign-flipped) copy.

Groups are visited in topological order from the input, so a unit's incoming row is already in canonical
coordinates when its group is fixed. Per group: (1) sign fix — flip unit j so the entry of largest |·| in
its (incoming row, bias) is positive (first in canonical order on ties); (2) sort units by a key that every
other group's action leaves unchanged, descending, ties broken lexicographically on the canonical incoming
row, then on the sorted |outgoing| entries. Keys are sums of *sorted* values, so a unit's key is the same
float in every copy, whatever order its outgoing column is stored in.

Sorting is discontinuous where keys nearly tie: it does not align two different solutions (weight matching
does).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from dicelab.symmetry._util import spec_for
from dicelab.symmetry.errors import SymmetryError
from dicelab.symmetry.spec import (
    Group,
    GroupElement,
    PermSpec,
    apply_state,
    float_keys,
    scale_units,
    unit_rows,
)

__all__ = ["canonicalize", "canonical_state", "dedup", "KEYS"]

KEYS = ("influence", "in_l1", "out")
SIGN_REFS = ("in_max", "out_sum")


def _sorted_sum(rows: torch.Tensor) -> torch.Tensor:
    """Row sums that depend only on each row's multiset of values (sorted before summing)."""
    if rows.shape[1] == 0:
        return torch.zeros(rows.shape[0], dtype=torch.float64)
    return torch.sort(rows, dim=1).values.sum(dim=1)


def _rows(state: dict, refs: list, n: int, *, odd_only: bool = False) -> torch.Tensor:
    parts = [unit_rows(state[k].detach().to(torch.float64), a, r, n) for k, a, r in refs
             if state[k].is_floating_point() and (r.odd or not odd_only)]
    return torch.cat(parts, dim=1) if parts else torch.zeros(n, 0, dtype=torch.float64)


def _other_groups(spec: PermSpec, key: str, axis: int) -> list[str]:
    return [r.group for a, r in enumerate(spec.axes[key]) if a != axis and r is not None]


def canonical_state(state: dict[str, torch.Tensor], spec: PermSpec, *, key: str = "influence",
                    sign_ref: str = "in_max", relu_scale: str | None = None) -> tuple[dict, GroupElement]:
    """The canonical representative of ``state`` and the group element ``g`` with canonical = g·state."""
    if key not in KEYS:
        raise SymmetryError(f"canonicalize: key must be one of {', '.join(KEYS)}, got {key!r}")
    if sign_ref not in SIGN_REFS:
        raise SymmetryError(f"canonicalize: sign_ref must be one of {', '.join(SIGN_REFS)}, got {sign_ref!r}")
    if relu_scale not in (None, "unit_l2"):
        raise SymmetryError(f"canonicalize: relu_scale must be None or 'unit_l2', got {relu_scale!r}")
    signs_of = {g.name: g.signs for g in spec.groups}
    last_hidden = {g.name for g in spec.groups
                   if spec.refs(g.name, roles=("out",))
                   and all(not _other_groups(spec, k, a) for k, a, _ in spec.refs(g.name, roles=("out",)))}
    if sign_ref == "out_sum" and not any(signs_of[g] for g in last_hidden):
        raise SymmetryError("canonicalize: sign_ref='out_sum' needs a last hidden group with sign flips")
    work = dict(state)
    total = GroupElement({}, {})
    done: set[str] = set()
    for g in spec.groups:
        n = g.n
        in_refs = spec.refs(g.name, roles=("in",))
        out_refs = spec.refs(g.name, roles=("out",))
        s = None
        if g.signs:
            if sign_ref == "out_sum" and g.name in last_hidden:
                ref_sum = _sorted_sum(_rows(work, out_refs, n, odd_only=True))
                fallback = _sign_from_max(_rows(work, in_refs, n, odd_only=True),
                                          _rows(work, out_refs, n, odd_only=True))
                s = torch.where(ref_sum > 0, 1.0, torch.where(ref_sum < 0, -1.0, fallback))
            else:
                s = _sign_from_max(_rows(work, in_refs, n, odd_only=True), _rows(work, out_refs, n, odd_only=True))
            step = GroupElement({g.name: torch.arange(n)}, {g.name: s})
            work = apply_state(work, step, spec)
        if relu_scale == "unit_l2" and g.continuous and not g.norm and g.kind in ("units", "channels"):
            work = _relu_scale(work, spec, g)
        keys = _keys(work, spec, g, key, signs_of)
        perm = _sort(work, spec, g, keys, done)
        work = apply_state(work, GroupElement({g.name: perm}, {g.name: None}), spec)
        total.perms[g.name] = perm  # sign fix first, then the sort: new unit i = s[perm[i]] · old unit perm[i]
        total.signs[g.name] = s[perm] if s is not None else None
        done.add(g.name)
    return work, total


def _sign_from_max(in_rows: torch.Tensor, out_rows: torch.Tensor) -> torch.Tensor:
    """+1/-1 so that the largest-|·| incoming entry (first on ties) becomes positive; units whose incoming
    side is all zero use their outgoing side instead."""
    n = in_rows.shape[0]
    ar = torch.arange(n)
    s = torch.ones(n, dtype=torch.float64)
    zero_in = torch.ones(n, dtype=torch.bool)
    if in_rows.shape[1]:
        val = in_rows[ar, in_rows.abs().argmax(dim=1)]  # argmax returns the first maximum
        s = torch.where(val < 0, -1.0, 1.0).to(torch.float64)
        zero_in = (in_rows == 0).all(dim=1)
    if out_rows.shape[1] and bool(zero_in.any()):
        val = out_rows[ar, out_rows.abs().argmax(dim=1)]
        s = torch.where(zero_in, torch.where(val < 0, -1.0, 1.0).to(torch.float64), s)
    return s


def _relu_scale(work: dict, spec: PermSpec, g: Group) -> dict:
    inc = _rows(work, spec.refs(g.name, roles=("in",)), g.n)
    norm = inc.pow(2).sum(dim=1).sqrt()
    factor = torch.where(norm > 0, norm, torch.ones_like(norm))
    out = dict(work)
    for k, a, r in spec.refs(g.name, roles=("in",)):
        out[k] = scale_units(out[k], a, r, 1.0 / factor)
    for k, a, r in spec.refs(g.name, roles=("out",)):
        out[k] = scale_units(out[k], a, r, factor)
    return out


def _keys(work: dict, spec: PermSpec, g: Group, key: str, signs_of: dict[str, bool]) -> torch.Tensor:
    n = g.n
    if key == "influence":
        return _sorted_sum(_rows(work, spec.refs(g.name, roles=("in", "out", "norm")), n).abs())
    if key == "in_l1":
        inc = _rows(work, spec.refs(g.name, roles=("in",)), n)
        l1 = _sorted_sum(inc.abs())
        l2 = _sorted_sum(inc.pow(2)).sqrt()
        return torch.where(l2 > 0, l1 / torch.where(l2 > 0, l2, 1.0), torch.zeros_like(l1))
    out_refs = spec.refs(g.name, roles=("out",))
    for k, a, _ in out_refs:
        flexible = [o for o in _other_groups(spec, k, a) if signs_of.get(o)]
        if flexible:
            raise SymmetryError(f"canonicalize: key='out' on group {g.name!r} needs a next layer without sign "
                                f"freedom, but group {flexible[0]!r} has sign flips")
    return _sorted_sum(_rows(work, out_refs, n))


def _sort(work: dict, spec: PermSpec, g: Group, keys: torch.Tensor, done: set[str]) -> torch.Tensor:
    n = g.n
    canon_refs = [(k, a, r) for k, a, r in spec.refs(g.name, roles=("in", "norm"))
                  if all(o in done for o in _other_groups(spec, k, a))]
    rest_refs = [(k, a, r) for k, a, r in spec.refs(g.name, roles=("in", "out", "norm"))
                 if (k, a, r) not in canon_refs]
    key_list = keys.tolist()
    cache: dict[int, tuple] = {}
    canon_rows = _rows(work, canon_refs, n)
    rest_rows = _rows(work, rest_refs, n)

    def tie(j: int) -> tuple:
        if j not in cache:
            cache[j] = (tuple((-canon_rows[j]).tolist()), tuple(torch.sort(rest_rows[j].abs()).values.neg().tolist()))
        return cache[j]

    def order_units(units: list[int]) -> list[int]:
        units = sorted(units, key=lambda j: -key_list[j])
        out, i = [], 0
        while i < len(units):
            j = i
            while j + 1 < len(units) and key_list[units[j + 1]] == key_list[units[i]]:
                j += 1
            run = units[i:j + 1]
            out += sorted(run, key=tie) if len(run) > 1 else run
            i = j + 1
        return out

    members = g.class_members()
    perm = torch.arange(n)
    ordered = [order_units(m.tolist()) for m in members]
    if g.class_blocks:
        block_keys = [(-float(_sorted_sum(keys[torch.tensor(o)].view(1, -1))[0]), tuple(-key_list[j] for j in o))
                      for o in ordered]
        rank = sorted(range(len(ordered)), key=lambda b: block_keys[b])
        for pos, b in zip(members, rank, strict=True):
            perm[pos] = torch.tensor(ordered[b])
        return perm
    for pos, o in zip(members, ordered, strict=True):
        perm[pos] = torch.tensor(o, dtype=torch.long)
    return perm


def canonicalize(model: nn.Module, spec: PermSpec | None = None, *, key: str = "influence", sign_ref: str = "in_max",
                 relu_scale: str | None = None, example_input: Any = None) -> tuple[nn.Module, GroupElement]:
    """The canonical copy of ``model`` and the group element that maps the model to it.

    ``key``: ``influence`` (default; ‖w_in‖₁ + |b| + ‖w_out‖₁ + norm params), ``in_l1``
    (‖(w_in, b)‖₁/‖(w_in, b)‖₂, scale-free) or ``out`` (Σ w_out; next layer without sign freedom).
    ``sign_ref="out_sum"`` flips the last hidden group so Σ w_out > 0 (the one-hidden-layer teacher–student
    rule). ``relu_scale="unit_l2"`` also rescales ReLU units to unit incoming norm (exact only to ~1 ulp, and
    not part of the returned group element).
    """
    spec = spec_for(model, spec, example_input)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    spec.check_state(state)
    new_state, g = canonical_state(state, spec, key=key, sign_ref=sign_ref, relu_scale=relu_scale)
    new = copy.deepcopy(model)
    new.load_state_dict(new_state)
    return new, g


def dedup(models: Sequence[nn.Module], *, tol: float = 0.0, spec: PermSpec | None = None,
          canonical: bool = True, **kw: Any) -> list[list[int]]:
    """Cluster models that are the same solution up to the group: canonicalize, flatten, join the first
    cluster whose representative is within L2 ``tol`` (0: bitwise equal). ``canonical=False`` clusters the
    raw parameters (the negative control)."""
    if not models:
        return []
    spec = spec_for(models[0], spec, kw.pop("example_input", None))
    flats = []
    for m in models:
        state = canonicalize(m, spec, **kw)[0].state_dict() if canonical else m.state_dict()
        flats.append(torch.cat([state[k].detach().to(torch.float64).flatten() for k in float_keys(spec, state)]))
    clusters: list[list[int]] = []
    for i, f in enumerate(flats):
        for c in clusters:
            rep = flats[c[0]]
            if (tol <= 0 and torch.equal(f, rep)) or (tol > 0 and float((f - rep).norm()) <= tol):
                c.append(i)
                break
        else:
            clusters.append([i])
    return clusters
