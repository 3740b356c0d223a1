"""Spec 05 §9 checks 2 and 3: the mean of the buffer matches the mean-field sum, the granularities have
the right structure and variance, and Γ follows its schedule."""

from __future__ import annotations

import math

import torch

from dicelab.optim import ReinforcedSGD, gamma_for

M10 = sum(0.7**k for k in range(11))  # 3.2674...


def buffer_after_11_steps(granularity: str, seed: int, sizes=(1000,), history: bool = False):
    """p.grad = 1 before each of 11 steps at lr 0 and constant Γ = 0.7: the buffers after the last step
    (or after every step with ``history``)."""
    params = [torch.zeros(n, requires_grad=True) for n in sizes]
    opt = ReinforcedSGD(params, lr=0.0, schedule="constant", prob=0.7, granularity=granularity, seed=seed)
    seen = []
    for _ in range(11):
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
        if history:
            seen.append([opt.state[p]["buf"].clone() for p in params])
    return seen if history else [opt.state[p]["buf"] for p in params]


def test_buffer_mean_matches_the_mean_field_sum_and_step_draws_are_far_noisier():
    means = {}
    for gran in ("element", "step"):
        per_seed = torch.tensor([buffer_after_11_steps(gran, s)[0].mean().item() for s in range(200)],
                                dtype=torch.float64)
        mean, se = per_seed.mean().item(), per_seed.std().item() / math.sqrt(200)
        print(f"{gran}: mean {mean:.4f} +- {se:.4f} (m_10 = {M10:.4f}), variance {per_seed.var().item():.3e}")
        assert abs(mean - M10) <= 3 * se, (gran, mean, se)
        means[gran] = per_seed
    ratio = means["step"].var() / means["element"].var()
    print(f"variance ratio step / element: {ratio:.0f}")
    assert ratio >= 100


def test_granularity_structure():
    for bufs in buffer_after_11_steps("step", 1, sizes=(300, 50), history=True):
        assert all(torch.all(b == b[0]) for b in bufs)
        assert bufs[0][0] == bufs[1][0]  # one draw shared by every tensor
    history = buffer_after_11_steps("tensor", 1, sizes=(300, 50, 50, 50), history=True)
    for bufs in history:
        assert all(torch.all(b == b[0]) for b in bufs)
    assert any(len({b[0].item() for b in bufs}) > 1 for bufs in history)  # tensors draw separately
    for t, bufs in enumerate(buffer_after_11_steps("element", 1, history=True)):
        if t >= 1:  # from the second step on (t >= 1 makes the first draw)
            assert bufs[0].std() > 0, t
        else:
            assert torch.all(bufs[0] == 1.0)


def test_exp_schedule_is_exact_non_decreasing_and_capped():
    # t counts step() calls; a step without gradients still counts, which keeps 10,000 steps cheap.
    # (test_mask_rate_... checks Γ against real draws.)
    p = torch.zeros(1, requires_grad=True)
    opt = ReinforcedSGD([p], lr=0.0, gamma=0.999, max_prob=0.99, seed=0)
    other = ReinforcedSGD([p], lr=0.0, gamma=0.999, gamma0=0.5, seed=0)  # Γ0 < 1: Γ(0) = 0.5
    probs = []
    for t in range(10_000):
        prob = opt.reinforce_prob()
        probs.append(prob)
        if t in (0, 1, 10, 100, 1000):
            assert abs(prob - (1.0 - 0.999**t)) <= 1e-12, t
            assert abs(other.reinforce_prob() - (1.0 - 0.5 * 0.999**t)) <= 1e-12, t
        p.grad = torch.ones(1) if t % 100 == 0 else None
        opt.step()
        other.step()
    assert all(b >= a for a, b in zip(probs, probs[1:], strict=False))
    assert max(probs) == 0.99 and probs[-1] == 0.99  # reached and never passed
    assert probs[4000] < 0.99 == probs[5000]         # the cap binds from about step 4,603 on
    assert opt.steps == 10_000


def test_gamma_for_puts_the_level_at_t90():
    g = gamma_for(500)
    p = torch.zeros(1, requires_grad=True)
    opt = ReinforcedSGD([p], gamma=g)
    opt._t = 500  # noqa: SLF001  (the step counter; 500 real steps would show the same)
    assert abs(opt.reinforce_prob() - 0.9) < 1e-12


def test_epoch_time_unit_changes_gamma_only_through_set_epoch():
    p = torch.zeros(10, requires_grad=True)
    opt = ReinforcedSGD([p], lr=0.0, gamma=0.9, time_unit="epoch", seed=0)
    seen = []
    for epoch in range(4):
        opt.set_epoch(epoch)
        inside = set()
        for _ in range(7):
            inside.add(opt.reinforce_prob())
            p.grad = torch.ones(10)
            opt.step()
        assert len(inside) == 1
        seen.append(inside.pop())
    assert seen == [1.0 - 0.9**e for e in range(4)]


def test_mask_rate_follows_gamma_within_three_binomial_standard_errors():
    n = 10_000
    p = torch.zeros(n, requires_grad=True)
    opt = ReinforcedSGD([p], lr=0.0, gamma=0.999, seed=5)
    keeps, gammas = [], []
    for t in range(1100):
        prob = opt.reinforce_prob()
        p.grad = torch.ones(n)
        opt.step()
        if t >= 1000:
            gammas.append(prob)
            keeps.append(1.0 - opt.last_reset_fraction)
    rate, expected = sum(keeps) / 100, sum(gammas) / 100
    se = math.sqrt(sum(g * (1 - g) for g in gammas) * n) / (100 * n)
    print(f"mask rate {rate:.5f}, mean Γ {expected:.5f}, binomial SE {se:.5f}")
    assert abs(rate - expected) <= 3 * se
    assert 0.63 < expected < 0.67
