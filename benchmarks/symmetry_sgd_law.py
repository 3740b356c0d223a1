"""SGD stationary law (spec 06 §7 reading B2, benchmark 21): measured vs predicted variance per direction.

    python benchmarks/symmetry_sgd_law.py
    python benchmarks/symmetry_sgd_law.py --chains 32 --steps 2000     # quicker

Softmax regression on the teacher task (D = 210, N = 2000, wd 1e-3) at θ*, B = 32, 64 chains × 3000 steps:
asserts the trajectory-noise ratio σ²_measured / σ²_B2 in [0.85, 1.15] for the top 8 directions at
ηλ_max = 0.1; prints the θ*-noise ratios, the ηλ_max = 0.5 rows, and a tanh 20-16-16-10 MLP (N = 2000, as in
the spec's calibration) at ηλ_max = 0.5 and 1.5 with the excess loss, asserting those ratios (noise on the
trajectory and at θ*) lie in [0.5, 4]. Writes variance_per_direction.png.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

from dicelab.data.embedded import load_teacher
from dicelab.models import MLP
from dicelab.symmetry import hessian_topk, minimize_full_batch, sgd_stationary_test
from dicelab.symmetry.plots import plot_variance


def teacher(n: int):
    return load_teacher(n_train=n, n_test=10, dim=20, hidden=64, classes=10, teacher_seed=0, data_seed=0)[0]


def show(tab, label: str) -> None:
    s = tab.settings
    print(f"\n== {label}: D={s['D']} N={s['N']} B={s['batch_size']} eta*lambda_max={s['eta_lambda_max']:.2f} "
          f"chains={s['n_chains']} steps={s['steps']} noise on {s['noise_at']}")
    print(f"{'i':>2s} {'lambda':>8s} {'eta*lam':>7s} {'s(theta*)':>10s} {'s(traj)':>10s} {'sigma2 meas':>12s} "
          f"{'sigma2 B2':>12s} {'ratio':>6s} {'ratio@theta*':>12s}")
    for r in tab.rows:
        print(f"{r['i']:2d} {r['lambda']:8.4f} {r['eta_lambda']:7.3f} {r['s_theta_star']:10.4g} {r['s_trajectory']:10.4g} "
              f"{r['sigma2_measured']:12.4g} {r['sigma2_B2']:12.4g} {r['ratio_B2']:6.3f} {r['ratio_B2_theta_star']:12.3f}")
    m = tab.summary
    print(f"excess loss: measured {m['excess_loss_measured']:.4g}, predicted (eta/4) tr(S_B) {m['excess_loss_pred_trace']:.4g}"
          f", top-k part {m['excess_loss_pred_topk']:.4g}; QtSQ off-diagonal share {m['offdiag_share']:.3f}; "
          f"{m['seconds']:.1f} s")


def check(tab, bounds: tuple[float, float], both: bool) -> bool:
    """Trajectory-noise ratios (the default reading) in ``bounds``; with ``both`` the θ*-noise ratios too."""
    lo, hi = bounds
    ok = True
    for col, label in (("ratio_B2", "trajectory noise"), ("ratio_B2_theta_star", "noise at theta*"))[:2 if both else 1]:
        r = tab.column(col)
        passed = all(lo <= v <= hi for v in r)
        ok &= passed
        print(f"{label} ratios in [{lo}, {hi}]: {'PASS' if passed else 'FAIL'} ({min(r):.3f}..{max(r):.3f})")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chains", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--out", default="runs/symmetry-bench")
    ap.add_argument("--mlp-n", type=int, default=2000, help="training samples of the tanh MLP rows")
    ap.add_argument("--skip-softmax", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ok = True
    data = teacher(2000)
    torch.manual_seed(0)
    star = minimize_full_batch(nn.Linear(20, 10), None, data, weight_decay=1e-3)
    spec = hessian_topk(star, None, data, k=8, weight_decay=1e-3)
    tables = []
    for eta_rel in () if args.skip_softmax else (0.1, 0.5):
        tab = sgd_stationary_test(star, None, data, eta_rel=eta_rel, batch_size=32, k=8, n_chains=args.chains,
                                  steps=args.steps, burn_in=500, weight_decay=1e-3, spectrum=spec)
        show(tab, f"softmax regression, eta*lambda_max = {eta_rel}")
        tables.append(tab)
        ok &= check(tab, (0.85, 1.15) if eta_rel == 0.1 else (0.5, 4.0), eta_rel != 0.1)
    data_m = teacher(args.mlp_n)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    mlp = minimize_full_batch(MLP(20, (16, 16), 10, "tanh"), None, data_m, weight_decay=1e-3, max_iter=4000)
    print(f"\ntanh 20-16-16-10 minimised in {mlp.minimize_info['iterations']} LBFGS iterations "
          f"({time.perf_counter() - t0:.1f} s)")
    spec_m = hessian_topk(mlp, None, data_m, k=8, weight_decay=1e-3)
    for eta_rel in (0.5, 1.5):
        tab = sgd_stationary_test(mlp, None, data_m, eta_rel=eta_rel, batch_size=32, k=8, n_chains=args.chains,
                                  steps=args.steps, burn_in=500, weight_decay=1e-3, spectrum=spec_m)
        show(tab, f"tanh MLP, eta*lambda_max = {eta_rel}")
        tables.append(tab)
        ok &= check(tab, (0.5, 4.0), True)
    path = Path(args.out) / f"variance_per_direction-{int(time.time())}.png"
    print(f"\nplot: {plot_variance(tables, path)}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
