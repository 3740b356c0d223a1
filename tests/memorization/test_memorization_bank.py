import pytest
import torch

from dicelab.errors import ConfigError
from dicelab.memorization import RandomLabelBank
from dicelab.seeding import generator


def bank(seed=0, **kw):
    args = {"num_samples": 1000, "num_labels": 100} | kw
    m, n = args.pop("num_samples"), args.pop("num_labels")
    return RandomLabelBank(m, n, generator=generator(seed, "memorization.bank"), **args)


def test_uniform_bank_is_fixed_by_the_seed_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = bank(0), bank(0), bank(1)
    assert torch.equal(state, torch.get_rng_state())
    assert a.labels.shape == (1, 1000) and a.labels.dtype == torch.int64
    assert torch.equal(a.labels, b.labels) and not torch.equal(a.labels, c.labels)
    assert int(a.labels.min()) >= 0 and int(a.labels.max()) <= 99
    idx = torch.tensor([5, 0, 999])
    assert torch.equal(a[idx], a.labels[:, idx])
    # uniform i.i.d.: about m/n = 10 per value, but not exactly balanced
    counts = torch.bincount(a.labels[0], minlength=100)
    assert counts.min() < 10 < counts.max()


def test_balanced_counts_are_floor_or_ceil_also_within_classes():
    b = bank(mode="balanced", num_samples=1003, num_labels=10)
    counts = torch.bincount(b.labels[0], minlength=10)
    assert set(counts.tolist()) <= {100, 101} and counts.sum() == 1003
    targets = torch.arange(1003) % 3
    pc = bank(mode="balanced", per_class=True, targets=targets, num_samples=1003, num_labels=7)
    for c in range(3):
        m_c = int((targets == c).sum())
        counts = torch.bincount(pc.labels[0][targets == c], minlength=7)
        assert set(counts.tolist()) <= {m_c // 7, -(-m_c // 7)}


def test_several_label_sets_are_independent():
    b = bank(num_sets=3)
    assert b.labels.shape == (3, 1000)
    assert not torch.equal(b.labels[0], b.labels[1]) and not torch.equal(b.labels[1], b.labels[2])
    assert b[torch.tensor([1, 2])].shape == (3, 2)


def test_state_dict_round_trip_and_mismatch_names_the_field():
    a = bank(0)
    b = bank(1)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.labels, b.labels)
    with pytest.raises(ConfigError, match="memorization.num_labels"):
        bank(0, num_labels=10).load_state_dict(a.state_dict())
    with pytest.raises(ConfigError, match="memorization.mode"):
        bank(0, mode="balanced").load_state_dict(a.state_dict())
    with pytest.raises(ConfigError, match="memorization.num_samples"):
        bank(0, num_samples=999).load_state_dict(a.state_dict())
    with pytest.raises(ConfigError, match="memorization.num_sets"):
        bank(0, num_sets=2).load_state_dict(a.state_dict())


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="num_labels"):
        bank(num_labels=1)
    with pytest.raises(ConfigError, match="per_class"):
        bank(mode="balanced", per_class=True)
    b = bank()
    assert b.checksum() == bank().checksum() != bank(1).checksum()
    b.check_across_ranks()  # no process group: nothing to compare, no error
