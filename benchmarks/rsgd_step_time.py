"""R-SGD step time against ``torch.optim.SGD(momentum=0.9)`` (spec 05 §9 check 8).

Two models: the spec's MLP 40-256-256-10 at batch 100 (the mnist1d benchmark task) and the digits MLP of
``examples/digits_mlp.toml`` / ``examples/digits_rsgd.toml`` (64-128-128-10, batch 32, the real digits
data). For each R-SGD setting and the reference, interleaved pairs of blocks are timed with
``time.thread_time`` on one thread (insensitive to other load; the pair order alternates); a block is
either 20 ``optimizer.step()`` calls or 10 full iterations (forward, backward, step) on real minibatches.
The median of the per-pair ratios is printed. Targets: full iteration <= 1.3 for element granularity
(foreach path); ``step()`` alone <= 1.3 for tensor and step granularity; element-mode ``step()`` alone is
printed, not a target.

    python benchmarks/rsgd_step_time.py [--pairs 31]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from dicelab.data import load_dataset
from dicelab.models import MLP
from dicelab.optim import ReinforcedSGD

SETTINGS = {
    "element, foreach": dict(granularity="element", foreach=True),
    "element, per-tensor": dict(granularity="element", foreach=False),
    "element, previous": dict(granularity="element", variant="previous"),
    "tensor": dict(granularity="tensor"),
    "step": dict(granularity="step"),
}


def block_times(model, opt, batches, kind: str) -> float:
    t0 = time.thread_time()
    if kind == "step":
        for _ in range(20):
            opt.step()
        return (time.thread_time() - t0) / 20
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.thread_time() - t0) / len(batches)


def measure(model0, batches, settings: dict, pairs: int) -> dict[str, tuple[float, float, float, float]]:
    """name -> (iteration ratio, step ratio, iteration µs, step µs); lr 0 keeps the timed models fixed."""
    ref_model = copy.deepcopy(model0)
    ref = torch.optim.SGD(ref_model.parameters(), lr=0.0, momentum=0.9)
    out = {}
    for name, kw in settings.items():
        model = copy.deepcopy(model0)
        opt = ReinforcedSGD(model.parameters(), lr=0.0, seed=0, **kw)
        for m, o in ((ref_model, ref), (model, opt)):  # warm-up
            block_times(m, o, batches, "iteration")
        ratios = {"iteration": [], "step": []}
        times = {"iteration": [], "step": []}
        for r in range(pairs):
            for kind in ("iteration", "step"):
                if r % 2:
                    a = block_times(model, opt, batches, kind)
                    b = block_times(ref_model, ref, batches, kind)
                else:
                    b = block_times(ref_model, ref, batches, kind)
                    a = block_times(model, opt, batches, kind)
                ratios[kind].append(a / b)
                times[kind].append(a)
        out[name] = (statistics.median(ratios["iteration"]), statistics.median(ratios["step"]),
                     statistics.median(times["iteration"]) * 1e6, statistics.median(times["step"]) * 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=31)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cases = []
    data = load_dataset("mnist1d", val_fraction=0.0)
    cases.append(("MLP 40-256-256-10, batch 100 (mnist1d)", MLP(40, (256, 256), 10), data, 100))
    data = load_dataset("digits")
    cases.append(("digits MLP 64-128-128-10, batch 32", MLP(64, (128, 128), 10), data, 32))
    print(f"R-SGD vs torch SGD(momentum=0.9): median of {args.pairs} interleaved pairs, thread time, 1 thread")
    verdicts = []
    for label, model, data, bs in cases:
        batches = [(data.train.x[i:i + bs], data.train.y[i:i + bs]) for i in range(0, 10 * bs, bs)]
        params = sum(p.numel() for p in model.parameters())
        print(f"\n{label}: {params:,} parameters")
        results = measure(model, batches, SETTINGS, args.pairs)
        for name, (it, st, it_us, st_us) in results.items():
            print(f"  {name:22s} iteration {it:5.2f}x ({it_us:7.0f} us)   step() alone {st:5.2f}x ({st_us:6.0f} us)")
        it = results["element, foreach"][0]
        verdicts.append((f"{label}: element (foreach) full iteration", it))
        for name in ("tensor", "step"):
            verdicts.append((f"{label}: {name} granularity step() alone", results[name][1]))
    print()
    for text, ratio in verdicts:
        print(f"{text}: {ratio:.2f}x  (target <= 1.30: {'MET' if ratio <= 1.30 else 'NOT MET'})")


if __name__ == "__main__":
    main()
