"""dicelab.randomness.augment: the per-sample draws and image transforms of flip … contrast (spec 01 §4, check 16).

One thread comes from tests/randomness/conftest.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dicelab.errors import ConfigError
from dicelab.randomness.augment import (
    affine_grid,
    affine_matrices,
    apply_affine,
    apply_contrast,
    apply_flip,
    draw_contrast,
    draw_flip,
    draw_rotation,
    draw_translation,
    draw_zoom,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def image(c: int = 1, h: int = 8, w: int = 8, seed: int = 123) -> torch.Tensor:
    """One (1, C, H, W) image with no symmetry, values in [0, 1] like the study's inputs."""
    return torch.rand(1, c, h, w, generator=gen(seed))


def copies(n: int, c: int = 1, h: int = 8, w: int = 8) -> torch.Tensor:
    return image(c, h, w).expand(n, c, h, w).contiguous()


def smooth(h: int, w: int) -> torch.Tensor:
    """A smooth (1, 1, H, W) image, so that resampling differences are interpolation differences only."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    img = 0.5 + 0.25 * torch.sin(3 * math.pi * xx / w) * torch.cos(2 * math.pi * yy / h)
    img = img + 0.2 * torch.exp(-((xx - 0.6 * w) ** 2 + (yy - 0.4 * h) ** 2) / 18)
    return img.view(1, 1, h, w)


def blob(h: int, w: int, x0: float, y0: float, sigma: float = 1.2) -> torch.Tensor:
    """A Gaussian blob centred (x0, y0) pixels right/down of the image centre ((W−1)/2, (H−1)/2)."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    xx, yy = xx - (w - 1) / 2, yy - (h - 1) / 2
    return torch.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2)).view(1, 1, h, w)


def centroid(img: torch.Tensor) -> tuple[float, float]:
    """(x, y) centroid in pixels from the image centre (x right, y down)."""
    h, w = img.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h, dtype=img.dtype), torch.arange(w, dtype=img.dtype), indexing="ij")
    m = img[0, 0]
    return float((m * xx).sum() / m.sum() - (w - 1) / 2), float((m * yy).sum() / m.sum() - (h - 1) / 2)


# ------------------------------------------------------------------------------------------------ check 16


def test_rotation_draws_on_512_copies():
    x = copies(512)
    theta = draw_rotation(512, 0.2, gen(0), "cpu")
    assert theta.shape == (512,)
    assert torch.unique(theta).numel() == 512
    assert theta.abs().max().item() <= 0.4 * math.pi
    assert abs(theta.std().item() / 0.7255 - 1) < 0.08  # U(−0.4π, 0.4π): std 0.4π/√3 = 0.7255
    y = apply_affine(x, theta)
    assert torch.unique(y.view(512, -1), dim=0).shape[0] == 512  # every copy got its own rotation


@pytest.mark.parametrize(
    "draw, args",
    [
        (draw_rotation, (0.2,)),
        (draw_zoom, (0.2,)),
        (draw_translation, (0.2,)),
        (draw_contrast, (0.2,)),
        (draw_flip, ("horizontal_and_vertical",)),
    ],
)
def test_per_batch_shares_one_draw(draw, args):
    g = gen(1)
    draws = [draw(512, *args, g, "cpu", per="batch") for _ in range(40)]
    for d in draws:
        assert d.shape[0] == 512
        assert torch.equal(d, d[:1].expand_as(d))  # one draw shared by all rows
    # ...and a fresh one per call: 40 calls give more than one value
    assert len({tuple(d[0].flatten().tolist()) for d in draws}) > 1
    per_sample = draw(512, *args, gen(1), "cpu")
    assert len({tuple(r.flatten().tolist()) for r in per_sample}) > 1


@pytest.mark.parametrize("resample", ["fused", "sequential"])
def test_quarter_turn_is_rot90(resample):
    x = torch.rand(16, 3, 8, 8, generator=gen(2))
    for theta, k in ((math.pi / 2, 1), (-math.pi / 2, -1), (math.pi, 2)):
        y = apply_affine(x, torch.full((16,), theta), resample=resample)
        assert (y - torch.rot90(x, k, (-2, -1))).abs().max().item() < 1e-5, (theta, k)


@pytest.mark.parametrize("resample", ["fused", "sequential"])
@pytest.mark.parametrize("shape", [(8, 8), (32, 32), (8, 16)])  # digits, CIFAR, non-square
@pytest.mark.parametrize("padding", ["reflection", "zeros", "border"])
def test_identity_parameters_reproduce_x(resample, shape, padding):
    x = torch.rand(32, 3, *shape, generator=gen(3))
    y = apply_affine(x, torch.zeros(32), torch.ones(32, 2), torch.zeros(32, 2), resample=resample, padding=padding)
    assert (y - x).abs().max().item() < 1e-6
    assert apply_affine(x) is x  # nothing given: no pass at all


