"""Offline probe and capacity floor (spec 04 §7, check 8)."""

import pytest
import torch

from dicelab.data import load_dataset
from dicelab.memorization import RandomLabelBank, capacity_floor, fit_offline_probe
from dicelab.memorization.experiments import probe_run
from dicelab.memorization.models import digits_cnn
from dicelab.seeding import generator


def test_capacity_floor_of_a_linear_head_on_random_features():
    # d = 16, n = 2, m = 1000: m ≥ 10·(d + 1)·n, so a linear head cannot fit random labels of random features
    floors = [capacity_floor(16, 2, 1000, generator=generator(s, "memorization.probe")) for s in range(5)]
    print("capacity floor d=16 n=2 m=1000, seeds 0-4:", [round(f, 3) for f in floors])
    assert all(f <= 0.62 for f in floors)
    assert all(f >= 0.5 for f in floors)   # it does fit a little: the floor is above chance
    # and where the head has far more parameters than samples it fits everything
    assert capacity_floor(64, 2, 40, generator=generator(0, "memorization.probe")) == 1.0


def test_offline_probe_on_a_random_init_cnn_cannot_fit():
    data = load_dataset("digits", val_fraction=0.0, standardize=True)
    model = digits_cnn(0)
    bank = RandomLabelBank(1000, 2, generator=generator(0, "memorization.bank"))
    res = fit_offline_probe(model, "b1", data.train.x, bank, generator=generator(0, "memorization.probe"))
    print(f"offline probe, random-init digits-cnn b1 (d={res.d}, n=2, m=1000): {res.train_acc:.3f}")
    assert res.d == 16 and res.m == 1000 >= 10 * (res.d + 1) * 2
    assert res.train_acc <= 0.62
    assert res.losses[-1] < res.losses[0]


def test_offline_probe_on_the_trained_extractor_beats_the_online_head(mlp20):
    # the online head is far from converged; a fresh head on the frozen features fits more (spec 04 §13)
    res = probe_run(mlp20.run_dir, "act3", epoch=20)
    print(f"after 20 epochs at act3: offline probe {res['train_acc']:.3f}, online head clean acc "
          f"{res['online_clean_acc']:.3f}, capacity floor {res['capacity_floor']:.3f}, "
          f"probe held-out {res['heldout_acc']:.3f}")
    assert res["online_clean_acc"] == pytest.approx(mlp20.rows[-1]["clean_acc"])
    assert res["train_acc"] >= res["online_clean_acc"]
    assert res["heldout_acc"] < 0.03       # the held-out control stays near chance 0.01
    with pytest.raises(Exception, match="--epoch"):
        probe_run(mlp20.run_dir, "act3", epoch=5)


def test_probe_leaves_the_model_as_it_was():
    model = digits_cnn(1)
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(50, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    bank = RandomLabelBank(50, 3, generator=generator(1, "memorization.bank"))
    fit_offline_probe(model, "b2", x, bank, generator=generator(1, "memorization.probe"), epochs=5)
    assert model.training and all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
