"""Sample reading B1 (spec 06 §7, benchmark 22): bootstrap re-minimisation vs s_i/(nλ_i²), and ghost copies.

    python benchmarks/symmetry_bootstrap.py

Softmax regression on the teacher task (N = 2000, wd 1e-3), R = 40 bootstrap resamples re-minimised warm
from θ*: prints ratio_B1 and β_i = λ_i/(2 s_i) per top direction and asserts every ratio in [0.5, 3].
Then a tanh 20-16-16-10 (N = 1000, wd 1e-3) minimised from 8 cold-start seeds: the spread of q_i·θ across
the seeds before and after weight matching every minimiser to seed 0's; asserts the unaligned spread is
larger (cold starts land in different ghost copies).
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

from dicelab.data.embedded import load_teacher
from dicelab.models import MLP
from dicelab.symmetry import FlatObjective, align, bootstrap_minimizer_test, hessian_topk, minimize_full_batch


def teacher(n: int):
    return load_teacher(n_train=n, n_test=10, dim=20, hidden=64, classes=10, teacher_seed=0, data_seed=0)[0]


def main() -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    torch.set_num_threads(1)
    ok = True
    data = teacher(2000)
    torch.manual_seed(0)
    star = minimize_full_batch(nn.Linear(20, 10), None, data, weight_decay=1e-3)
    tab = bootstrap_minimizer_test(star, None, data, resamples=40, k=8, weight_decay=1e-3)
    print("softmax regression, R = 40 warm-started bootstrap minimisers")
    print(f"{'i':>2s} {'lambda':>8s} {'s_i':>10s} {'var meas':>11s} {'var B1':>11s} {'ratio':>6s} {'beta_B1':>8s}")
    for r in tab.rows:
        print(f"{r['i']:2d} {r['lambda']:8.4f} {r['s_theta_star']:10.4g} {r['var_B1_measured']:11.4g} "
              f"{r['var_B1_pred']:11.4g} {r['ratio_B1']:6.3f} {r['beta_B1']:8.3f}")
    ratios = tab.column("ratio_B1")
    passed = all(0.5 <= r <= 3.0 for r in ratios)
    ok &= passed
    print(f"ratio_B1 in [0.5, 3]: {'PASS' if passed else 'FAIL'}; corr(s_i, lambda_i) = {tab.summary['corr_s_lambda']:.3f}; "
          f"{tab.summary['seconds']:.1f} s")

    data_m = teacher(1000)
    mins = []
    for seed in range(8):
        torch.manual_seed(seed)
        mins.append(minimize_full_batch(MLP(20, (16, 16), 10, "tanh"), None, data_m, weight_decay=1e-3, gtol=1e-5,
                                        max_iter=4000))
        print(f"cold start seed {seed}: {mins[-1].minimize_info['iterations']} iterations, "
              f"loss {mins[-1].minimize_info['loss']:.5f}")
    ref = mins[0]
    spec = hessian_topk(ref, None, data_m, k=8, weight_decay=1e-3)
    obj = FlatObjective(ref, None, data_m, weight_decay=1e-3)

    def proj(m: nn.Module) -> torch.Tensor:
        theta = torch.cat([dict(m.named_parameters())[n].detach().reshape(-1) for n in obj.names])
        return (theta - obj.theta0) @ spec.eigvecs

    raw = torch.stack([proj(m) for m in mins[1:]])
    aligned = torch.stack([proj(align(ref, m)[0]) for m in mins[1:]])
    s_raw, s_al = raw.pow(2).mean(0).sqrt(), aligned.pow(2).mean(0).sqrt()
    print(f"{'i':>2s} {'rms q_i.(theta - theta_0) raw':>30s} {'after weight matching':>22s}")
    for i in range(len(s_raw)):
        print(f"{i:2d} {float(s_raw[i]):30.4f} {float(s_al[i]):22.4f}")
    passed = float(s_raw.mean()) > float(s_al.mean())
    ok &= passed
    print(f"unaligned spread {float(s_raw.mean()):.4f} > aligned {float(s_al.mean()):.4f}: {'PASS' if passed else 'FAIL'}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
