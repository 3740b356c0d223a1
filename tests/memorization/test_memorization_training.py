"""The [memorization] table in real training runs (spec 04 checks 1, 2, 3, 7, 12)."""

import json
import math

import pytest
import torch
from _mem_support import digits_mlp, small_mlp

from dicelab.config import load_run_config
from dicelab.errors import DicelabError
from dicelab.memorization import MemorizationHook
from dicelab.memorization.experiments import summarize_run
from dicelab.seeding import SeedBank
from dicelab.train import Trainer, evaluate


def held_out_logits(trainer):
    trainer.model.eval()
    with torch.no_grad():
        return trainer.model(trainer.data.test.x)


@pytest.mark.parametrize("reg", ["complement", "uniform", "grl"])
def test_lambda_zero_leaves_training_bit_identical(reg):
    # check 1: digits-mlp, 3 epochs, seed 0, heads at h1, h2 and input:fc vs no heads
    state = torch.get_rng_state()
    plain = Trainer(digits_mlp(3))
    plain.fit(write=False)
    after_plain = torch.get_rng_state()
    torch.set_rng_state(state)
    mem = Trainer(digits_mlp(3, memorization={"taps": ["act1", "act2", "input:head"], "reg": reg, "lam": 0.0}))
    record = mem.fit(write=False)
    assert torch.equal(after_plain, torch.get_rng_state())
    for a, b in zip(plain.model.parameters(), mem.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(held_out_logits(plain), held_out_logits(mem))
    assert len(record["epochs"][-1]["memorization"]) == 3


CATALOG = {"label_smoothing": 0.3, "dropout": 0.2, "flip": "horizontal"}


def test_heads_compose_with_the_randomness_catalog_and_stay_bit_identical_at_lambda_zero():
    # [randomness] hooks run first: the memorization hook sees soft (B, K) targets and flipped inputs, keys
    # the random labels by dataset index, and still checks each epoch that the indices match the batch
    plain = Trainer(digits_mlp(3, randomness=CATALOG))
    plain.fit(write=False)
    mem = Trainer(digits_mlp(3, randomness=CATALOG, memorization={"taps": ["act3"], "lam": 0.0, "num_labels": 10}))
    record = mem.fit(write=False)
    assert record["status"] == "completed"
    names = [type(h).__name__ for h in mem.hooks.hooks]
    assert names.index("MemorizationHook") > 0          # after the catalog's hook
    hook = next(h for h in mem.hooks.hooks if isinstance(h, MemorizationHook))
    assert hook._checked_epoch == 2                      # the per-epoch check ran (and passed) every epoch
    (row,) = record["epochs"][-1]["memorization"]
    assert row["tap"] == "act3" and 0.0 <= row["clean_acc"] <= 1.0 and 0.0 <= row["online_acc"] <= 1.0
    assert abs(row["heldout_acc"] - 0.1) < 0.05 and row["chance"] == 0.1
    # spec 04 check 1 (heads at λ = 0 vs no heads), here with the catalog's techniques on in both runs
    for a, b in zip(plain.model.parameters(), mem.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(held_out_logits(plain), held_out_logits(mem))
    # and the techniques did act: without them the model ends elsewhere
    bare = Trainer(digits_mlp(3))
    bare.fit(write=False)
    assert not torch.equal(held_out_logits(bare), held_out_logits(plain))


def test_batch_check_reads_soft_targets_by_their_class():
    from dicelab.memorization.hook import _targets_match

    labels = torch.tensor([3, 0, 9, 3])
    soft = torch.nn.functional.one_hot(labels, 10).float() * 0.7 + 0.03   # label smoothing ε = 0.3
    assert _targets_match(soft, labels) and _targets_match(labels.clone(), labels)
    assert not _targets_match(soft, torch.tensor([3, 0, 9, 4]))
    assert not _targets_match(torch.tensor([3, 0, 9, 4]), labels)
    uniform = torch.full((4, 10), 0.1)                                    # ε = 1: no class to compare
    assert _targets_match(uniform, labels) and not _targets_match(soft[:3], labels)


def test_lambda_zero_with_gradient_clipping_clips_heads_separately():
    # one global norm over model and heads would let head gradients rescale θ's update
    plain = Trainer(small_mlp(2, train={"grad_clip": 0.05}))
    plain.fit(write=False)
    mem = Trainer(small_mlp(2, train={"grad_clip": 0.05}, memorization={"taps": ["act1"]}))
    mem.fit(write=False)
    for a, b in zip(plain.model.parameters(), mem.model.parameters(), strict=True):
        assert torch.equal(a, b)
    hook = next(h for h in mem.hooks.hooks if isinstance(h, MemorizationHook))
    assert mem.optimizer.param_groups[-1]["params"] == list(hook.rlp.heads.parameters())
    assert mem.optimizer.param_groups[-1]["weight_decay"] == 0.0


def test_lambda_positive_changes_training():
    a = Trainer(small_mlp(1, memorization={"taps": ["act1"], "lam": 0.0}))
    b = Trainer(small_mlp(1, memorization={"taps": ["act1"], "lam": 0.5}))
    a.fit(write=False)
    b.fit(write=False)
    assert not all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True))


