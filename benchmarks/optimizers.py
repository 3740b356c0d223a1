"""The optimizer benchmark of spec 05 §7 (the same function as ``dicelab bench optimizers``), plus the long
stability check of §9 check 11: R-SGD for 300 epochs on the teacher-student task at lr 0.05 with
``max_prob=None`` must stay finite.

    python benchmarks/optimizers.py [--quick] [--out DIR] [--long-seeds 5] [--no-long]
"""

from __future__ import annotations

import argparse
import dataclasses
import math

import torch

from dicelab.data import Split
from dicelab.optim.bench import TASKS, default_out_dir, load_task, print_report, run, train_run
from dicelab.threads import num_threads


def long_check(seeds: int) -> None:
    task = TASKS["teacher-student"]
    data = load_task(task)
    # the check is about finiteness; a 1,000-sample test split keeps the 301 evaluations cheap
    data = dataclasses.replace(data, test=Split(data.test.x[:1000], data.test.y[:1000]))
    print(f"\nlong run: R-SGD, teacher-student, lr 0.05, 300 epochs (9,600 steps), max_prob=None, {seeds} seeds")
    finite = True
    with num_threads(1):
        for seed in range(seeds):
            curve = train_run(task, data, "rsgd", seed, epochs=300, lr=0.05, record_steps=False)
            ok = curve.finite and all(v is not None and math.isfinite(v) for v in curve.train_loss)
            finite &= ok
            print(f"  seed {seed}: finite {ok}, final train error {curve.train_error[-1]}, "
                  f"test error (1,000 samples) {curve.test_error[-1]}, min train loss {min(curve.train_loss):.3g}")
    print(f"long run finite for every seed: {'MET' if finite else 'NOT MET'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--long-seeds", type=int, default=5)
    parser.add_argument("--no-long", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.out or default_out_dir()
    result = run(quick=args.quick, out=out, progress=True)
    print_report(result)
    print(f"results: {out} ({result.runtime_s:.0f} s)")
    if not args.no_long:
        long_check(args.long_seeds)


if __name__ == "__main__":
    main()
