"""Symmetry-breaking models (spec 06 §6; acceptance 13, 14): orthogonal-polynomial activations, forced
pre-pruning, modular nets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dicelab.models import build_model
from dicelab.models.orthopoly import OrthoPolyActivation
from dicelab.models.prepruned import FrozenMaskLinear
from dicelab.symmetry import (
    GroupElement,
    PermSpec,
    apply_group,
    count_equivalent,
    random_group_element,
    weight_matching,
)
from tests.symmetry._symmetry_support import digits, train_digits

FAMILIES = ["chebyshev", "legendre", "hermite"]


@pytest.mark.parametrize("coeffs", ["unique_random", "degree_per_unit"])
@pytest.mark.parametrize("family", FAMILIES)
def test_orthopoly_breaks_symmetry_and_trains(family, coeffs):
    opts = {"K": 4, "family": family, "coeffs": coeffs}
    model, record = train_digits(0, widths=(32, 32), epochs=10, name="orthopoly_mlp", optimizer="adam", lr=3e-3,
                                 options=opts)
    acc = record["final"]["test_accuracy"]
    assert acc >= 0.92, acc
    fresh = build_model("orthopoly_mlp", (1, 8, 8), 10, widths=(32, 32), **opts)
    assert torch.equal(model.act1.coeffs, fresh.act1.coeffs) and torch.equal(model.act2.coeffs, fresh.act2.coeffs)
    data = digits()
    spec = PermSpec.from_module(model)
    dense = spec.without_classes()
    gen = torch.Generator().manual_seed(11)
    perm = GroupElement({"fc1": torch.randperm(32, generator=gen)}, {"fc1": None})
    moved = apply_group(model, perm, dense)  # weights move, the per-unit polynomials stay: a different function
    with torch.no_grad():
        base_logits, moved_logits = model(data.train.x), moved(data.train.x)
        rise = float(F.cross_entropy(moved_logits, data.train.y) - F.cross_entropy(base_logits, data.train.y))
        assert rise >= 1.0 and float((moved_logits - base_logits).abs().max()) >= 1.0, rise
        if coeffs == "degree_per_unit":  # within a degree class units are still interchangeable
            assert [len(m) for m in spec.groups[0].class_members()] == [8, 8, 8, 8]
            within = apply_group(model, random_group_element(spec, gen), spec)
            torch.testing.assert_close(within(data.test.x), model(data.test.x), rtol=1e-5, atol=1e-5)
        else:
            assert count_equivalent(model).log10 == 0.0
    print(f"{family}/{coeffs}: test acc {acc:.3f}, permuted layer 1: +{rise:.2f} nats")


def test_frozen_mask_linear():
    gen = torch.Generator().manual_seed(0)
    layer = FrozenMaskLinear(20, 64, n_frozen=2, value="normal", kappa=1.0, generator=gen)
    rows = {tuple(r.tolist()) for r in layer.mask}
    assert len(rows) == 64 and all(int(r.sum()) == 2 for r in layer.mask)
    frozen0 = layer.effective_weight().detach()[layer.mask].clone()
    opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    x = torch.randn(32, 20, generator=gen)
    for _ in range(100):
        opt.zero_grad()
        layer(x).pow(2).mean().backward()
        opt.step()
    w_eff = layer.effective_weight().detach()
    assert torch.equal(w_eff[layer.mask], frozen0)
    assert bool((layer.weight.detach()[layer.mask] == 0).all())  # the free parameter never moved there
    # a unit permutation carries trained free weights onto frozen positions: the orbit leaves the feasible set
    perm = torch.randperm(64, generator=gen)
    assert not torch.equal(w_eff[perm][layer.mask], frozen0)
    # n_frozen = 0 is off: bit-identical outputs and gradients to nn.Linear with the same init
    torch.manual_seed(3)
    ref = torch.nn.Linear(20, 16)
    torch.manual_seed(3)
    off = FrozenMaskLinear(20, 16, n_frozen=0)
    assert torch.equal(ref.weight, off.weight) and torch.equal(ref.bias, off.bias)
    y_ref, y_off = ref(x), off(x)
    assert torch.equal(y_ref, y_off)
    y_ref.square().sum().backward()
    y_off.square().sum().backward()
    assert torch.equal(ref.weight.grad, off.weight.grad) and torch.equal(ref.bias.grad, off.bias.grad)


def test_prepruned_mlp_from_config_breaks_the_group():
    model, record = train_digits(0, widths=(32, 32), epochs=10, name="prepruned_mlp", options={"n_frozen": 4})
    assert record["status"] == "completed" and record["final"]["test_accuracy"] > 0.7
    # off means off: n_frozen = 0 trains bit-identically to the plain MLP from the same run config
    off = train_digits(0, widths=(32, 32), epochs=3, name="prepruned_mlp", options={"n_frozen": 0})[1]["final"]
    plain = train_digits(0, widths=(32, 32), epochs=3)[1]["final"]
    assert off["train_loss"] == plain["train_loss"] and off["test_loss"] == plain["test_loss"]
    r = count_equivalent(model)
    assert r.log10 == 0.0 and all(len(p["classes"]) == 32 for p in r.per_group)
    fresh = build_model("prepruned_mlp", (1, 8, 8), 10, widths=(32, 32), n_frozen=4)
    assert torch.equal(model.fc1.mask, fresh.fc1.mask)  # structure comes from the structure seed, not the run


def test_modular_mlp_counts_and_aligns_within_modules():
    torch.manual_seed(0)
    model = build_model("modular_mlp", (1, 8, 8), 10, n_modules=4, module_width=8, depth=2).double()
    spec = PermSpec.from_module(model)
    assert [len(m) for m in spec.groups[0].class_members()] == [8, 8, 8, 8]
    g = random_group_element(spec, torch.Generator().manual_seed(2))
    for name in ("fc1", "fc2"):  # a permutation never leaves its module
        assert torch.equal(g.perms[name] // 8, torch.arange(32) // 8)
    b = apply_group(model, g, spec)
    x = torch.rand(16, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert float((b(x) - model(x)).abs().max()) <= 1e-12
    g_back, _ = weight_matching(model, b, spec)
    back = apply_group(b, g_back, spec)
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in model.state_dict().items())


def test_orthopoly_learnable_moves_coefficients_with_units():
    act = OrthoPolyActivation(8, K=3, family="legendre", learnable=True)
    assert isinstance(act.coeffs, torch.nn.Parameter)
    model = build_model("orthopoly_mlp", (6,), 3, widths=(8,), learnable=True).double()
    with pytest.warns(UserWarning, match="learnable structure"):
        spec = PermSpec.from_module(model)
    g = random_group_element(spec, torch.Generator().manual_seed(0))
    x = torch.randn(5, 6, dtype=torch.float64)
    with torch.no_grad():
        assert float((apply_group(model, g, spec)(x) - model(x)).abs().max()) <= 1e-12