@pytest.mark.parametrize("resample, passes", [("fused", 1), ("sequential", 3)])
@pytest.mark.parametrize("shape", [(6, 10), (28, 28), (24, 40)])
def test_identity_on_other_sizes_is_float32_rounding(resample, passes, shape):
    # grid_sample's float32 unnormalisation ((u + 1)·W − 1)/2 misplaces a sample by up to ~W·2⁻²⁴ pixels when
    # pixel centres are not dyadic; each pass then mixes in that share of a neighbour (values in [0, 1])
    x = torch.rand(32, 3, *shape, generator=gen(3))
    y = apply_affine(x, torch.zeros(32), torch.ones(32, 2), torch.zeros(32, 2), resample=resample)
    assert (y - x).abs().max().item() < passes * max(shape) * 2.0**-23


def test_flip_fractions_over_ten_thousand_samples():
    n = 10_000
    se_half, se_quarter = math.sqrt(0.25 / n), math.sqrt(0.25 * 0.75 / n)
    for mode, on in (("horizontal", (True, False)), ("vertical", (False, True))):
        f = draw_flip(n, mode, gen(4), "cpu")
        assert f.shape == (n, 2) and f.dtype == torch.bool
        for col in (0, 1):
            frac = f[:, col].float().mean().item()
            if on[col]:
                assert abs(frac - 0.5) <= 3 * se_half, (mode, frac)
            else:
                assert frac == 0.0
    f = draw_flip(n, "horizontal_and_vertical", gen(5), "cpu")
    for col in (0, 1):
        assert abs(f[:, col].float().mean().item() - 0.5) <= 3 * se_half
    both = (f[:, 0] & f[:, 1]).float().mean().item()
    assert abs(both - 0.25) <= 3 * se_quarter, both
    assert not draw_flip(n, "none", gen(5), "cpu").any()


def test_flipped_samples_equal_torch_flip():
    n = 10_000
    x = copies(n)
    f = draw_flip(n, "horizontal_and_vertical", gen(6), "cpu")
    y = apply_flip(x, f)
    # each output must be exactly one of the four flips of the image, the one its flags name
    candidates = {
        (False, False): x[0],
        (True, False): torch.flip(x[0], (-1,)),
        (False, True): torch.flip(x[0], (-2,)),
        (True, True): torch.flip(x[0], (-2, -1)),
    }
    for key, ref in candidates.items():
        rows = (f[:, 0] == key[0]) & (f[:, 1] == key[1])
        assert rows.any()
        assert torch.equal(y[rows], ref.expand(int(rows.sum()), *ref.shape))
    # distinct images, several channels, non-square
    x = torch.rand(64, 3, 5, 7, generator=gen(7))
    f = draw_flip(64, "horizontal_and_vertical", gen(8), "cpu")
    y = apply_flip(x, f)
    for i in range(64):
        dims = tuple(d for d, on in ((-1, f[i, 0]), (-2, f[i, 1])) if on)
        assert torch.equal(y[i], torch.flip(x[i], dims) if dims else x[i])


def test_zoom_draws_bounds_and_independence():
    x = 0.2
    s = draw_zoom(512, x, gen(9), "cpu")
    assert s.shape == (512, 2)
    assert s.min().item() >= 1 - x and s.max().item() <= 1 + x
    corr = torch.corrcoef(s.T)[0, 1].item()
    assert abs(corr) < 0.15, corr
    assert abs(s.mean().item() - 1) < 3 * (x / math.sqrt(3)) / math.sqrt(1024)


def test_translation_and_contrast_draw_ranges():
    d = draw_translation(512, 0.2, gen(10), "cpu")
    assert d.shape == (512, 2) and d.abs().max().item() <= 0.2
    assert abs(torch.corrcoef(d.T)[0, 1].item()) < 0.15
    c = draw_contrast(512, 0.2, gen(11), "cpu")
    assert c.shape == (512,) and c.min().item() >= 0.8 and c.max().item() <= 1.2
    assert torch.unique(c).numel() == 512


def test_contrast_formula():
    x = copies(512, c=3)
    c = draw_contrast(512, 0.2, gen(12), "cpu")
    y = apply_contrast(x, c)
    x64 = x.double()
    mu = x64.mean(dim=(-2, -1), keepdim=True)
    ref = (x64 - mu) * c.double().view(-1, 1, 1, 1) + mu
    assert (y.double() - ref).abs().max().item() < 1e-6
    # μ is per image and channel: each channel keeps its own mean (a global μ would not)
    assert (y.mean(dim=(-2, -1)) - x.mean(dim=(-2, -1))).abs().max().item() < 1e-6
    # nothing is clipped: a strong contrast leaves [0, 1]
    z = apply_contrast(x[:1], torch.tensor([3.0]))
    assert z.min().item() < 0 and z.max().item() > 1


