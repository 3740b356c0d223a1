"""Counting (spec 06 §2; acceptance 1–5): group orders, exact counts, stabilizer, specs from modules."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from dicelab.models import MLP, build_model
from dicelab.symmetry import (
    GroupElement,
    PermSpec,
    UnsupportedModuleError,
    apply_group,
    count_equivalent,
    random_group_element,
)

L10 = math.log(10)


def lf(n: int) -> float:
    return math.lgamma(n + 1) / L10


def test_mlp_counts_log10_and_exact():
    r = count_equivalent(PermSpec.mlp([784, 512, 512, 512, 10]), exact=True)
    assert r.log10 == pytest.approx(3499.6237, abs=1e-4)
    assert r.exact == math.factorial(512) ** 3 and len(str(r.exact)) == 3500
    assert r.continuous_dims == 3 * 512  # ReLU scaling: reported, not counted
    assert count_equivalent(PermSpec.mlp([784, 512, 512, 512, 10], "tanh")).log10 == pytest.approx(3962.0058, abs=1e-4)
    assert count_equivalent(PermSpec.mlp([20, 64, 64, 10])).log10 == pytest.approx(178.2068, abs=1e-4)


def test_ready_made_and_remedy_specs():
    assert count_equivalent(PermSpec.resnet20()).log10 == pytest.approx(551.377, abs=1e-3)
    assert count_equivalent(PermSpec.resnet20(32)).log10 == pytest.approx(38801.994, abs=1e-3)
    assert count_equivalent(PermSpec.transformer(768, 12, 12, 3072)).log10 == pytest.approx(114564.603, abs=1e-3)
    modular = build_model("modular_mlp", (64,), 10, n_modules=64, module_width=8, depth=1)
    r = count_equivalent(modular)
    assert r.per_group[0]["log10_perm"] == pytest.approx(294.753, abs=1e-3)
    assert count_equivalent(PermSpec.mlp([64, 512, 10])).log10 == pytest.approx(1166.541, abs=1e-3)
    deg = build_model("orthopoly_mlp", (64,), 10, widths=(64,), coeffs="degree_per_unit", K=4)
    assert count_equivalent(deg).log10 == pytest.approx(53.282, abs=1e-3)
    uniq = build_model("orthopoly_mlp", (64,), 10, widths=(64,), coeffs="unique_random", K=4)
    assert count_equivalent(uniq).log10 == 0.0
    # an all-odd coefficient set keeps the sign symmetry (the counter checks the parity)
    odd = build_model("orthopoly_mlp", (64,), 10, widths=(8,), coeffs="degree_per_unit", K=1)
    assert PermSpec.from_module(odd).groups[0].signs
    assert not PermSpec.from_module(deg).groups[0].signs


def _tiny_tanh(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return MLP(4, (3,), 1, "tanh").double()


def _images(model: nn.Module, spec: PermSpec) -> list[torch.Tensor]:
    """Every one of the 3!·2³ = 48 images of a 4-3-1 tanh net, flattened."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            g = GroupElement({"fc1": torch.tensor(perm)}, {"fc1": torch.tensor(signs, dtype=torch.float64)})
            m = apply_group(model, g, spec)
            out.append((m, torch.cat([p.detach().flatten() for p in m.state_dict().values()])))
    return out


def _distinct(flats: list[torch.Tensor]) -> int:
    return len({(f + 0.0).numpy().tobytes() for f in flats})


