"""Taps, pooling, heads and the RLPHeads API (spec 04 §4, check 12)."""

import warnings

import pytest
import torch
from torch import nn

from dicelab.errors import ConfigError
from dicelab.memorization import DigitsCNN, RandomLabelBank, RLPHeads, pool_features, resolve_taps
from dicelab.models import MLP
from dicelab.seeding import generator


def bank(m=16, n=5, **kw):
    return RandomLabelBank(m, n, generator=generator(0, "memorization.bank"), **kw)


def heads(model, taps, m=16, n=5, x=None, **kw):
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(9)) if x is None else x
    return RLPHeads(model, taps, kw.pop("bank", None) or bank(m, n), generator=generator(0, "memorization.heads"),
                    example_input=x, **kw)


def test_taps_resolve_output_input_penultimate_and_wrapper_prefixes():
    model = MLP(64, (32, 16), 10)
    taps = resolve_taps(model, ["act1", "output:act2", "input:head", "penultimate"][:3])
    assert [(t.kind, t.name, t.key) for t in taps] == [("output", "act1", "act1"), ("output", "act2", "act2"),
                                                       ("input", "head", "input:head")]
    (pen,) = resolve_taps(model, ["penultimate"])
    assert (pen.kind, pen.name) == ("input", "head")

    class Wrap(nn.Module):   # what DDP (.module) and torch.compile (._orig_mod) look like from outside
        def __init__(self, attr, inner):
            super().__init__()
            setattr(self, attr, inner)
            self.attr = attr

        def forward(self, x):
            return getattr(self, self.attr)(x)

    wrapped = Wrap("module", Wrap("_orig_mod", model))
    assert "module._orig_mod.act1" in dict(wrapped.named_modules())
    (t,) = resolve_taps(wrapped, ["module.act1"])
    assert t.name == "act1" and resolve_taps(wrapped, ["act1"])[0].name == "act1"
    rlp = heads(wrapped, ["act1"])
    wrapped(torch.zeros(3, 64))
    assert rlp.losses(torch.arange(3)).rnd.shape == ()
    cnn = DigitsCNN()
    assert resolve_taps(cnn, ["b2.conv"])[0].name == "b2.conv"


def test_unknown_tap_lists_the_three_closest_names():
    with pytest.raises(ConfigError) as err:
        resolve_taps(MLP(64, (32, 16), 10), ["act3"])
    msg = str(err.value)
    assert msg.startswith("memorization.taps: no module named 'act3'")
    closest = msg.split("closest: ")[1].split(")")[0].split(", ")
    assert len(closest) == 3 and "act1" in closest and "act2" in closest
    with pytest.raises(ConfigError, match="penultimate"):
        resolve_taps(nn.Sequential(nn.Conv2d(1, 2, 3)), ["penultimate"])


def test_pooling_shapes():
    x4, x3, x2 = torch.randn(3, 8, 4, 4), torch.randn(3, 5, 6), torch.randn(3, 7)
    assert pool_features(x4).shape == (3, 8) and torch.allclose(pool_features(x4), x4.mean((2, 3)))
    assert torch.allclose(pool_features(x3), x3.mean(1)) and pool_features(x2) is x2
    assert torch.equal(pool_features(x4, "gmp"), x4.amax((2, 3)))
    assert torch.equal(pool_features(x3, "cls"), x3[:, 0])
    assert pool_features(x4, "flatten").shape == (3, 128)
    assert pool_features(x4, lambda t: t[:, :2, 0, 0]).shape == (3, 2)
    with pytest.raises(ConfigError, match="memorization.pool"):
        pool_features(x4, "none")


def test_feature_dims_head_kinds_and_no_global_rng_use():
    state = torch.get_rng_state()
    model = MLP(64, (32, 16), 10)
    torch.set_rng_state(state)
    rlp = heads(model, ["act1", "input:head"], head="linear")
    assert rlp.dims == {"act1": 32, "input:head": 16}
    assert torch.equal(state, torch.get_rng_state())
    assert rlp.head_params == {"act1": 32 * 5 + 5, "input:head": 16 * 5 + 5}
    mlp = heads(model, ["act1"], head="mlp")
    assert mlp.head_params["act1"] == (32 * 32 + 32) + (32 * 5 + 5)
    low = heads(model, ["act1"], head="lowrank", rank=4)
    assert low.head_params["act1"] == 32 * 4 + (4 * 5 + 5)
    fac = heads(model, ["act1"], head=lambda d, n: nn.Linear(d, n, bias=False))
    assert fac.head_params["act1"] == 32 * 5
    assert torch.equal(state, torch.get_rng_state())
    # the same generator gives the same heads
    again = heads(model, ["act1", "input:head"])
    assert all(torch.equal(a, b) for a, b in zip(rlp.parameters(), again.parameters(), strict=True))
    # conv taps: GAP keeps d = channels
    cnn = heads(DigitsCNN(), ["b1", "b2", "b3"], x=torch.randn(2, 1, 8, 8))
    assert cnn.dims == {"b1": 16, "b2": 32, "b3": 64} and cnn.forward_order == ["b1", "b2", "b3"]


