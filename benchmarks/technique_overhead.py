"""Technique overhead (spec 01 §8, checks 24-25): step time with randomness techniques on versus all off.

Protocol: one thread; each measured step is one call of the engine's own ``Trainer.train_epoch`` over a
single batch (so the timed code is exactly what training runs: on_batch, forward, per-sample loss, backward,
on_grads, step, after_step); ``time.thread_time()`` per step, which other load on the machine does not
inflate; on and off steps interleaved on the same batch; the median of the per-pair ratios of 30 pairs after 5
warm-up pairs. Epoch hooks (schedules, shuffle) are not timed. "All on" = default modes, continuous main knobs
at their midpoint, flip horizontal_and_vertical, and optimizer / lr / batch size equal to the off run's
[train] (momentum, 0.01).

Lines printed first are informational: one ratio per technique alone (and each paper mode), the VGG on a
synthetic 3×32×32 batch of 128, the small 64-128-128-10 MLP at batch 128 (random-number generation dominates
at that size, so expect well above 1.5). The last line is the target, exactly ``mlp ratio X.XX``: all 22 on vs
all off, MLP 64-1024-1024-10 on digits inputs at batch 1024. Target <= 1.5.

    python benchmarks/technique_overhead.py [--pairs 30] [--warmup 5] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dicelab.config import load_run_config
from dicelab.data import load_dataset
from dicelab.data.base import DataBundle, Split
from dicelab.hooks import EpochPlan
from dicelab.randomness import technique, technique_names
from dicelab.seeding import generator
from dicelab.train import Trainer

TRAIN = {"optimizer": "momentum", "lr": 0.01, "epochs": 1, "shuffle": False, "progress": False, "threads": 1}
# Settings whose "on" is not a midpoint (choices and inherited values: the off run's own [train]).
SPECIAL = {"flip": "horizontal_and_vertical", "optimizer": "momentum", "lr": 0.01}
PAPER_MODES = {"shuffle": {"on": True, "mode": "window"}, "dropconnect": {"mode": "input"},
               "drnn": {"mode": "paper"}}


def on_value(name: str, batch: int):
    if name in SPECIAL:
        return SPECIAL[name]
    if name == "batch_size":
        return batch
    return technique(name).main().midpoint()


def all_on(batch: int) -> dict:
    return {name: on_value(name, batch) for name in technique_names()}


def digits_images(n: int) -> DataBundle:
    data = load_dataset("digits", val_fraction=0.0, train_size=1200)
    x = data.train.x.repeat((n + len(data.train) - 1) // len(data.train), 1, 1, 1)[:n]
    y = data.train.y.repeat((n + len(data.train) - 1) // len(data.train))[:n]
    return DataBundle("digits", Split(x, y), data.val, data.test, data.num_classes, data.input_shape)


def synthetic_images(n: int, shape=(3, 32, 32)) -> DataBundle:
    g = generator(0, "bench.synthetic")
    x = torch.rand((n, *shape), generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    empty = Split(x[:0], y[:0])
    return DataBundle("synthetic", Split(x, y), empty, empty, 10, shape)


def trainer_for(model: dict, data: DataBundle, batch: int, randomness: dict) -> Trainer:
    cfg = load_run_config(data={"name": "bench", "model": model, "train": {**TRAIN, "batch_size": batch},
                                "output": {"checkpoint": False}, "randomness": randomness})
    return Trainer(cfg, data=data, quiet=True)


def step_time(trainer: Trainer, batch: int) -> float:
    plan = EpochPlan(lr=trainer.state.lr, batch_size=batch, order=torch.arange(batch))
    t0 = time.thread_time()
    trainer.train_epoch(plan)
    return time.thread_time() - t0


def ratio(model: dict, data: DataBundle, batch: int, randomness: dict, pairs: int, warmup: int) -> float:
    off = trainer_for(model, data, batch, {})
    on = trainer_for(model, data, batch, randomness)
    ratios = []
    for i in range(warmup + pairs):
        first, second = (on, off) if i % 2 else (off, on)   # alternate which one runs on warm caches
        t_first, t_second = step_time(first, batch), step_time(second, batch)
        t_on, t_off = (t_first, t_second) if first is on else (t_second, t_first)
        if i >= warmup:
            ratios.append(t_on / t_off)
    return statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="10 pairs, 2 warm-up; skip the per-technique lines")
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.warmup = 10, 2
    torch.set_num_threads(1)
    big = {"name": "mlp", "widths": [1024, 1024]}
    small = {"name": "mlp", "widths": [128, 128]}
    digits_1024, digits_128 = digits_images(1024), digits_images(128)
    print(f"protocol: 1 thread, thread_time per step, median of {args.pairs} interleaved pairs after "
          f"{args.warmup} warm-up pairs")
    if not args.quick:
        print("per technique, alone vs all off (MLP 64-1024-1024-10, digits inputs, batch 1024):")
        for name in technique_names():
            r = ratio(big, digits_1024, 1024, {name: on_value(name, 1024)}, args.pairs, args.warmup)
            print(f"  {name:<17} ratio {r:.2f}")
            if name in PAPER_MODES:
                table = {**{technique(name).main().name: on_value(name, 1024)}, **PAPER_MODES[name]}
                r = ratio(big, digits_1024, 1024, {name: table}, args.pairs, args.warmup)
                print(f"  {name + ' (paper)':<17} ratio {r:.2f}")
        r = ratio(big, digits_1024, 1024, {**all_on(1024), "preset": "paper"}, args.pairs, args.warmup)
        print(f"all 22 on, preset paper: ratio {r:.2f}")
    vgg = ratio({"name": "vgg"}, synthetic_images(128), 128, all_on(128), args.pairs, args.warmup)
    print(f"vgg ratio {vgg:.2f}   (3-block VGG, synthetic 3x32x32, batch 128, all 22 on)")
    small_r = ratio(small, digits_128, 128, all_on(128), args.pairs, args.warmup)
    print(f"small-mlp ratio {small_r:.2f}   (64-128-128-10, batch 128, all 22 on; RNG-bound at this size)")
    if torch.cuda.is_available():
        print("cuda present: GPU ratios are not measured by this script yet")
    target = ratio(big, digits_1024, 1024, all_on(1024), args.pairs, args.warmup)
    print(f"mlp ratio {target:.2f}")


if __name__ == "__main__":
    main()
