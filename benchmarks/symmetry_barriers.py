"""Barrier versus width (spec 06 §12, benchmark 18): naive, weight matching, + REPAIR, activation matching.

    python benchmarks/symmetry_barriers.py                 # teacher h = 16, 64, 256 and digits h = 16..128
    python benchmarks/symmetry_barriers.py --only digits

Two-hidden-layer ReLU MLPs, seeds 0 and 1, SGD lr 0.1, batch 64; teacher nets 30 epochs, digits 15. Prints
one row per width (sup_linear train-loss barriers, midpoint test accuracy, L2 distance to A before/after,
weight-matching sweeps and seconds) and asserts mean(weight matching / naive) <= 0.5 per task. Writes
count_vs_width.png (log10 |G| and barriers against the width).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from _symmetry_common import DIGITS, TEACHER, data, train

from dicelab.symmetry import PermSpec, barrier, count_equivalent
from dicelab.symmetry.plots import plot_count_vs_width

TASKS = {"teacher": (TEACHER, 20, (16, 64, 256), 30), "digits": (DIGITS, 64, (16, 32, 64, 128), 15)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=list(TASKS))
    ap.add_argument("--out", default="runs/symmetry-bench")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows, ok = [], True
    head = (f"{'task':8s} {'h':>4s} {'log10|G|':>9s} {'naive':>7s} {'wm':>7s} {'wm/nv':>6s} {'+repair':>8s} "
            f"{'act':>7s} {'mid acc nv/wm':>14s} {'L2 nv/wm':>13s} {'sweeps':>6s} {'wm s':>6s}")
    for task in args.only:
        spec, d_in, widths, epochs = TASKS[task]
        print(f"\n== {task}: {d_in}-h-h-10 ReLU, {epochs} epochs, seeds 0/1\n{head}")
        ratios = []
        for h in widths:
            model = {"name": "mlp", "widths": [h, h], "activation": "relu"}
            (a, _), (b, _) = (train(s, spec, model, epochs=epochs) for s in (0, 1))
            res = barrier(a, b, data(spec), align="both", repair=True)
            mid = barrier(a, b, data(spec), align="weight", kind="midpoint", points=3)
            log10 = count_equivalent(PermSpec.mlp([d_in, h, h, 10])).log10
            row = {"task": task, "width": h, "log10_count": log10, "naive": res.value("before"),
                   "weight": res.value("after"), "repair": res.value("after_repair"),
                   "activation": res.value("after_activation"),
                   "mid_acc_naive": 1 - mid.curves["before"]["test_error"][1],  # test accuracy at t = 1/2
                   "mid_acc_wm": 1 - mid.curves["after"]["test_error"][1],
                   "l2_naive": res.l2["before"], "l2_wm": res.l2["after"],
                   "sweeps": res.match["after"]["sweeps"], "seconds": res.match["after"]["seconds"]}
            rows.append(row)
            ratios.append(row["weight"] / row["naive"])
            print(f"{task:8s} {h:4d} {log10:9.2f} {row['naive']:7.3f} {row['weight']:7.3f} {ratios[-1]:6.3f} "
                  f"{row['repair']:8.4f} {row['activation']:7.3f} {row['mid_acc_naive']:6.3f}/{row['mid_acc_wm']:6.3f} "
                  f"{row['l2_naive']:6.2f}/{row['l2_wm']:6.2f} {row['sweeps']:6d} {row['seconds']:6.3f}")
        mean = sum(ratios) / len(ratios)
        passed = mean <= 0.5
        ok &= passed
        print(f"{task}: mean weight-matching/naive = {mean:.3f} (assert <= 0.5): {'PASS' if passed else 'FAIL'}")
    out = Path(args.out)
    print(f"\nplot: {plot_count_vs_width(rows, out / f'count_vs_width-{int(time.time())}.png')}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