def test_brute_force_4_3_1_tanh():
    model = _tiny_tanh()
    spec = PermSpec.from_module(model)
    imgs = _images(model, spec)
    assert _distinct([f for _, f in imgs]) == 48
    x = torch.randn(256, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
        assert max(float((m(x) - y).abs().max()) for m, _ in imgs) <= 1e-12
    assert count_equivalent(model, exact=True).exact == 48
    with torch.no_grad():
        zero = _tiny_tanh()
        zero.fc1.weight[1] = 0
        zero.fc1.bias[1] = 0
        zero.head.weight[:, 1] = 0
        dup = _tiny_tanh()
        dup.fc1.weight[2] = dup.fc1.weight[0]
        dup.fc1.bias[2] = dup.fc1.bias[0]
        dup.head.weight[:, 2] = dup.head.weight[:, 0]
        neg = _tiny_tanh()
        neg.fc1.weight[2] = -neg.fc1.weight[0]
        neg.fc1.bias[2] = -neg.fc1.bias[0]
        neg.head.weight[:, 2] = -neg.head.weight[:, 0]
    for special in (zero, dup, neg):
        assert _distinct([f for _, f in _images(special, spec)]) == 24
        r = count_equivalent(special, exact=True)
        assert r.exact == 24 and r.log10 == pytest.approx(math.log10(24), abs=1e-12)


def test_stabilizer_dead_and_copied_units():
    torch.manual_seed(0)
    base = MLP(20, (64, 64), 10, "relu")
    full = count_equivalent(base).log10
    assert full == pytest.approx(178.2068, abs=1e-4)
    dead, copied = MLP(20, (64, 64), 10, "relu"), MLP(20, (64, 64), 10, "relu")
    dead.load_state_dict(base.state_dict())
    copied.load_state_dict(base.state_dict())
    with torch.no_grad():
        for j in (3, 4, 5):
            dead.fc1.weight[j] = 0
            dead.fc1.bias[j] = 0
            dead.fc2.weight[:, j] = 0
        for j in (1, 2):
            copied.fc1.weight[j] = copied.fc1.weight[0]
            copied.fc1.bias[j] = copied.fc1.bias[0]
            copied.fc2.weight[:, j] = copied.fc2.weight[:, 0]
    for m in (dead, copied):
        r = count_equivalent(m)
        assert full - r.log10 == pytest.approx(math.log10(6), abs=1e-9)
        assert r.stabilizer_log10 == pytest.approx(math.log10(6), abs=1e-9)
    # same incoming side, different outgoing column: a continuous symmetry, listed but not counted
    red = MLP(20, (64, 64), 10, "relu")
    red.load_state_dict(base.state_dict())
    with torch.no_grad():
        red.fc1.weight[7] = red.fc1.weight[6]
        red.fc1.bias[7] = red.fc1.bias[6]
    r = count_equivalent(red)
    assert r.log10 == pytest.approx(full, abs=1e-12) and ("fc1", 6, 7) in r.redundant_pairs
    data = torch.randn(50, 20)
    assert count_equivalent(dead, data=data).functionally_dead["fc1"][:3] == [3, 4, 5]


class _CNN(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                         nn.BatchNorm2d(32), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 64, 10))


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.fc1, self.fc2, self.head = nn.Linear(10, 16), nn.Linear(16, 32), nn.Linear(32, 16), nn.Linear(16, 3)

    def forward(self, x):
        h = self.inp(x)
        h = h + self.fc2(torch.relu(self.fc1(h)))
        return self.head(torch.tanh(h))


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.att, self.head = nn.Linear(6, 16), nn.MultiheadAttention(16, 4, batch_first=True), nn.Linear(16, 3)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        return self.head(self.att(h, h, h)[0])


@pytest.mark.parametrize("make,shape", [(_CNN, (4, 1, 8, 8)), (_Residual, (5, 10)), (_Attention, (3, 5, 6))])
def test_from_module_group_action_keeps_outputs(make, shape):
    torch.manual_seed(0)
    model = make().double().eval()
    with torch.no_grad():  # non-trivial BN statistics, so moving them along is tested
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
    x = torch.randn(*shape, dtype=torch.float64)
    spec = PermSpec.from_module(model, x)
    with torch.no_grad():
        y = model(x)
        gen = torch.Generator().manual_seed(0)
        moved = 0.0
        for _ in range(20):
            g = random_group_element(spec, gen)
            mg = apply_group(model, g, spec)
            assert float((mg(x) - y).abs().max()) <= 1e-12 * float(y.abs().max())
            moved = max(moved, sum(float((a - b).abs().sum()) for a, b in
                                   zip(model.state_dict().values(), mg.state_dict().values(), strict=True)))
    assert moved > 1.0  # the parameters did move
    if make is _CNN:
        assert [g.n for g in spec.groups] == [16, 32]
        assert count_equivalent(model, example_input=x).log10 == pytest.approx(lf(16) + lf(32), abs=1e-9)
    if make is _Residual:
        assert [(g.kind, g.n, g.signs) for g in spec.groups] == [("residual", 16, True), ("units", 32, False)]
    if make is _Attention:
        assert [(g.kind, g.n) for g in spec.groups] == [("units", 16), ("heads", 4), ("units", 16)]


