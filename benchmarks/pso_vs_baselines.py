"""PSOSampler vs baseline samplers on shifted 5-D sphere and Rastrigin (spec 02 §10 check 5 [B]).

Functions on [-5.12, 5.12]^5 with the optimum moved to (1.5, -1.5, 1.5, -1.5, 1.5); 400 trials (PSO: 20 particles
x 20 iterations, ``sparse_k=None``), seeds 0-9, in-memory storage, one worker. Prints the median best value of each
sampler and the ratio median-best(PSO) / median-best(baseline) for random, random-sparse, TPE and CMA-ES (ratio
< 1: PSO better), and in how many seeds PSO beat the baseline. On a plain box there are no optional techniques,
so random-sparse is uniform random search with its own per-trial-number seeding.

    python benchmarks/pso_vs_baselines.py [--trials 400] [--particles 20] [--seeds 10] [--quick]

``--quick``: 200 trials (10 x 20), 3 seeds, TPE skipped (it is the slow one: O(n^2) in the trials).
CMA-ES needs the ``cmaes`` package; without it the row says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np
import optuna
from optuna.distributions import FloatDistribution

from dicelab.study.samplers import make_sampler

SHIFT = np.array([1.5, -1.5, 1.5, -1.5, 1.5])
BOX = 5.12
NAMES = [f"x{i}" for i in range(5)]
SPACE = {n: FloatDistribution(-BOX, BOX) for n in NAMES}


def sphere(z: np.ndarray) -> float:
    return float(np.sum(z * z))


def rastrigin(z: np.ndarray) -> float:
    return float(10 * len(z) + np.sum(z * z - 10 * np.cos(2 * np.pi * z)))


def best_value(fn, sampler, n_trials: int) -> float:
    study = optuna.create_study(direction="minimize", sampler=sampler)

    def objective(trial: optuna.Trial) -> float:
        return fn(np.array([trial.suggest_float(n, -BOX, BOX) for n in NAMES]) - SHIFT)

    study.optimize(objective, n_trials=n_trials)
    return study.best_value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=400)
    ap.add_argument("--particles", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="200 trials, 10 particles, 3 seeds, no TPE")
    args = ap.parse_args()
    if args.quick:
        args.trials, args.particles, args.seeds = 200, 10, 3
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    baselines = ["random", "random-sparse", "tpe", "cmaes"]
    if args.quick:
        baselines.remove("tpe")
    seeds = range(args.seeds)
    print(f"{args.trials} trials, PSO {args.particles} particles x {args.trials // args.particles} iterations, "
          f"seeds 0-{args.seeds - 1}")
    for fn in (sphere, rastrigin):
        t0 = time.perf_counter()
        pso = [best_value(fn, make_sampler("pso", SPACE, seed=s, pso_options={"n_particles": args.particles}),
                          args.trials) for s in seeds]
        print(f"\n{fn.__name__}: PSO median best {np.median(pso):.4g}  ({time.perf_counter() - t0:.1f} s)")
        print(f"  {'baseline':<14} {'median best':>12} {'PSO/baseline':>13} {'PSO wins':>9} {'time s':>7}")
        for name in baselines:
            if name == "cmaes" and importlib.util.find_spec("cmaes") is None:
                print(f"  {name:<14} {'n/a: the cmaes package is not installed':>44}")
                continue
            t0 = time.perf_counter()
            base = [best_value(fn, make_sampler(name, SPACE, seed=s, n_trials=args.trials), args.trials)
                    for s in seeds]
            ratio = np.median(pso) / np.median(base)
            wins = sum(a < b for a, b in zip(pso, base, strict=True))
            print(f"  {name:<14} {np.median(base):>12.4g} {ratio:>13.3f} {wins:>6}/{len(pso)} "
                  f"{time.perf_counter() - t0:>7.1f}")


if __name__ == "__main__":
    main()
