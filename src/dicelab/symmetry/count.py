"""Counting permutation-equivalent copies of a parameter point: |G| / |Stab(θ)|.

|G| = ∏_groups ∏_classes m_c! · 2^{n·[signs]} (times (number of classes)! where whole classes may be
permuted, as in GroupNorm). The stabilizer correction (needs θ) divides by m! for every set of m units of a
layer whose full rows (incoming row, bias, norm parameters, running stats, outgoing column) are identical,
and, with signs, compares rows up to sign and divides by 2 per unit whose odd part is all zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dicelab.symmetry._util import as_inputs, capture_taps, spec_for
from dicelab.symmetry.spec import Group, PermSpec, unit_rows

__all__ = ["CountResult", "count_equivalent", "unit_table"]

_LN10 = math.log(10)


@dataclass
class CountResult:
    """``log10`` of the number of distinct copies (``exact`` as an int when asked), per-group rows, the
    stabilizer correction, continuous symmetry dimensions (not counted) and diagnostics."""

    log10: float
    exact: int | None
    per_group: list[dict[str, Any]]
    stabilizer_log10: float = 0.0
    continuous_dims: int = 0
    redundant_pairs: list[tuple[str, int, int]] = field(default_factory=list)
    functionally_dead: dict[str, list[int]] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"log10": self.log10, "exact": None if self.exact is None else str(self.exact),
                "exact_digits": None if self.exact is None else len(str(self.exact)),
                "per_group": self.per_group, "stabilizer_log10": self.stabilizer_log10,
                "continuous_dims": self.continuous_dims, "redundant_pairs": [list(p) for p in self.redundant_pairs],
                "functionally_dead": self.functionally_dead, "notes": self.notes}


def unit_table(spec: PermSpec, state: dict[str, torch.Tensor], g: Group,
               roles: tuple[str, ...] = ("in", "out", "norm", "stat")) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, m) float64 rows of every entry unit j owns (in the given roles) and the (m,) odd-entry mask."""
    rows, odd = [], []
    for key, axis, ref in spec.refs(g.name, roles=roles):
        t = state[key]
        if not t.is_floating_point():
            continue
        r = unit_rows(t.detach().to(torch.float64), axis, ref, g.n)
        rows.append(r)
        odd.append(torch.full((r.shape[1],), ref.odd, dtype=torch.bool))
    if not rows:
        return torch.zeros(g.n, 0, dtype=torch.float64), torch.zeros(0, dtype=torch.bool)
    return torch.cat(rows, dim=1), torch.cat(odd)


