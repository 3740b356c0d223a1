"""Remedy table (spec 06 §6, benchmark 20): symmetry-breaking variants of a 20-64-64-10 net on the teacher task.

    python benchmarks/symmetry_remedies.py

Variants: dense ReLU; per-unit orthogonal polynomials (Chebyshev, unique_random); forced pre-pruning with
frozen zeros (n_frozen = 4, 8, 16); W-Asym frozen κ·N(0,1) values (κ = 0.5, 1, 2; n_frozen = 8). Each trained
for seeds 0 and 1 (SGD lr 0.1, batch 64, 30 epochs). Prints train loss, test accuracy, log10 count, the
orbit test (a random permutation of layer-1 units applied to the weights: max |Δlogit| and train-loss rise)
and the naive barrier between the two seeds. Asserts only the orbit tests: the dense net's permuted copy is
the same function (|Δlogit| <= 1e-4), every broken variant's is not (|Δlogit| >= 1e-2).
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from _symmetry_common import TEACHER, data, train

from dicelab.symmetry import GroupElement, PermSpec, apply_group, barrier, count_equivalent

VARIANTS = [
    ("relu", {"name": "mlp"}),
    ("orthopoly", {"name": "orthopoly_mlp", "options": {"K": 4, "family": "chebyshev", "coeffs": "unique_random"}}),
    ("zeros n=4", {"name": "prepruned_mlp", "options": {"n_frozen": 4}}),
    ("zeros n=8", {"name": "prepruned_mlp", "options": {"n_frozen": 8}}),
    ("zeros n=16", {"name": "prepruned_mlp", "options": {"n_frozen": 16}}),
    ("W-Asym k=0.5", {"name": "prepruned_mlp", "options": {"n_frozen": 8, "value": "normal", "kappa": 0.5}}),
    ("W-Asym k=1", {"name": "prepruned_mlp", "options": {"n_frozen": 8, "value": "normal", "kappa": 1.0}}),
    ("W-Asym k=2", {"name": "prepruned_mlp", "options": {"n_frozen": 8, "value": "normal", "kappa": 2.0}}),
]


def main() -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    torch.set_num_threads(1)
    d = data(TEACHER)
    ok = True
    print(f"{'variant':14s} {'train loss':>10s} {'test acc':>8s} {'log10 |G|':>9s} {'orbit max|dlogit|':>17s} "
          f"{'orbit dloss':>11s} {'naive barrier':>13s} {'orbit test':>10s}")
    for name, m in VARIANTS:
        model = {"widths": [64, 64], "activation": "relu", **m}
        (a, ra), (b, _) = (train(s, TEACHER, model, epochs=30) for s in (0, 1))
        spec = PermSpec.from_module(a)
        perm = GroupElement({spec.groups[0].name: torch.randperm(64, generator=torch.Generator().manual_seed(5))},
                            {spec.groups[0].name: None})
        moved = apply_group(a, perm, spec.without_classes())
        with torch.no_grad():
            la, lm = a(d.train.x), moved(d.train.x)
            dlogit = float((la - lm).abs().max())
            dloss = float(F.cross_entropy(lm, d.train.y) - F.cross_entropy(la, d.train.y))
        naive = barrier(a, b, d, points=13).value("before")
        passed = dlogit <= 1e-4 if name == "relu" else dlogit >= 1e-2
        ok &= passed
        print(f"{name:14s} {ra['final']['train_loss']:10.4f} {ra['final']['test_accuracy']:8.3f} "
              f"{count_equivalent(a).log10:9.2f} {dlogit:17.3g} {dloss:11.3f} {naive:13.3f} "
              f"{'pass' if passed else 'FAIL':>10s}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