def test_losses_need_a_fresh_forward_of_the_right_size_and_capture_can_be_off():
    model = MLP(64, (32,), 10)
    rlp = heads(model, ["act1"])
    x = torch.randn(4, 64)
    with pytest.raises(RuntimeError, match="no forward captured"):
        rlp.losses(torch.arange(4))
    model(x)
    with pytest.raises(RuntimeError, match="idx has 3"):
        rlp.losses(torch.arange(3))
    model(x)
    rlp.losses(torch.arange(4))
    with pytest.raises(RuntimeError, match="no forward captured"):
        rlp.losses(torch.arange(4))     # one forward, one loss
    with rlp.capture(False):
        model(x)
    with pytest.raises(RuntimeError, match="no forward captured"):
        rlp.losses(torch.arange(4))
    # the hooks only read: the model's output is unchanged with heads attached
    plain = MLP(64, (32,), 10)
    plain.load_state_dict(model.state_dict())
    assert torch.equal(plain(x), model(x))
    rlp.remove()
    model(x)
    with pytest.raises(RuntimeError, match="no forward captured"):
        rlp.losses(torch.arange(4))


def test_per_class_heads_use_only_the_slice_of_the_class():
    model = MLP(64, (32,), 10)
    b = bank(m=6, n=4, per_class=True)
    rlp = heads(model, ["act1"], bank=b, num_classes=10)
    head = rlp.heads[0][0]
    assert head.out_features == 40
    x, y = torch.randn(6, 64), torch.tensor([0, 0, 3, 3, 3, 9])
    model(x)
    rlp.losses(torch.arange(6), y).rnd.backward()
    rows_with_grad = (head.weight.grad.abs().sum(1) > 0).nonzero().flatten().tolist()
    assert set(rows_with_grad) == set(range(0, 4)) | set(range(12, 16)) | set(range(36, 40))
    with pytest.raises(ConfigError, match="per_class"):
        heads(model, ["act1"], bank=bank(per_class=True))


def test_lambda_table_and_warning_on_large_heads():
    model = MLP(64, (32, 16), 10)
    rlp = heads(model, ["act1", "input:head"], lam={"input:head": 0.3})
    assert rlp.lam == {"act1": 0.0, "input:head": 0.3}
    with pytest.raises(ConfigError, match="memorization.lam"):
        heads(model, ["act1"], lam={"act2": 0.1})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        heads(model, ["act1"], n=100)        # 3,300 head parameters vs 2,778 in the model
        heads(model, ["act1"], n=2)          # 66: below 10 %
    assert len(caught) == 1 and "RLP heads hold 3,300 parameters" in str(caught[0].message)


def test_end_epoch_rows_online_clean_and_heldout():
    torch.manual_seed(0)
    model = MLP(64, (32,), 10)
    x, hx = torch.randn(16, 64), torch.randn(8, 64)
    held = RandomLabelBank(8, 5, generator=generator(0, "memorization.heldout"))
    rlp = heads(model, ["act1"], heldout_bank=held)
    for idx in (torch.arange(0, 8), torch.arange(8, 16)):
        model(x[idx])
        rlp.losses(idx)
    (row,) = rlp.end_epoch(model, x, hx, epoch=0)
    manual = (rlp.heads[0][0](torch.relu(model.fc1(x))).argmax(1) == rlp.bank.labels[0]).float().mean().item()
    assert row["clean_acc"] == pytest.approx(manual)
    assert row["online_acc"] is not None and 0 <= row["heldout_acc"] <= 1
    assert row["chance"] == 0.2 and row["r_proxy"] == pytest.approx((row["clean_acc"] - 0.2) / 0.8)
    assert rlp.metrics() == [row]
