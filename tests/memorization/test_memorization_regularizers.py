"""Reduced real versions of the λ-grid and standard-regulariser claims (spec 04 checks 9, 10).

The full claims (60 epochs, seeds 0-2, the whole grid) run in benchmarks/memorization_sweeps.py; here one
seed and 20 epochs of the same digits-mlp, compared at the final epoch against the shared λ = 0 run.
"""

import pytest
from _mem_support import digits_mlp

from dicelab.memorization.experiments import variant
from dicelab.train import Trainer

MEM = {"taps": ["act3"], "num_labels": 100, "clean_every": 20, "heldout": False}


def final_clean(axis: str, value) -> tuple[float, float]:
    cfg = variant(digits_mlp(20, memorization=MEM), axis, value, seed=0)
    # dropout and label smoothing come from the randomness catalog ([randomness] table)
    assert cfg.randomness.active() == ([axis] if axis in ("dropout", "label_smoothing") else [])
    record = Trainer(cfg).fit(write=False)
    assert record["status"] == "completed"
    return record["epochs"][-1]["memorization"][0]["clean_acc"], record["final"]["test_accuracy"]


@pytest.fixture(scope="module")
def baseline(mlp20):
    row = mlp20.rows[-1]
    assert row["epoch"] == 19 and row["tap"] == "act3"
    return row["clean_acc"], mlp20.record["final"]["test_accuracy"]


def test_lambda_lowers_memorization_monotonically_toward_chance(baseline):
    acc0, test0 = baseline
    acc03, _ = final_clean("lam", 0.3)
    acc1, test1 = final_clean("lam", 1.0)
    print(f"20 epochs, seed 0: clean RLP acc λ=0 {acc0:.4f}, λ=0.3 {acc03:.4f}, λ=1 {acc1:.4f}; "
          f"test acc {test0:.4f} -> {test1:.4f}")
    assert acc0 > acc03 > acc1
    assert acc1 <= 0.05                 # 5/n after 20 epochs (the 60-epoch benchmark asserts ≤ 4/n)
    assert acc1 <= 0.6 * acc0
    assert test1 >= test0 - 0.02


@pytest.mark.parametrize("axis, value", [("weight_decay", 5e-3), ("dropout", 0.2), ("label_smoothing", 0.3)])
def test_standard_regularizers_lower_memorization(baseline, axis, value):
    acc0, _ = baseline
    acc, test = final_clean(axis, value)
    print(f"20 epochs, seed 0: {axis}={value}: clean RLP acc {acc:.4f} vs {acc0:.4f} (ratio {acc / acc0:.2f})")
    assert acc <= 0.9 * acc0
    assert test > 0.9
