"""Spec 01 statistical checks 6-15, 17 and 18, on the techniques themselves (no training loop)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dicelab.hooks import EpochPlan
from dicelab.randomness import annealed_sigma, rescale_schedule, schedule_period
from dicelab.randomness.data import window_shuffle
from dicelab.seeding import generator
from tests.randomness._helpers import state, tset


def wide_model(n_in: int = 1000, width: int = 1000) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(n_in, width), nn.ReLU(), nn.Linear(width, 10))


# -- 6: gradient dropout -------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_gradient_dropout_statistics(p):
    model = wide_model()
    s = tset(gradient_dropout=p, model=model)
    params = list(model.parameters())
    n = sum(q.numel() for q in params)
    assert n >= 10**6

    def masked_ones():
        for q in params:
            q.grad = torch.ones_like(q)
        s.on_grads(params, state())
        return torch.cat([q.grad.reshape(-1) for q in params])

    g1, g2 = masked_ones(), masked_ones()
    zero = (g1 == 0).double().mean().item()
    assert abs(zero - p) <= 3 * math.sqrt(p * (1 - p) / n)
    assert torch.all((g1 == 0) | (g1 == 1.0))
    changed = ((g1 == 0) != (g2 == 0)).double().mean().item()
    q = 2 * p * (1 - p)
    assert abs(changed - q) <= 3 * math.sqrt(q * (1 - q) / n)

    s = tset(gradient_dropout={"p": p, "rescale": True}, model=model)
    for q_ in params:
        q_.grad = torch.ones_like(q_)
    s.on_grads(params, state())
    g = torch.cat([q_.grad.reshape(-1) for q_ in params])
    kept = g[g != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - p)), rtol=1e-6, atol=0)

    # under SGD (lr 1, no momentum) exactly the survivors move
    before = [q_.detach().clone() for q_ in params]
    s = tset(gradient_dropout=p, model=model)
    opt = torch.optim.SGD(params, lr=1.0)
    for q_ in params:
        q_.grad = torch.ones_like(q_)
    s.on_grads(params, state())
    opt.step()
    for q_, b in zip(params, before, strict=True):
        assert torch.equal(q_.detach() != b, q_.grad != 0)


# -- 7: loss noise --------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.1, 0.5, 1.0])
def test_loss_noise_multipliers(sigma):
    n = 200_000
    s = tset(loss_noise=sigma)
    loss = torch.rand(n, dtype=torch.float64, generator=generator(0, "test.loss")).requires_grad_()
    out = s.on_loss(loss, state())
    m = s.trace["loss_noise"]["multipliers"]
    assert not m.requires_grad
    assert torch.equal(out, loss * m)
    assert abs(m.mean().item() - 1) <= 3 * sigma / math.sqrt(n)
    assert abs(m.std().item() / sigma - 1) <= 0.01
    if sigma == 1.0:
        assert abs((m < 0).double().mean().item() - 0.1587) <= 0.0025
    clipped = tset(loss_noise={"sigma": sigma, "clip_min": 0.0})
    clipped.on_loss(loss, state())
    assert clipped.trace["loss_noise"]["multipliers"].min() >= 0


# -- 8: input noise -------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.1, 1.0])
def test_input_noise_statistics(sigma):
    s = tset(input_noise=sigma)
    x = torch.zeros(1000, 64)
    y = torch.zeros(1000, dtype=torch.long)
    a, _ = s.on_batch(x, y, state())
    b, _ = s.on_batch(x, y, state(1))
    assert abs(a.std().item() / sigma - 1) <= 0.01
    assert abs(a.mean().item()) <= 3 * sigma / math.sqrt(a.numel())
    corr = torch.corrcoef(torch.stack([a.reshape(-1), b.reshape(-1)]))[0, 1].item()
    assert abs(corr) < 0.01


# -- 9: label smoothing ---------------------------------------------------------------------------------
@pytest.mark.parametrize("eps", [0.1, 0.3, 1.0])
def test_label_smoothing_targets(eps):
    s = tset(label_smoothing=eps)
    y = torch.arange(10).repeat(20)
    x = torch.zeros(len(y), 64)
    _, q = s.on_batch(x, y, state())
    hot = torch.tensor((1 - eps) + eps / 10, dtype=torch.float32)
    cold = torch.tensor(eps / 10, dtype=torch.float32)
    ulp = torch.finfo(torch.float32).eps
    on = q[torch.arange(len(y)), y]
    assert torch.all((on - hot).abs() <= ulp * max(hot.item(), 1e-30))
    off = q.masked_fill(F.one_hot(y, 10).bool(), float(cold))
    assert torch.all((off - cold).abs() <= ulp * max(cold.item(), 1e-30) + 1e-12)
    assert torch.allclose(q.sum(1), torch.ones(len(y)), atol=1e-6, rtol=0)
    logits = torch.randn(len(y), 10, generator=generator(0, "test.logits"))
    assert abs(F.cross_entropy(logits, q).item() - F.cross_entropy(logits, y, label_smoothing=eps).item()) <= 1e-6


# -- 10: DropConnect -------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropconnect_weights_mode(p):
    model = wide_model()
    plain = {k: v.clone() for k, v in model.state_dict().items()}
    s = tset(dropconnect=p, model=model)
    layer = model[0]
    w = layer.parametrizations.weight.original
    n = w.numel()
    w1, w2 = layer.weight, layer.weight      # two accesses = two forward passes' masks
    keep = (w1 != 0).double().mean().item()
    assert abs(keep - (1 - p)) <= 3 * math.sqrt(p * (1 - p) / n)
    kept = w1 != 0
    assert torch.allclose(w1[kept], w.detach()[kept] / (1 - p), rtol=1e-6, atol=0)
    assert not torch.equal(w1, w2)
    # gradients reach the underlying weight
    model(torch.ones(2, 1000)).sum().backward()
    assert w.grad is not None and torch.count_nonzero(w.grad) > 0
    model.eval()
    assert layer.weight is w or torch.equal(layer.weight, w)
    ref = wide_model()
    ref.load_state_dict(plain)
    x = torch.randn(8, 1000, generator=generator(0, "test.x"))
    assert torch.equal(model(x), ref.eval()(x))
    assert set(s.unwrap(model).state_dict()) == set(plain)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropconnect_input_mode(p):
    model = wide_model()
    s = tset(dropconnect={"p": p, "mode": "input"}, model=model)
    seen = []
    model[0].register_forward_pre_hook(lambda m, inp: seen.append(inp[0]))
    x = torch.rand(1000, 1000, generator=generator(0, "test.x")) + 0.5
    model(x)
    masked = seen[-1]
    keep = (masked != 0).double().mean().item()
    assert abs(keep - (1 - p)) <= 3 * math.sqrt(p * (1 - p) / x.numel())
    assert torch.equal(masked[masked != 0], x[masked != 0])
    model.eval()
    model(x)
    assert torch.equal(seen[-1], x)
    assert len(s.trace["dropconnect"]) == 1


# -- 11: dropout -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_statistics(p):
    model = nn.Sequential(nn.ReLU(), nn.Linear(1000, 1))
    tset(dropout=p, model=model)
    seen = []
    model[0].register_forward_hook(lambda m, i, out: seen.append(out))
    x = torch.full((1000, 1000), 2.0)
    model(x)
    out = seen[-1]
    keep = (out != 0).double().mean().item()
    assert abs(keep - (1 - p)) <= 3 * math.sqrt(p * (1 - p) / x.numel())
    assert torch.allclose(out[out != 0], torch.full_like(out[out != 0], 2.0 / (1 - p)), rtol=1e-6, atol=0)
    model.eval()
    model(x)
    assert torch.equal(seen[-1], x)


def test_dropout_site_counts():
    from dicelab.models import build_model

    mlp = build_model("mlp", (1, 8, 8), 10, widths=(128, 128))
    assert len(tset(dropout=0.1, model=mlp).by_name["dropout"].handles) == 2
    vgg = build_model("vgg", (3, 32, 32), 10)
    assert len(tset(dropout=0.1, model=vgg).by_name["dropout"].handles) == 4


# -- 12: activation noise ---------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.01, 0.1])
def test_activation_noise_statistics(sigma):
    model = nn.Sequential(nn.ReLU(), nn.Linear(1000, 1))
    tset(activation_noise=sigma, model=model)
    seen = []
    model[0].register_forward_hook(lambda m, i, out: seen.append(out))
    z = torch.full((1000, 1000), 10.0)
    model(z)
    assert abs((seen[-1] - z).std().item() / sigma - 1) <= 0.01
    model.eval()
    model(z)
    assert torch.equal(seen[-1], torch.relu(z))


# -- 13: DRNN -------------------------------------------------------------------------------------------------
def drnn_run(table, weight_decay=0.0, steps=50, **others):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(64, 400), nn.ReLU(), nn.Linear(400, 400), nn.ReLU(), nn.Linear(400, 10))
    s = tset(drnn=table, model=model, **others)
    params = list(model.parameters())
    init = [p.detach().clone() for p in params]
    masks0 = [m.clone() for m in s.by_name["drnn"].masks]
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=weight_decay)
    s.attach(opt)
    g = generator(0, "test.data")
    for _ in range(steps):
        x, y = torch.randn(32, 64, generator=g), torch.randint(0, 10, (32,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    d = s.by_name["drnn"]
    assert all(torch.equal(a, b) for a, b in zip(masks0, d.masks, strict=True))   # drawn once
    frozen = [m == 0 for m in d.masks]
    return params, init, frozen


@pytest.mark.parametrize("f", [0.1, 0.5])
def test_drnn_frozen_fraction_and_strict_freeze(f):
    params, init, frozen = drnn_run({"fraction": f}, weight_decay=1e-4, gradient_noise=0.1, weight_noise=1e-3)
    n = sum(m.numel() for m in frozen)
    assert n >= 10**5
    share = sum(m.sum().item() for m in frozen) / n
    assert abs(share - f) <= 3 * math.sqrt(f * (1 - f) / n)
    for p, w0, fr in zip(params, init, frozen, strict=True):
        assert torch.equal(p.detach()[fr], w0[fr])
        assert not torch.equal(p.detach()[~fr], w0[~fr])


def test_drnn_paper_mode_moves_frozen_entries_only_under_noise_or_decay():
    params, init, frozen = drnn_run({"fraction": 0.5, "mode": "paper"}, weight_decay=1e-4, gradient_noise=0.1,
                                    weight_noise=1e-3)
    assert any(not torch.equal(p.detach()[fr], w0[fr]) for p, w0, fr in zip(params, init, frozen, strict=True))
    params, init, frozen = drnn_run({"fraction": 0.5, "mode": "paper"})
    for p, w0, fr in zip(params, init, frozen, strict=True):
        assert torch.equal(p.detach()[fr], w0[fr])


# -- 14: annealing ------------------------------------------------------------------------------------------
def test_annealing_schedule_values():
    expected = {0: 0.1, 1: 0.0826450, 9: 0.0530884, 99: 0.0281838, 999: 0.0149624}
    for t, v in expected.items():
        assert abs(annealed_sigma(0.01, t) - v) <= 5e-8
    for t in (0, 5, 1234):
        assert abs(annealed_sigma(0.3, t) / math.sqrt(0.3 / (t + 1) ** 0.55) - 1) <= 1e-12


@pytest.mark.parametrize("t", [0, 99])
def test_weight_and_gradient_noise_std(t):
    model = wide_model()
    params = list(model.parameters())
    s = tset(weight_noise=0.01, gradient_noise=0.01, model=model)
    before = torch.cat([p.detach().reshape(-1) for p in params])
    s.before_step(params, state(t))
    after = torch.cat([p.detach().reshape(-1) for p in params])
    assert abs((after - before).std().item() / annealed_sigma(0.01, t) - 1) <= 0.01
    for p in params:
        p.grad = torch.zeros_like(p)
    s.on_grads(params, state(t))
    g = torch.cat([p.grad.reshape(-1) for p in params])
    assert abs(g.std().item() / annealed_sigma(0.01, t) - 1) <= 0.01


# -- 15: order within a step ------------------------------------------------------------------------------------
def test_gradient_noise_comes_after_gradient_dropout():
    model = wide_model()
    params = list(model.parameters())
    s = tset(gradient_dropout=0.5, gradient_noise=0.01, model=model)
    for p in params:
        p.grad = torch.ones_like(p)
    s.on_grads(params, state(9))
    g = torch.cat([p.grad.reshape(-1) for p in params])
    dropped = s.trace["gradient_dropout"]["mask"] == 0
    assert abs(g[dropped].std().item() / annealed_sigma(0.01, 9) - 1) <= 0.02


def test_weight_noise_is_added_before_the_step():
    model = wide_model(100, 100)
    params = list(model.parameters())
    s = tset(weight_noise=0.01, model=model)
    opt = torch.optim.SGD(params, lr=0.1)
    s.attach(opt)
    g = [torch.randn(p.shape, generator=generator(0, f"test.g{i}")) for i, p in enumerate(params)]
    before = torch.cat([p.detach().reshape(-1) for p in params])
    for p, gi in zip(params, g, strict=True):
        p.grad = gi.clone()
    opt.step()
    delta = s.trace["weight_noise"]["delta"]
    after = torch.cat([p.detach().reshape(-1) for p in params])
    expected = before + delta - 0.1 * torch.cat([gi.reshape(-1) for gi in g])
    assert torch.allclose(after, expected, rtol=0, atol=1e-6)


# -- 17: shuffle ---------------------------------------------------------------------------------------------------
def test_shuffle_modes():
    n = 5000
    s = build_shuffle(n, {"on": True})
    orders = [epoch_order(s, e) for e in range(2)]
    for o in orders:
        assert torch.equal(o.sort().values, torch.arange(n))
    assert not torch.equal(orders[0], orders[1])
    w = build_shuffle(n, {"on": True, "mode": "window"})
    o = epoch_order(w, 0)
    assert torch.equal(o.sort().values, torch.arange(n))
    assert torch.all(o <= torch.arange(n) + 1023)
    assert not torch.equal(o, torch.arange(n))
    direct = window_shuffle(n, 1024, generator(0, "x"))
    assert torch.all(direct <= torch.arange(n) + 1023)


def build_shuffle(n, table):
    from dicelab.randomness import RandomnessConfig, build

    return build(RandomnessConfig(shuffle=table), 0, num_train=n)


def epoch_order(s, e):
    plan = EpochPlan(lr=0.1, batch_size=128)
    s.on_epoch(state(epoch=e, epochs=5), plan)
    return plan.order


def test_plain_engine_order_without_shuffle():
    from dicelab.train import Trainer
    from tests._support import small_digits_config

    trainer = Trainer(small_digits_config(train={"shuffle": False}), quiet=True)
    for e in range(2):
        assert torch.equal(trainer._epoch_plan(e).order, torch.arange(800))


# -- 18: schedules ---------------------------------------------------------------------------------------------------
def lr_series(s, epochs=20, lr0=1e-3):
    t = tset(lr_schedule=s)
    plan = EpochPlan(lr=lr0, batch_size=128)
    out = []
    for e in range(epochs):
        t.on_epoch(state(epoch=e, epochs=epochs), plan)
        out.append(plan.lr)
    return out


def batch_series(s, b0, epochs=5):
    t = tset(batch_schedule=s)
    t.context.base_batch_size = b0
    plan = EpochPlan(lr=0.1, batch_size=b0)
    out = []
    for e in range(epochs):
        t.on_epoch(state(epoch=e, epochs=epochs), plan)
        out.append(plan.batch_size)
    return out


def close(a, b):
    return all(abs(x - y) <= 1e-12 * abs(y) for x, y in zip(a, b, strict=True))


def test_lr_schedule_rules():
    assert close(lr_series(-0.5), [1e-3] * 11 + [5e-4] * 9)
    assert close(lr_series(-1.0), [max(1e-3 * 2.0**-e, 1e-5) for e in range(20)])
    assert lr_series(-1.0)[6] > 1e-5 and lr_series(-1.0)[7] == 1e-5
    assert schedule_period(0.9, 20) == 3
    assert close(lr_series(0.9), [min(1e-3 * 2.0 ** (e // 3), 0.1) for e in range(20)])
    assert lr_series(0.0) == [1e-3] * 20


def test_batch_schedule_rules():
    assert batch_series(1.0, 128) == [128, 256, 512, 1024, 1024]
    assert batch_series(-1.0, 1024) == [1024, 512, 256, 128, 128]


@pytest.mark.parametrize("s", [0.1, -0.1, 0.5, -0.5, 0.9, -0.9, -0.176, 0.537])
def test_rescale_schedule_keeps_the_period(s):
    assert schedule_period(rescale_schedule(s, 20, 100), 100) == schedule_period(s, 20)


def test_lr_schedule_with_a_train_scheduler_is_an_error():
    from dicelab.errors import ConfigError
    from dicelab.train import Trainer
    from tests._support import small_digits_config

    with pytest.raises(ConfigError, match="randomness.lr_schedule and train.scheduler"):
        Trainer(small_digits_config(train={"scheduler": "cosine"}, randomness={"lr_schedule": 0.5}), quiet=True)