@pytest.mark.parametrize("n", [100, 10])
def test_first_epoch_online_accuracy_is_at_chance(n):
    # check 2: |online_acc − 1/n| ≤ 3·sqrt((1/n)(1 − 1/n)/m) after one epoch (uniform bank, m = 1000)
    record = Trainer(digits_mlp(1, memorization={"taps": ["act3"], "num_labels": n})).fit(write=False)
    (row,) = record["epochs"][0]["memorization"]
    bound = 3 * math.sqrt((1 / n) * (1 - 1 / n) / 1000)
    print(f"n={n}: first-epoch online acc {row['online_acc']:.4f}, chance {1 / n:.4f}, bound ±{bound:.4f}")
    assert row["m"] == 1000
    assert abs(row["online_acc"] - 1 / n) <= bound


def test_memorization_rises_and_the_heldout_control_stays_at_chance(mlp20):
    # check 7 [T]: 20 epochs, seed 0, λ = 0: clean acc at h3 ≥ 5/n; check 3: held-out within 4 SE every epoch
    (summary,) = mlp20.summary
    last = [r for r in mlp20.rows if r["epoch"] == 19][0]
    print(f"clean RLP acc at act3 after 20 epochs: {last['clean_acc']:.4f} (last-5 mean {summary['clean_acc']:.4f})")
    assert last["clean_acc"] >= 5 / 100
    se = math.sqrt(0.01 * 0.99 / 797)
    worst = max(abs(r["heldout_acc"] - 0.01) for r in mlp20.rows)
    print(f"held-out: worst |acc - 1/n| over 20 epochs {worst:.4f} (4 SE = {4 * se:.4f})")
    assert len(mlp20.rows) == 20 and all(r["heldout_acc"] is not None for r in mlp20.rows)
    assert worst <= 4 * se
    assert mlp20.record["final"]["test_accuracy"] > 0.9
    assert (mlp20.run_dir / "memorization.csv").exists() and (mlp20.run_dir / "record.json").exists()


def test_same_seed_same_bank_and_metrics_and_resume_reproduces_them(tmp_path):
    # check 12: same seed → identical metrics; resuming mid-run reproduces the uninterrupted run
    mem = {"taps": ["act1", "input:head"], "lam": {"input:head": 0.2}, "num_labels": 10}
    cfg = small_mlp(4, memorization=mem, output={"checkpoint": True})
    straight = Trainer(cfg)
    r_straight = straight.fit(write=False)
    again = Trainer(cfg).fit(write=False)
    strip = lambda rec: [{k: v for k, v in e.items() if not k.endswith("_s")} for e in rec["epochs"]]  # noqa: E731
    assert strip(again) == strip(r_straight)
    half = small_mlp(2, memorization=mem, output={"checkpoint": True})
    Trainer(half).fit(out_dir=tmp_path / "first")
    resumed = Trainer(cfg)
    r_resumed = resumed.fit(out_dir=tmp_path / "second", resume_from=tmp_path / "first" / "checkpoint.pt")
    assert strip(r_resumed) == strip(r_straight)
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    # the checkpoint's weights load into a plain model (no head keys), the heads live in the hook state
    ckpt = torch.load(tmp_path / "first" / "checkpoint.pt", weights_only=True)
    plain = Trainer(small_mlp(1))
    plain.model.load_state_dict(ckpt["model"])
    assert not any("head" in k and "heads" in k for k in ckpt["model"])
    (state,) = [s for s in ckpt["hooks"] if "rlp" in s]
    assert any(k.startswith("heads.") for k in state["rlp"]) and "bank.labels" in state["rlp"]
    # a run with another n cannot resume from it
    other = Trainer(small_mlp(4, memorization={**mem, "num_labels": 7}, output={"checkpoint": True}))
    with pytest.raises(Exception, match="num_labels"):
        other.fit(out_dir=tmp_path / "third", resume_from=tmp_path / "first" / "checkpoint.pt")


def test_record_holds_rows_and_the_hook_checks_its_data():
    record = Trainer(small_mlp(2, memorization={"taps": ["penultimate"], "num_sets": 2,
                                                 "clean_every": 2})).fit(write=False)
    json.dumps(record)   # the run record stays JSON
    e0, e1 = record["epochs"][0]["memorization"], record["epochs"][1]["memorization"]
    assert [(r["tap"], r["set"]) for r in e1] == [("input:head", 0), ("input:head", 1)]
    assert all(r["clean_acc"] is None for r in e0) and all(r["clean_acc"] is not None for r in e1)
    assert e1[0]["m"] == 1000 and e1[0]["d"] == 32 and e1[0]["heldout_task_acc"] is not None
    assert len(summarize_run(record)) == 2
    # training data that is not the config's: the hook notices
    cfg = small_mlp(1, memorization={"taps": ["act1"]})
    other = load_run_config(data={**cfg.model_dump(), "data": {"name": "digits", "val_fraction": 0.5,
                                                                "standardize": True}})
    from dicelab.train.engine import load_data_for

    with pytest.raises(DicelabError, match="training data differs"):
        Trainer(other, [MemorizationHook(cfg.memorization, SeedBank(0), data=load_data_for(cfg))]).fit(write=False)


def test_per_class_and_warmup_run():
    record = Trainer(small_mlp(2, memorization={"taps": ["act1"], "per_class": True, "mode": "balanced",
                                                 "num_labels": 4, "lam": 0.1, "lam_warmup_epochs": 2})).fit(write=False)
    rows = [e["memorization"][0] for e in record["epochs"]]
    assert [r["lam_scale"] for r in rows] == [0.5, 1.0] and record["status"] == "completed"
    assert evaluate  # the engine's evaluate is untouched by the heads
