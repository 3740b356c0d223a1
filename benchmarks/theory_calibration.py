"""Full calibrations of the singular-limit experiments E1–E6 (spec 03 §15 [B] checks 17–22).

    python benchmarks/theory_calibration.py            # fast runtimes (B17) + full settings (B18–B22)
    python benchmarks/theory_calibration.py --fast-only
    python benchmarks/theory_calibration.py --only E1 E2

Prints one table per experiment (measured, threshold, pass) and the fast-runtime ratio to the 30 s target.
Writes result.json + PNGs under runs/theory-calibration/<id>/NNN/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dicelab.theory.experiments import EXPERIMENTS, run_experiment


def table(res) -> None:
    print(f"\n== {res.id} ({res.mode}) — {res.runtime_s:.1f} s — {'PASS' if res.passed else 'FAIL'}")
    for c in res.checks:
        print(f"  [{'ok' if c.passed else 'XX'}] {c.name:70s} measured {c.measured:<12.5g} {c.threshold}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", nargs="*", default=sorted(EXPERIMENTS.names()))
    ap.add_argument("--fast-only", action="store_true")
    ap.add_argument("--out", default="runs/theory-calibration")
    args = ap.parse_args()
    ok = True
    print("B17: fast runtimes (target < 30 s on 2 CPU cores)")
    print(f"{'id':4s} {'runtime s':>10s} {'ratio to 30 s':>14s} {'checks':>8s}")
    for k in args.only:
        res = run_experiment(k, mode="fast", plots=False)
        ok &= res.passed
        print(f"{k:4s} {res.runtime_s:10.1f} {res.runtime_s / 30:14.2f} {'pass' if res.passed else 'FAIL':>8s}")
    if not args.fast_only:
        for k in args.only:
            res = run_experiment(k, mode="full", out=Path(args.out) / k)
            table(res)
            ok &= res.passed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
