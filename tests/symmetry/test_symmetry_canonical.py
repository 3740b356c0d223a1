"""Canonical forms (spec 06 §3; acceptance 6, 7) and a hypothesis property test."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dicelab.models import MLP
from dicelab.symmetry import PermSpec, apply_group, canonicalize, dedup, random_group_element
from tests.symmetry._symmetry_support import digits, train_digits


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _l2(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return float(sum(((x - y) ** 2).sum() for x, y in zip(a.state_dict().values(), b.state_dict().values(),
                                                          strict=True)) ** 0.5)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_canonical_form_of_trained_nets(activation):
    model, _ = train_digits(0, widths=(32, 32), activation=activation, epochs=3)
    spec = PermSpec.from_module(model)
    assert spec.groups[0].signs == (activation == "tanh")
    canon, g0 = canonicalize(model, spec)
    x = digits().test.x
    with torch.no_grad():
        torch.testing.assert_close(canon(x), model(x), rtol=1e-5, atol=1e-6)
    assert _equal(canonicalize(canon, spec)[0], canon)  # canonicalizing twice changes nothing
    assert _equal(apply_group(model, g0, spec), canon)  # the returned element is the map
    gen = torch.Generator().manual_seed(7)
    for _ in range(20):
        copy = apply_group(model, random_group_element(spec, gen), spec)
        assert _l2(copy, model) >= 1.0
        assert _equal(canonicalize(copy, spec)[0], canon)


def test_dedup_groups_copies_of_two_solutions():
    nets = [train_digits(s, widths=(32, 32), activation="tanh", epochs=3)[0] for s in (0, 1)]
    spec = PermSpec.from_module(nets[0])
    gen = torch.Generator().manual_seed(3)
    copies = [apply_group(n, random_group_element(spec, gen), spec) for n in nets for _ in range(5)]
    assert all(any(s is not None for s in random_group_element(spec, gen).signs.values()) for _ in range(1))
    assert sorted(map(sorted, dedup(copies, spec=spec))) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert len(dedup(copies, spec=spec, canonical=False)) == 10


def test_keys_and_sign_refs():
    torch.manual_seed(0)
    model = MLP(5, (6,), 3, "tanh").double()
    spec = PermSpec.from_module(model)
    gen = torch.Generator().manual_seed(1)
    for key in ("influence", "in_l1", "out"):
        for sign_ref in ("in_max", "out_sum"):
            ref = canonicalize(model, spec, key=key, sign_ref=sign_ref)[0]
            copy = apply_group(model, random_group_element(spec, gen), spec)
            assert _equal(canonicalize(copy, spec, key=key, sign_ref=sign_ref)[0], ref)
    out_sum = canonicalize(model, spec, sign_ref="out_sum")[0]
    assert bool((out_sum.head.weight.sum(0) > 0).all())
    deep = MLP(5, (6, 6), 3, "tanh")
    with pytest.raises(Exception, match="next layer without sign freedom"):
        canonicalize(deep, key="out")


@st.composite
def _nets(draw):
    widths = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
    activation = draw(st.sampled_from(["tanh", "relu"]))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MLP(3, widths, 2, activation).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
        # degenerate units: a dead one, an exact copy and a sign copy, where the layer is wide enough
        layer = draw(st.integers(1, len(widths)))
        fc = getattr(model, f"fc{layer}")
        nxt = getattr(model, f"fc{layer + 1}") if layer < len(widths) else model.head
        w = fc.out_features
        kind = draw(st.sampled_from(["none", "dead", "copy", "negcopy"]))
        if kind != "none" and w >= 2:
            sgn = -1.0 if (kind == "negcopy" and activation == "tanh") else 1.0
            fc.weight[1] = 0 if kind == "dead" else sgn * fc.weight[0]
            fc.bias[1] = 0 if kind == "dead" else sgn * fc.bias[0]
            nxt.weight[:, 1] = 0 if kind == "dead" else sgn * nxt.weight[:, 0]
    return model, seed


@settings(max_examples=40, deadline=None)
@given(_nets())
def test_property_canonical_form_is_orbit_invariant(net):
    model, seed = net
    spec = PermSpec.from_module(model)
    canon = canonicalize(model, spec)[0]
    copy = apply_group(model, random_group_element(spec, torch.Generator().manual_seed(seed + 1)), spec)
    assert _equal(canonicalize(copy, spec)[0], canon)
    assert _equal(canonicalize(canon, spec)[0], canon)
    x = torch.randn(7, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(canon(x), model(x), rtol=1e-12, atol=1e-12)