# ------------------------------------------------------------------------------------------- geometry


def test_translation_by_whole_pixels_moves_content_right_and_down():
    h, w = 8, 12
    x = torch.rand(2, 2, h, w, generator=gen(13))
    # sample 0: 2 px down, 3 px right; sample 1: 1 px up, 4 px left (Keras RandomTranslation signs)
    d = torch.tensor([[2 / h, 3 / w], [-1 / h, -4 / w]])
    y = apply_affine(x, translation=d, padding="zeros")
    ref = torch.zeros_like(x)
    ref[0, :, 2:, 3:] = x[0, :, :-2, :-3]
    ref[1, :, :-1, :-4] = x[1, :, 1:, 4:]
    assert (y - ref).abs().max().item() < 1e-6
    # the same in sequential mode (a single pass there too)
    assert (apply_affine(x, translation=d, padding="zeros", resample="sequential") - ref).abs().max().item() < 1e-6


def test_zoom_out_leaves_a_shrunken_copy():
    # constant interior: ones on an 8×8 centre square of a 16×16 image; s = 2 halves it to the centre 4×4
    x = torch.zeros(1, 1, 16, 16)
    x[..., 4:12, 4:12] = 1.0
    y = apply_affine(x, zoom=torch.tensor([[2.0, 2.0]]), padding="zeros")
    ref = torch.zeros_like(x)
    ref[..., 6:10, 6:10] = 1.0
    assert (y - ref).abs().max().item() < 1e-6
    # with reflection the centre 8×8 (which reads inside the image) is the same; outside it mirrors copies in
    y = apply_affine(x, zoom=torch.tensor([[2.0, 2.0]]), padding="reflection")
    assert (y - ref)[..., 4:12, 4:12].abs().max().item() < 1e-6
    assert y[..., 0, 0].item() == pytest.approx(1.0, abs=1e-6)  # reads input (−7.5, −7.5) → mirrored (6.5, 6.5)
    # any image: at s = 2 each output pixel reads the middle of a 2×2 input block, i.e. a 2×2 average pool
    x = torch.rand(3, 2, 16, 24, generator=gen(14))
    y = apply_affine(x, zoom=torch.full((3, 2), 2.0), padding="zeros")
    ref = torch.zeros_like(x)
    ref[..., 4:12, 6:18] = F.avg_pool2d(x, 2)
    assert (y - ref).abs().max().item() < 1e-6
    # zoom is [s_h, s_w]: s_h = 2 alone pools rows only
    y = apply_affine(x, zoom=torch.tensor([[2.0, 1.0]] * 3), padding="zeros")
    ref = torch.zeros_like(x)
    ref[..., 4:12, :] = F.avg_pool2d(x, (2, 1))
    assert (y - ref).abs().max().item() < 1e-6


def test_rotation_on_non_square_images_is_rotation_in_pixels():
    # H = 8, W = 16: a quarter turn about the centre maps the central 8×8 square onto itself in pixel space
    x = torch.rand(4, 2, 8, 16, generator=gen(15))
    y = apply_affine(x, torch.full((4,), math.pi / 2), padding="zeros")
    assert (y[..., 4:12] - torch.rot90(x[..., 4:12], 1, (-2, -1))).abs().max().item() < 1e-5
    # a blob 6 px right of the centre goes 6 px up (counter-clockwise as displayed), not 6·H/W px
    b = blob(24, 40, 6.0, 0.0)
    cx, cy = centroid(apply_affine(b, torch.tensor([math.pi / 2]), padding="zeros"))
    assert abs(cx) < 0.05 and abs(cy + 6.0) < 0.05, (cx, cy)


def test_combined_map_moves_a_blob_where_the_spec_says():
    # p = R(−θ)·diag(s_w, s_h)·(u − t): content at p appears at u = t + diag(1/s_w, 1/s_h)·R(θ)·p (pixels, y down)
    h, w = 24, 40
    px, py = 4.0, -3.0
    theta, s_h, s_w, d_y, d_x = 0.5, 0.9, 1.2, -2.0 / h, 3.0 / w
    b = blob(h, w, px, py)
    y = apply_affine(
        b, torch.tensor([theta]), torch.tensor([[s_h, s_w]]), torch.tensor([[d_y, d_x]]), padding="zeros"
    )
    c, s = math.cos(theta), math.sin(theta)
    rx, ry = c * px + s * py, -s * px + c * py  # counter-clockwise as displayed, in y-down pixel axes
    ex, ey = d_x * w + rx / s_w, d_y * h + ry / s_h
    cx, cy = centroid(y)
    assert abs(cx - ex) < 0.05 and abs(cy - ey) < 0.05, ((cx, cy), (ex, ey))


