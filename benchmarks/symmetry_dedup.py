"""Teacher–student dedup (spec 06 §3 protocol, benchmark 19) and the canonical-sort negative control.

    python benchmarks/symmetry_dedup.py

One-hidden-layer 4-3-1 tanh teacher, 512 Gaussian inputs, MSE; 20 student seeds trained full-batch with Adam
(lr 0.05, 6000 steps). Among the students that reach MSE < 1e-4: which of the teacher's 48 ghost copies each one
found (by weight matching to the teacher), distinct solutions raw vs canonical at tol 0.1 / 0.3 / 1.0 and the
distance to the teacher. Asserts canonical groups at tol 1.0 <= 2 while raw = the number of distinct ghost
copies hit (spec 06 states raw = successes; that also needs no two students in one copy, printed as a
separate check), and median canonical distance <= 0.3 × median raw distance. Negative control: two digits
ReLU 64-64 nets; weight matching brings B closer to A than sorting both into canonical form.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
from _symmetry_common import DIGITS, train

from dicelab.models import MLP
from dicelab.symmetry import PermSpec, align, canonicalize, dedup, weight_matching


def flat(m: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().double().flatten() for p in m.state_dict().values()])


def train_students(x: torch.Tensor, y: torch.Tensor, seeds: list[int]) -> tuple[list[torch.nn.Module], list[float]]:
    """4-3-1 tanh students, one per seed (init: MLP under torch.manual_seed(seed)), trained full-batch with Adam
    (lr 0.05, 6000 steps). All students are stacked into one batched computation: their losses are summed, so
    each gets its own gradient, and Adam acts elementwise, so this is the same optimisation as separate runs
    (up to rounding)."""
    inits = []
    for seed in seeds:
        torch.manual_seed(seed)
        inits.append(MLP(4, (3,), 1, "tanh").double())
    params = {k: torch.stack([m.state_dict()[k] for m in inits]).requires_grad_(True) for k in inits[0].state_dict()}
    opt = torch.optim.Adam(params.values(), lr=0.05)

    def per_student_mse() -> torch.Tensor:
        h = torch.tanh(torch.einsum("nd,shd->snh", x, params["fc1.weight"]) + params["fc1.bias"][:, None, :])
        out = torch.einsum("snh,soh->sno", h, params["head.weight"]) + params["head.bias"][:, None, :]
        return ((out - y[None]) ** 2).mean(dim=(1, 2))

    for _ in range(6000):
        opt.zero_grad()
        per_student_mse().sum().backward()
        opt.step()
    mses = per_student_mse().detach().tolist()
    for i, m in enumerate(inits):
        m.load_state_dict({k: v[i].detach() for k, v in params.items()})
    return inits, mses


def main() -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    teacher = MLP(4, (3,), 1, "tanh").double()
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(512, 4, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = teacher(x)
    students, mses = train_students(x, y, list(range(20)))
    good = [s for s, m in zip(students, mses, strict=True) if m < 1e-4]
    print(f"students reaching MSE < 1e-4: {len(good)}/20 (MSEs: {', '.join(f'{m:.1e}' for m in mses)})")
    ok = True
    if len(good) < 2:
        print("too few successes to dedup: FAIL")
        return 1
    spec = PermSpec.from_module(teacher)
    # which of the teacher's 48 ghost copies each student found: the element that weight matching maps it
    # back to the teacher with (the canonical form gives the copy's identity without data, too)
    copies = []
    for st in good:
        g, _ = weight_matching(teacher, st, spec)
        copies.append((tuple(g.perms["fc1"].tolist()), tuple(int(v) for v in g.signs["fc1"].tolist())))
    n_copies = len(set(copies))
    t_can = flat(canonicalize(teacher, spec)[0])
    t_raw = flat(teacher)
    d_can = [float((flat(canonicalize(s, spec)[0]) - t_can).norm()) for s in good]
    d_raw = [float((flat(s) - t_raw).norm()) for s in good]
    d_wm = [float((flat(align(teacher, s, spec=spec)[0]) - t_raw).norm()) for s in good]
    print(f"{'student':>7s} {'MSE':>8s} {'ghost copy (perm, signs)':>28s} {'dist raw':>8s} {'canonical':>9s} {'aligned':>8s}")
    for i, st in enumerate(good):
        print(f"{i:7d} {((st(x) - y) ** 2).mean().item():8.1e} {str(copies[i]):>28s} {d_raw[i]:8.3f} {d_can[i]:9.3f} "
              f"{d_wm[i]:8.3f}")
    print(f"distinct ghost copies hit by the {len(good)} successes: {n_copies} of 48")
    for tol in (0.1, 0.3, 1.0):
        raw = len(dedup(good, tol=tol, spec=spec, canonical=False))
        can = len(dedup(good, tol=tol, spec=spec))
        print(f"tol {tol:>4}: distinct raw {raw:2d}, canonical {can:2d}")
        if tol == 1.0:
            print(f"  check canonical <= 2: {'pass' if can <= 2 else 'FAIL'}; raw = successes ({len(good)}): "
                  f"{'pass' if raw == len(good) else 'FAIL'}; raw = ghost copies hit ({n_copies}): "
                  f"{'pass' if raw == n_copies else 'FAIL'}")
            # spec 06 asks raw = successes, which presumes no two students found the same ghost copy; with
            # many successes among 48 copies collisions are expected, so the assert is on the copies actually hit
            ok &= can <= 2 and raw == n_copies
    print(f"distance to the teacher: canonical {min(d_can):.3f}..{max(d_can):.3f} (median "
          f"{statistics.median(d_can):.3f}), raw {min(d_raw):.3f}..{max(d_raw):.3f} (median {statistics.median(d_raw):.3f})")
    ratio = statistics.median(d_can) / statistics.median(d_raw)
    ok &= ratio <= 0.3
    print(f"median canonical / raw distance = {ratio:.3f} (assert <= 0.3)")
    model = {"name": "mlp", "widths": [64, 64], "activation": "relu"}
    (a, _), (b, _) = (train(s, DIGITS, model) for s in (0, 1))
    spec_d = PermSpec.from_module(a)
    wm = float((flat(align(a, b, spec=spec_d)[0]) - flat(a)).norm())
    srt = float((flat(canonicalize(b, spec_d)[0]) - flat(canonicalize(a, spec_d)[0])).norm())
    print(f"negative control (digits ReLU 64-64): weight-matching distance {wm:.3f} vs canonical-sort distance "
          f"{srt:.3f} vs raw {float((flat(b) - flat(a)).norm()):.3f}")
    ok &= wm < srt
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