def _sign_canonical(rows: torch.Tensor, odd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows with the odd part flipped so its first non-zero entry is positive; and which rows are
    their own sign image (odd part all zero)."""
    part = rows[:, odd]
    if part.shape[1] == 0:  # nothing to negate: every flip fixes every row
        return rows, torch.ones(len(rows), dtype=torch.bool)
    nz = part != 0
    self_sym = ~nz.any(dim=1)
    first = torch.where(nz.any(dim=1), nz.int().argmax(dim=1), torch.zeros(len(rows), dtype=torch.long))
    s = torch.where(self_sym, torch.ones(len(rows), dtype=rows.dtype), torch.sign(part[torch.arange(len(rows)), first]))
    out = rows.clone()
    out[:, odd] = part * s[:, None]
    return out, self_sym


def _clusters(rows: torch.Tensor, members: torch.Tensor, atol: float) -> list[list[int]]:
    """Groups of identical rows among ``members`` (bitwise, or max |Δ| ≤ atol, greedy)."""
    if atol <= 0:
        buckets: dict[bytes, list[int]] = {}
        for j in members.tolist():
            buckets.setdefault((rows[j] + 0.0).numpy().tobytes(), []).append(j)
        return list(buckets.values())
    left = members.tolist()
    out = []
    while left:
        j = left[0]
        d = (rows[left] - rows[j]).abs().amax(dim=1) if rows.shape[1] else torch.zeros(len(left))
        near = [left[i] for i in range(len(left)) if d[i] <= atol]
        out.append(near)
        left = [u for u in left if u not in set(near)]
    return out


def count_equivalent(model_or_spec: nn.Module | PermSpec, *, exact: bool = False, stabilizer: bool = True,
                     atol: float = 0.0, data: Any = None, spec: PermSpec | None = None,
                     example_input: Any = None) -> CountResult:
    """The number of distinct permutation-equivalent copies of a model (or of a spec's group order).

    With a module and ``stabilizer=True`` units with identical full rows (up to sign where flips are
    allowed) are counted once; ``atol`` > 0 treats near-duplicates as identical. ``data`` (inputs) adds the
    report-only list of units never active on it. Units sharing their incoming side but differing in the
    outgoing one are a continuous symmetry: listed in ``redundant_pairs``, not counted.
    """
    if isinstance(model_or_spec, PermSpec):
        spec, state = model_or_spec, None
    else:
        if example_input is None and data is not None:
            example_input = as_inputs(data)[:2]
        spec = spec_for(model_or_spec, spec, example_input)
        state = {k: v.detach().cpu() for k, v in model_or_spec.state_dict().items()}
    total = 0.0
    order = 1
    stab_total = 0.0
    stab_int = 1
    rows_out = []
    redundant: list[tuple[str, int, int]] = []
    for g in spec.groups:
        perm, sign = g.log10_order()
        classes = g.class_members()
        g_stab = 0.0
        if state is not None and stabilizer:
            full, odd = unit_table(spec, state, g)
            self_sym = torch.zeros(g.n, dtype=torch.bool)
            if g.signs:
                full, self_sym = _sign_canonical(full, odd)
            for members in classes:
                for cl in _clusters(full, members, atol):
                    g_stab += math.lgamma(len(cl) + 1) / _LN10
                    stab_int *= math.factorial(len(cl))
            if g.signs:
                k = int(self_sym.sum())
                g_stab += k * math.log10(2)
                stab_int *= 2 ** k
            redundant += _redundant(spec, state, g, classes)
        total += perm + sign - g_stab
        stab_total += g_stab
        if exact:
            order *= g.order()
        rows_out.append({"group": g.name, "kind": g.kind, "n": g.n,
                         "classes": None if g.classes is None else [len(m) for m in classes],
                         "log10_perm": perm, "log10_signs": sign, "stabilizer_log10": g_stab,
                         "continuous": g.continuous, "signs": g.signs, "affine_signs": g.affine_signs})
    exact_value = None
    if exact:
        if order % stab_int:
            raise AssertionError("stabilizer does not divide the group order")  # cannot happen: it is a subgroup
        exact_value = order // stab_int
    dead = _dead_units(model_or_spec, spec, data) if (data is not None and state is not None) else None
    return CountResult(total, exact_value, rows_out, stab_total, sum(g.continuous for g in spec.groups), redundant,
                       dead, list(spec.notes))


def _redundant(spec: PermSpec, state: dict, g: Group, classes: list[torch.Tensor]) -> list[tuple[str, int, int]]:
    """Pairs of units with the same incoming side (in, bias, norm, stats) but different outgoing columns."""
    inc, odd_in = unit_table(spec, state, g, roles=("in", "norm", "stat"))
    full, odd = unit_table(spec, state, g)
    if g.signs:
        inc, _ = _sign_canonical(inc, odd_in)
        full, _ = _sign_canonical(full, odd)
    pairs = []
    for members in classes:
        for cl in _clusters(inc, members, 0.0):
            for i in range(len(cl)):
                for j in range(i + 1, len(cl)):
                    if not torch.equal(full[cl[i]], full[cl[j]]) and len(pairs) < 1000:
                        pairs.append((g.name, cl[i], cl[j]))
    return pairs


def _dead_units(model: nn.Module, spec: PermSpec, data: Any) -> dict[str, list[int]]:
    x = as_inputs(data)
    feats = capture_taps(model, spec, x.to(next(model.parameters()).dtype))
    dead = {}
    for name, mats in feats.items():
        active = torch.zeros(mats[0].shape[1], dtype=torch.bool)
        for m in mats:
            active |= (m != 0).any(dim=0)
        dead[name] = torch.nonzero(~active).flatten().tolist()
    return dead