def test_fused_and_sequential_differ_only_by_interpolation():
    x = smooth(32, 32)
    inner = (..., slice(6, -6), slice(6, -6))  # away from the borders, where the passes pad differently
    for theta, zoom, shift in ((0.05, (1.03, 0.97), (0.02, -0.03)), (0.3, (1.1, 0.9), (0.1, -0.1))):
        th, z, t = torch.tensor([theta]), torch.tensor([zoom]), torch.tensor([shift])
        fused = apply_affine(x, th, z, t)
        seq = apply_affine(x, th, z, t, resample="sequential")
        gap = (fused - seq)[inner].abs().max().item()
        assert 0 < gap < 0.02, gap
        # the same three passes in the wrong order (translate, zoom, rotate) land much further away
        wrong = apply_affine(apply_affine(apply_affine(x, translation=t), zoom=z), th)
        if theta > 0.1:
            assert (wrong - seq)[inner].abs().max().item() > 4 * gap


def test_affine_grid_matches_torch():
    g = gen(16)
    for h, w in ((8, 8), (24, 40), (5, 3)):
        a = affine_matrices(draw_rotation(16, 0.2, g), draw_zoom(16, 0.2, g), draw_translation(16, 0.2, g), h, w)
        ref = F.affine_grid(a, [16, 1, h, w], align_corners=False)
        assert (affine_grid(a, h, w) - ref).abs().max().item() < 1e-6


def test_float64_batches_keep_their_dtype():
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64, generator=gen(17))
    th = draw_rotation(4, 0.2, gen(18))
    y = apply_affine(x, th, draw_zoom(4, 0.2, gen(19)), draw_translation(4, 0.2, gen(20)))
    assert y.dtype == torch.float64
    assert (apply_affine(x, torch.zeros(4)) - x).abs().max().item() < 1e-12
    assert apply_contrast(x, draw_contrast(4, 0.2, gen(21))).dtype == torch.float64


# -------------------------------------------------------------------------------------------- RNG rules


def _everything(seed: int) -> list[torch.Tensor]:
    g = gen(seed)
    x = torch.rand(16, 3, 8, 10, generator=g)
    f = draw_flip(16, "horizontal_and_vertical", g)
    th, z, t = draw_rotation(16, 0.2, g), draw_zoom(16, 0.2, g), draw_translation(16, 0.2, g)
    c = draw_contrast(16, 0.2, g)
    out = [f, th, z, t, c, apply_flip(x, f), apply_contrast(x, c)]
    for resample in ("fused", "sequential"):
        out.append(apply_affine(x, th, z, t, resample=resample))
    out.append(draw_rotation(16, 0.2, g, per="batch"))
    return out


def test_global_rng_state_untouched_and_same_seed_same_output():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = _everything(42)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)  # a different global state changes nothing either
    second = _everything(42)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    other = _everything(43)
    assert not torch.equal(first[1], other[1])


def test_inputs_are_not_mutated():
    x = torch.rand(8, 1, 8, 8, generator=gen(22))
    keep = x.clone()
    apply_flip(x, torch.ones(8, 2, dtype=torch.bool))
    apply_contrast(x, torch.full((8,), 1.5))
    apply_affine(x, torch.full((8,), 0.3), resample="sequential")
    assert torch.equal(x, keep)


# ------------------------------------------------------------------------------------------- bad input


def test_bad_options_name_the_field():
    g = gen(0)
    with pytest.raises(ConfigError, match="randomness.flip.mode"):
        draw_flip(4, "diagonal", g)
    with pytest.raises(ConfigError, match="randomness.augment.per"):
        draw_rotation(4, 0.1, g, per="epoch")
    with pytest.raises(ConfigError, match="randomness.zoom"):
        draw_zoom(4, 1.0, g)  # s would reach 0
    with pytest.raises(ConfigError, match="randomness.rotation"):
        draw_rotation(4, -0.1, g)
    x = torch.rand(4, 1, 8, 8)
    with pytest.raises(ConfigError, match="randomness.augment.padding"):
        apply_affine(x, torch.zeros(4), padding="wrap")
    with pytest.raises(ConfigError, match="randomness.augment.resample"):
        apply_affine(x, torch.zeros(4), resample="bicubic")
    with pytest.raises(ValueError, match="theta must have shape"):
        apply_affine(x, torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        apply_contrast(x.view(4, 64), torch.ones(4))
