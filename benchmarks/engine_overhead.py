"""Engine overhead: dicelab's Trainer versus a minimal hand-written PyTorch loop.

Both train the same model from the same initial weights on the same data in the same batch order
(the permutation comes from the run's ``data.order`` generator in both), evaluate validation accuracy
after every epoch and test accuracy at the end. Runs are interleaved and timed with
``time.thread_time`` on one thread, which is insensitive to other load on the machine; which loop runs
first alternates between pairs, and the median of the per-pair ratios is reported. Target: ratio <= 1.10.

    python benchmarks/engine_overhead.py [--repeats 7] [--epochs 5]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from dicelab.config import load_run_config
from dicelab.train import Trainer


def hand_loop(model, data, cfg, order_generator) -> float:
    """What a PyTorch user writes by hand: shuffle, forward, mean CE, backward, step; eval per epoch."""
    tc = cfg.train
    opt = torch.optim.SGD(model.parameters(), lr=tc.lr, momentum=0.9)
    x_all, y_all = data.train.x, data.train.y
    for _ in range(tc.epochs):
        model.train()
        order = torch.randperm(len(y_all), generator=order_generator)
        running = 0.0
        for start in range(0, len(order), tc.batch_size):
            idx = order[start:start + tc.batch_size]
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            running += loss.item()
        model.eval()
        with torch.no_grad():
            val_acc = (model(data.val.x).argmax(1) == data.val.y).float().mean().item()
    with torch.no_grad():
        return (model(data.test.x).argmax(1) == data.test.y).float().mean().item() + 0 * val_acc + 0 * running


def measure(config_path: str, overrides: list[str], repeats: int) -> tuple[float, float, float, float]:
    cfg = load_run_config(config_path, overrides=[*overrides, "train.progress=false", "output.checkpoint=false"])
    assert cfg.train.optimizer == "momentum", "the hand loop uses SGD with momentum 0.9"
    ratios, t_hand, t_engine = [], [], []
    for r in range(repeats + 2):
        trainer = Trainer(cfg, quiet=True)
        model = copy.deepcopy(trainer.model)
        g = trainer.seeds.generator("data.order")
        # Alternate which loop goes first, so that neither always runs on caches the other warmed.
        if r % 2:
            t0 = time.thread_time()
            record = trainer.fit(write=False)
            t1 = time.thread_time()
            hand_acc = hand_loop(model, trainer.data, cfg, g)
            t2 = time.thread_time()
            engine_s, hand_s = t1 - t0, t2 - t1
        else:
            t0 = time.thread_time()
            hand_acc = hand_loop(model, trainer.data, cfg, g)
            t1 = time.thread_time()
            record = trainer.fit(write=False)
            t2 = time.thread_time()
            hand_s, engine_s = t1 - t0, t2 - t1
        if r < 2:  # one warm-up pair in each order
            continue
        # Same weights, data and order: the two loops must land on the same test accuracy.
        assert abs(record["final"]["test_accuracy"] - hand_acc) < 1e-6, (record["final"]["test_accuracy"], hand_acc)
        t_hand.append(hand_s)
        t_engine.append(engine_s)
        ratios.append(engine_s / hand_s)
    return statistics.median(ratios), statistics.median(t_hand), statistics.median(t_engine), min(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = [
        ("digits MLP 64-128-128-10, batch 32", "examples/digits_mlp.toml", []),
        ("digits MLP 64-128-128-10, batch 128", "examples/digits_mlp.toml", ["train.batch_size=128"]),
        ("teacher MLP 50-256-256-10, batch 32", "examples/digits_mlp.toml",
         ["data.name=teacher", "model.widths=[256, 256]", "data.options={n_train=2000, n_test=2000}"]),
    ]
    print(f"engine overhead: Trainer.fit vs a hand-written loop, {args.epochs} epochs, 1 thread, "
          f"median of {args.repeats} interleaved pairs (thread time)")
    results = []
    for label, path, overrides in cases:
        ratio, hand, engine, best = measure(path, [*overrides, f"train.epochs={args.epochs}"], args.repeats)
        results.append(ratio)
        print(f"  {label:40s} hand {hand * 1e3:8.1f} ms   trainer {engine * 1e3:8.1f} ms   "
              f"ratio {ratio:.3f} (best pair {best:.3f})")
    print(f"engine ratio {results[0]:.2f}  (target <= 1.10: {'MET' if results[0] <= 1.10 else 'NOT MET'})")


if __name__ == "__main__":
    main()
