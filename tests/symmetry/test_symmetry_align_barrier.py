"""Alignment and barriers (spec 06 §4–5; acceptance 8–12)."""

from __future__ import annotations

import itertools

import pytest
import torch

from dicelab.models import MLP, build_model
from dicelab.symmetry import (
    GroupElement,
    PermSpec,
    SymmetryError,
    SymmetryWarning,
    apply_group,
    barrier,
    fold_bn,
    interpolate,
    random_group_element,
    weight_matching,
)
from dicelab.symmetry.interp import KINDS
from tests.symmetry._symmetry_support import digits, train_digits


def _equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_self_alignment_recovers_bitwise_with_zero_barrier(activation):
    model, _ = train_digits(0, widths=(32, 32), activation=activation, epochs=3)
    spec = PermSpec.from_module(model)
    g = random_group_element(spec, torch.Generator().manual_seed(5))
    if activation == "tanh":  # permutation and signs in every hidden group
        assert all(s is not None and bool((s < 0).any()) for s in g.signs.values())
    b = apply_group(model, g, spec)
    g_back, info = weight_matching(model, b, spec)
    assert _equal(apply_group(b, g_back, spec), model)
    assert 1 <= info.improving_sweeps <= 3 and info.l2_after == 0.0 and info.l2_before > 1.0
    data = digits()
    for kind in KINDS:
        res = barrier(model, b, data, kind=kind, align="weight", points=5)
        assert all(v == 0.0 for v in res.barriers["after"].values()), (kind, res.barriers["after"])
        assert res.barriers["before"]["train_loss"] > 0.1


def test_one_hidden_layer_matches_brute_force():
    torch.manual_seed(0)
    a, b = MLP(5, (6,), 3, "relu").double(), MLP(5, (6,), 3, "relu").double()
    spec = PermSpec.from_module(a)
    sa, sb = a.state_dict(), b.state_dict()

    def objective(perm):
        g = GroupElement({"fc1": torch.tensor(perm)}, {"fc1": None})
        from dicelab.symmetry import apply_state

        pb = apply_state(sb, g, spec)
        return sum(float((sa[k] * pb[k]).sum()) for k in sa)

    best = max(objective(p) for p in itertools.permutations(range(6)))
    g, info = weight_matching(a, b, spec)
    assert objective(g.perms["fc1"].tolist()) == pytest.approx(best, rel=1e-12, abs=1e-12)
    assert info.objective[1] == pytest.approx(info.objective[-1], rel=0, abs=1e-12)
    assert info.improving_sweeps == 1


def test_digits_weight_matching_halves_the_barrier():
    (a, _), (b, _) = train_digits(0), train_digits(1)
    data = digits()
    res = barrier(a, b, data, align="weight")
    naive, after = res.value("before"), res.value("after")
    assert naive >= 0.3, naive
    assert after <= 0.5 * naive, (after, naive)
    spec = PermSpec.from_module(a)
    g, _ = weight_matching(a, b, spec)
    with torch.no_grad():
        x = data.test.x
        assert float((apply_group(b, g, spec)(x) - b(x)).abs().max()) <= 1e-4
    print(f"digits 32: naive {naive:.4f} after {after:.4f} ratio {after / naive:.3f}")


def test_activation_matching_and_repair_at_width_64():
    (a, _), (b, _) = train_digits(0, widths=(64, 64)), train_digits(1, widths=(64, 64))
    res = barrier(a, b, digits(), align="both", repair=True)
    naive, wm = res.value("before"), res.value("after")
    act, rep = res.value("after_activation"), res.value("after_repair")
    assert act <= 0.5 * naive, (act, naive)
    assert rep <= 0.5 * wm, (rep, wm)
    print(f"digits 64: naive {naive:.4f} wm {wm:.4f} act {act:.4f} wm+repair {rep:.4f}")


def test_batchnorm_reset_versus_interpolated_stats():
    from _symmetry_models import bn_mlp

    (a, _), (b, _) = train_digits(0, widths=(64, 64), model=bn_mlp), train_digits(1, widths=(64, 64), model=bn_mlp)
    data = digits()
    with pytest.warns(SymmetryWarning, match="variance collapse"):
        none = barrier(a, b, data, align="weight", bn="none")
    reset = barrier(a, b, data, align="weight", bn="reset")
    assert reset.bn == "reset" and barrier(a, b, data, points=3).bn == "reset"  # the default with BatchNorm
    assert none.value("before") >= 0.8, none.value("before")
    assert reset.value("after") <= 0.6 * none.value("after"), (reset.value("after"), none.value("after"))
    print(f"BN: naive(none) {none.value('before'):.4f} wm none {none.value('after'):.4f} "
          f"wm reset {reset.value('after'):.4f}")
    # interpolation is exact at the endpoints (bn='none' keeps A's and B's own statistics there)
    with pytest.warns(SymmetryWarning):
        assert _equal(interpolate(a, b, 0.0, bn="none"), a) and _equal(interpolate(a, b, 1.0, bn="none"), b)


def test_fold_bn_keeps_function_and_refuses_bn_after_activation():
    from _symmetry_models import bn_mlp

    a, _ = train_digits(0, widths=(64, 64), model=bn_mlp)
    folded = fold_bn(a)
    x = digits().test.x
    with torch.no_grad():
        torch.testing.assert_close(folded.eval()(x), a.eval()(x), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in folded.modules())
    with pytest.raises(SymmetryError, match="does not directly follow"):
        fold_bn(build_model("vgg", (1, 8, 8), 10, widths=(4, 4, 4), dense=8))


def test_fully_broken_models_are_never_aligned():
    a = build_model("orthopoly_mlp", (64,), 10, widths=(16,), coeffs="unique_random")
    b = build_model("orthopoly_mlp", (64,), 10, widths=(16,), coeffs="unique_random")
    with pytest.raises(SymmetryError, match="fully symmetry-broken"):
        weight_matching(a, b)
    res = barrier(a, b, digits(), points=3)  # the naive barrier still works
    assert set(res.barriers) == {"before"}
