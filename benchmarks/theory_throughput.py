"""Seed-parallel simulation throughput (seed·steps per second) vs a per-seed Python loop (spec 03 §15 [B]).

Both run the same noisy-GD recursion on the same objectives; the batched version is one (S, d) tensor per step
(``dicelab.theory.simulate``), the loop runs one seed at a time with S = 1. Prints a table and the ratio.

    python benchmarks/theory_throughput.py [--chains 2000] [--steps 500] [--loop-seeds 20]
"""

from __future__ import annotations

import argparse
import time

import torch

from dicelab.seeding import generator
from dicelab.theory import label_noise, sgld, simulate, weight_noise
from dicelab.theory.experiments.e4e5 import objects as e4_objects
from dicelab.theory.losses import ellipse_loss, product_loss


def per_seed_loop(obj, w0: torch.Tensor, alpha: float, steps: int, seeds: int) -> float:
    """Seed·steps per second of a plain Python loop over seeds (S = 1 per run)."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with torch.no_grad():
        for s in range(seeds):
            g = generator(s, "theory.noise")
            w = w0[None].clone()
            for _ in range(steps):
                w = w - alpha * obj.grad_hat(w, obj.sample_eta(g, 1))
    return seeds * steps / (time.perf_counter() - t0)


def batched(obj, w0: torch.Tensor, alpha: float, steps: int, chains: int) -> float:
    t0 = time.perf_counter()
    simulate(obj, w0, alpha, steps=steps, regime="trivial", chains=chains, project=None)
    return chains * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--chains", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--loop-seeds", type=int, default=20)
    args = ap.parse_args()
    L = product_loss()
    e4, _, _, _ = e4_objects()
    cases = [
        ("E1 label noise (d=2)", label_noise(L.model_fn, None, torch.ones(1), 1.0), torch.tensor([2.0, 0.5]), 0.02),
        ("E2 weight noise (d=2)", weight_noise(L, 0.1), torch.tensor([2.0, 0.5]), 0.02),
        ("E4 label noise (d=40)", e4, torch.full((40,), 0.5), 0.04),
        ("E6 SGLD (d=2)", sgld(ellipse_loss(), sigma=2.0), torch.tensor([2.0, 0.0]), 0.04),
    ]
    print(f"{'case':26s} {'batched seed*steps/s':>22s} {'loop seed*steps/s':>19s} {'ratio':>8s}")
    for name, obj, w0, a in cases:
        w0 = w0.to(torch.float64)
        obj.bind(w0[None])
        b = batched(obj, w0, a, args.steps, args.chains)
        lp = per_seed_loop(obj, w0, a, args.steps, args.loop_seeds)
        print(f"{name:26s} {b:22.3e} {lp:19.3e} {b / lp:8.1f}x")


if __name__ == "__main__":
    main()