def test_from_module_mlp_equals_ready_made():
    for act in ("relu", "tanh"):
        assert PermSpec.from_module(MLP(64, (32, 32), 10, act)) == PermSpec.mlp([64, 32, 32, 10], act)


def test_unsupported_modules_raise_one_line_naming_them(run_cli):
    from _symmetry_models import lstm_model

    with pytest.raises(UnsupportedModuleError, match=r"module 'encoder' \(LSTM\) is not supported") as e:
        PermSpec.from_module(lstm_model(), torch.randn(2, 4))
    assert "\n" not in str(e.value)
    grouped = nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(4 * 36, 2))
    with pytest.raises(UnsupportedModuleError, match=r"module '0' \(Conv2d with groups=2\)"):
        PermSpec.from_module(grouped, torch.randn(2, 2, 8, 8))
    code, out, err = run_cli("symmetry", "count", "_symmetry_models:lstm_model")
    assert code == 2 and err.count("\n") == 1 and "'encoder' (LSTM)" in err


def test_learnable_structure_keeps_dense_count_and_warns():
    m = build_model("orthopoly_mlp", (64,), 10, widths=(32, 32), learnable=True)
    with pytest.warns(UserWarning, match="learnable structure"):
        r = count_equivalent(m)
    assert r.log10 == pytest.approx(2 * lf(32), abs=1e-9) and r.log10 == pytest.approx(70.840, abs=1e-3)


def test_ready_made_vgg_matches_tracing_and_affine_odd_is_count_only():
    vgg = build_model("vgg", (1, 8, 8), 10, widths=(4, 6, 8), dense=12)
    assert PermSpec.from_module(vgg, torch.zeros(2, 1, 8, 8)) == PermSpec.vgg3((1, 8, 8), (4, 6, 8), 12)
    sig = MLP(5, (7,), 2, "sigmoid")
    assert count_equivalent(sig).log10 == pytest.approx(lf(7), abs=1e-12)  # default: no sigmoid flips
    spec = PermSpec.from_module(sig, affine_odd=True)
    assert count_equivalent(spec).log10 == pytest.approx(lf(7) + 7 * math.log10(2), abs=1e-12)
    g = random_group_element(spec, torch.Generator().manual_seed(0))
    assert g.signs["fc1"] is None  # an affine flip needs an addition into the next bias: counted, never applied


def test_groupnorm_blocks_count_canonicalize_and_match():
    from dicelab.symmetry import canonicalize, weight_matching

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16, 3)).double().eval()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 2)
        model[1].bias.uniform_(-1, 1)
    x = torch.randn(4, 1, 4, 4, dtype=torch.float64)
    spec = PermSpec.from_module(model, x)
    assert spec.groups[0].class_blocks and spec.groups[0].classes == (0, 0, 0, 0, 1, 1, 1, 1)
    assert count_equivalent(spec).log10 == pytest.approx(2 * lf(4) + lf(2) + lf(6), abs=1e-12)  # (c/G)!^G·G!
    canon = canonicalize(model, spec)[0].state_dict()
    gen = torch.Generator().manual_seed(1)
    swapped = 0
    with torch.no_grad():
        y = model(x)
        for _ in range(10):
            g = random_group_element(spec, gen)
            swapped += int(g.perms["0"][0] >= 4)  # whole GroupNorm groups change places too
            copy = apply_group(model, g, spec)
            assert float((copy(x) - y).abs().max()) <= 1e-12
            assert all(torch.equal(v, canon[k]) for k, v in canonicalize(copy, spec)[0].state_dict().items())
            back = apply_group(copy, weight_matching(model, copy, spec)[0], spec)
            assert all(torch.equal(v, back.state_dict()[k]) for k, v in model.state_dict().items())
    assert swapped > 0
