"""Batched, per-sample image augmentation: the draws and transforms behind flip … contrast (spec 01 §4).

Every function here is pure: it never touches the global RNG (each sampler call passes ``generator=``), never
mutates its input, and works on a whole batch ``x`` of shape (B, C, H, W) at once. ``draw_*`` functions sample
the parameters (one row per sample, or one shared row with ``per="batch"``, as torchvision v2 does);
``apply_*`` functions are deterministic given those parameters, so a technique can trace its draws and tests
can force them.

Conventions (those of the Keras preprocessing layers the reference code stacks):

* flip: column 0 flips the width axis (dim -1, "horizontal"), column 1 the height axis (dim -2).
* rotation: a positive angle θ turns the content counter-clockwise as displayed (row 0 at the top);
  θ = +π/2 on a square image is ``torch.rot90(x, 1, (-2, -1))`` up to float32 rounding (~4e-7).
* zoom: factors (s_h, s_w); s > 1 zooms out (the content shrinks), s < 1 zooms in.
* translation: fractions (d_y, d_x) of (H, W); positive d_x moves the content right, positive d_y moves it
  down (Keras ``RandomTranslation``: "a positive value means shifting image down / right").
* The sampling map ``p = R(−θ)·diag(s_w, s_h)·(u − t)`` takes an output location u to the input location p it
  reads, so the content is translated last ("rotation, then zoom, then translation", the layer order of the
  reference pipeline). R is the usual counter-clockwise rotation in displayed (y-up) axes.

Geometry: coordinates are grid_sample's normalised ones with ``align_corners=False`` (pixel centres at
``(2i+1)/W − 1``), so the image centre is the rotation/zoom centre, a translation fraction f is ``2f``
normalised units (exactly ``f·W`` pixels), and ``padding="reflection"`` reflects about the image edge like
Keras' ``fill_mode="reflect"``. On a non-square image a rotation in normalised units would be a rotation of a
stretched image (a shear in pixels), so the rotation is conjugated into pixel units:
``R_norm = diag(2/W, 2/H)·R·diag(W/2, H/2)``. Rotations, zooms and translations therefore act on pixels
exactly as on a square image; for H == W this is the plain formula above.

Precision: identity parameters reproduce x exactly when H and W are powers of two (digits 8×8, CIFAR 32×32);
otherwise grid_sample's float32 unnormalisation misplaces samples by up to ~W·2⁻²⁴ px, i.e. ~1.4e-6 per pass
at 28×28 on [0, 1] data (torch's own ``F.affine_grid`` gives ~3e-6 there).

Devices: draws happen on ``device`` (default: the generator's), so the generator must live there (R1: each
technique's generator is created on the device that draws).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dicelab.errors import ConfigError

__all__ = [
    "FLIP_MODES",
    "PADDINGS",
    "PER",
    "RESAMPLES",
    "affine_grid",
    "affine_matrices",
    "apply_affine",
    "apply_contrast",
    "apply_flip",
    "draw_contrast",
    "draw_flip",
    "draw_rotation",
    "draw_translation",
    "draw_zoom",
]

FLIP_MODES = ("none", "horizontal_and_vertical", "horizontal", "vertical")
PER = ("sample", "batch")
RESAMPLES = ("fused", "sequential")
PADDINGS = ("reflection", "zeros", "border")

# (flip_h, flip_v) enabled per mode
_FLIP_AXES = {
    "none": (False, False),
    "horizontal_and_vertical": (True, True),
    "horizontal": (True, False),
    "vertical": (False, True),
}


def _choice(field: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{field}: {value!r} is not one of {', '.join(choices)}")
    return value  # type: ignore[return-value]


def _factor(field: str, factor: float, high: float | None = None) -> float:
    value = float(factor)
    if not math.isfinite(value) or value < 0 or (high is not None and value >= high):
        bound = f"[0, {high:g})" if high is not None else "[0, inf)"
        raise ConfigError(f"{field}: factor {factor!r} outside {bound}")
    return value


def _rows(n: int, per: str) -> int:
    """How many independent rows to draw: n per sample, one shared row per batch."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    return n if _choice("randomness.augment.per", per, PER) == "sample" else 1


def _spread(draw: torch.Tensor, n: int) -> torch.Tensor:
    """Give the draw n rows (a no-op per sample; per batch, copies of the one shared row)."""
    if draw.shape[0] == n:
        return draw
    return draw.expand(n, *draw.shape[1:]).contiguous()


def _symmetric(shape: tuple[int, ...], half_width: float, generator, device) -> torch.Tensor:
    """U(−a, a) in float32 with one generator call (rand is in [0, 1), so the top value is just below a)."""
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float32)
    return u.mul_(2.0).sub_(1.0).mul_(half_width)


def _device(device, generator: torch.Generator) -> torch.device:
    return generator.device if device is None else torch.device(device)


# ----------------------------------------------------------------------------------------------------- draws


def draw_flip(n: int, mode: str, generator: torch.Generator, device=None, per: str = "sample") -> torch.Tensor:
    """(n, 2) bool ``[flip_h, flip_v]``: each axis enabled by ``mode`` flips with probability 1/2, independently.

    ``flip_h`` flips the width axis (dim -1), ``flip_v`` the height axis (dim -2). Mode ``"none"`` draws
    nothing. Otherwise one ``rand`` call draws both columns (so the stream does not depend on the mode), and
    ``u < 0.5`` is exactly Bernoulli(1/2) since float32 ``rand`` is uniform on multiples of 2⁻²⁴.
    """
    axes = _FLIP_AXES[_choice("randomness.flip.mode", mode, FLIP_MODES)]
    rows = _rows(n, per)
    device = _device(device, generator)
    if not any(axes):
        return torch.zeros(n, 2, dtype=torch.bool, device=device)
    flips = torch.rand(rows, 2, generator=generator, device=device) < 0.5
    flips &= torch.tensor(axes, device=device)
    return _spread(flips, n)


def draw_rotation(n: int, factor: float, generator: torch.Generator, device=None, per: str = "sample") -> torch.Tensor:
    """(n,) angles θ ~ U(−2π·factor, 2π·factor) in radians (factor is a fraction of a full turn, as in Keras)."""
    factor = _factor("randomness.rotation", factor)
    rows = _rows(n, per)
    return _spread(_symmetric((rows,), 2.0 * math.pi * factor, generator, _device(device, generator)), n)


def draw_zoom(n: int, factor: float, generator: torch.Generator, device=None, per: str = "sample") -> torch.Tensor:
    """(n, 2) zoom factors ``[s_h, s_w]``, each ~ U(1 − factor, 1 + factor) independently; s > 1 zooms out."""
    factor = _factor("randomness.zoom", factor, high=1.0)  # s must stay positive
    rows = _rows(n, per)
    return _spread(_symmetric((rows, 2), factor, generator, _device(device, generator)).add_(1.0), n)


def draw_translation(n: int, factor: float, generator: torch.Generator, device=None, per: str = "sample") -> torch.Tensor:
    """(n, 2) translation fractions ``[d_y, d_x]``, each ~ U(−factor, factor); in pixels d_y·H and d_x·W."""
    factor = _factor("randomness.translation", factor)
    rows = _rows(n, per)
    return _spread(_symmetric((rows, 2), factor, generator, _device(device, generator)), n)


def draw_contrast(n: int, factor: float, generator: torch.Generator, device=None, per: str = "sample") -> torch.Tensor:
    """(n,) contrast factors c ~ U(1 − factor, 1 + factor)."""
    factor = _factor("randomness.contrast", factor)
    rows = _rows(n, per)
    return _spread(_symmetric((rows,), factor, generator, _device(device, generator)).add_(1.0), n)


# ---------------------------------------------------------------------------------------------- transforms


def _check_images(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"augmentation needs image batches (B, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"augmentation needs a floating-point batch, got {x.dtype}")


def _as(p: torch.Tensor, dtype: torch.dtype, device) -> torch.Tensor:
    return p if p.dtype == dtype and (device is None or p.device == torch.device(device)) else p.to(device, dtype)


def _check_param(name: str, p: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    if tuple(p.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(p.shape)}")
    return p


def apply_flip(x: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Flip sample i along the width axis where ``flips[i, 0]`` and along the height axis where ``flips[i, 1]``.

    Flipped samples are exact copies of ``torch.flip`` (values are only moved, never computed): one ``gather``
    with a per-sample pixel permutation, which beats masked ``torch.flip`` copies on CPU and needs no
    host sync on GPU.
    """
    _check_images(x)
    b, c, h, w = x.shape
    flips = _check_param("flips", flips, (b, 2)).to(device=x.device, dtype=torch.bool)
    ar_w = torch.arange(w, device=x.device)
    ar_h = torch.arange(h, device=x.device)
    cols = torch.where(flips[:, 0:1], (w - 1) - ar_w, ar_w)  # (B, W) source column of each output column
    rows = torch.where(flips[:, 1:2], (h - 1) - ar_h, ar_h)  # (B, H)
    index = (rows.unsqueeze(2) * w + cols.unsqueeze(1)).view(b, 1, h * w).expand(b, c, h * w)
    return x.reshape(b, c, h * w).gather(2, index).view(b, c, h, w)


def apply_contrast(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``y = (x − μ)·c + μ`` with μ the mean of each image and channel, c of shape (B,). Nothing is clipped."""
    _check_images(x)
    c = _check_param("c", c, (x.shape[0],)).to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
    mu = x.mean(dim=(-2, -1), keepdim=True)
    return (x - mu).mul_(c).add_(mu)


def affine_matrices(
    theta: torch.Tensor | None,
    zoom: torch.Tensor | None,
    translation: torch.Tensor | None,
    height: int,
    width: int,
    *,
    n: int | None = None,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> torch.Tensor:
    """(n, 2, 3) ``affine_grid`` matrices ``[A | b]`` of the sampling map ``p = R(−θ)·diag(s_w, s_h)·(u − t)``.

    Coordinates are normalised (x right, y down, ``align_corners=False``). In those axes the displayed
    counter-clockwise rotation R(−θ) of the spec is ``[[cos θ, −sin θ], [sin θ, cos θ]]``, conjugated into
    pixel units for non-square images (module docstring); ``t = (2·d_x, 2·d_y)`` and ``b = −A·t``. A None
    parameter is the identity; ``n`` is needed only when all three are None. Matches
    ``F.affine_grid(a, size, align_corners=False)``.
    """
    given = [p for p in (theta, zoom, translation) if p is not None]
    if n is None:
        if not given:
            raise ValueError("affine_matrices needs n when theta, zoom and translation are all None")
        n = given[0].shape[0]
    if device is None and given:
        device = given[0].device
    # few, whole-batch ops: this runs every step, and on small images small-op overhead is a visible share
    if theta is not None:
        th = _as(_check_param("theta", theta, (n,)), dtype, device)
        cos, sin = torch.cos(th), torch.sin(th)
        lin = torch.stack((cos, sin * (-height / width), sin * (width / height), cos), dim=1).view(n, 2, 2)
    else:
        lin = torch.eye(2, dtype=dtype, device=device).expand(n, 2, 2)
    if zoom is not None:
        s = _as(_check_param("zoom", zoom, (n, 2)), dtype, device)
        # A·diag(s_w, s_h) scales column 0 (x) by s_w and column 1 (y) by s_h; zoom is stored [s_h, s_w]
        lin = lin * s.flip(1).unsqueeze(1)
    if translation is not None:
        d = _as(_check_param("translation", translation, (n, 2)), dtype, device)
        # b = −A·t with t = 2·(d_x, d_y): a fraction f of the width spans 2f normalised units
        b = torch.bmm(lin, d.flip(1).unsqueeze(2)).mul_(-2.0)
    else:
        b = torch.zeros(n, 2, 1, dtype=dtype, device=device)
    return torch.cat((lin, b), dim=2)


def affine_grid(a: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid(a, (n, ·, height, width), align_corners=False)``, computed by broadcasting.

    The affine map is separable over rows and columns, so the (n, H, W, 2) grid is one broadcast add of a
    per-row and a per-column term; torch's generic version does a batched (H·W × 3) @ (3 × 2) product, which
    is several times slower on CPU.
    """
    # pixel centres (2j + 1 − W)/W: an exact integer numerator and one rounding, which keeps identity
    # resampling closer to x than torch's linspace(−1, 1)·(W−1)/W (exact for power-of-two sizes either way)
    xs = torch.arange(1 - width, width, 2, dtype=a.dtype, device=a.device).div_(width)
    ys = torch.arange(1 - height, height, 2, dtype=a.dtype, device=a.device).div_(height)
    per_row = ys.view(1, -1, 1) * a[:, :, 1].unsqueeze(1) + a[:, :, 2].unsqueeze(1)  # (n, H, 2)
    per_col = xs.view(1, -1, 1) * a[:, :, 0].unsqueeze(1)  # (n, W, 2)
    return per_row.unsqueeze(2) + per_col.unsqueeze(1)


def _resample(x: torch.Tensor, a: torch.Tensor, padding: str) -> torch.Tensor:
    grid = affine_grid(a, x.shape[-2], x.shape[-1])
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def apply_affine(
    x: torch.Tensor,
    theta: torch.Tensor | None = None,
    zoom: torch.Tensor | None = None,
    translation: torch.Tensor | None = None,
    *,
    resample: str = "fused",
    padding: str = "reflection",
) -> torch.Tensor:
    """Rotate (θ, (B,)), zoom ((B, 2) ``[s_h, s_w]``) and translate ((B, 2) fractions ``[d_y, d_x]``) each sample.

    ``resample="fused"`` composes the three into one bilinear ``affine_grid``/``grid_sample`` pass (one
    interpolation blur, one padding); ``"sequential"`` resamples once per given transform, rotation → zoom →
    translation, as the reference code's stacked Keras layers do (each pass blurs and pads again). Both
    realise the same sampling map, so they differ only by interpolation and by padding at the borders.
    ``padding`` is ``"reflection"`` (Keras' reflect fill), ``"zeros"`` or ``"border"``. None parameters are
    skipped; with all three None, x itself is returned.
    """
    _check_images(x)
    _choice("randomness.augment.resample", resample, RESAMPLES)
    _choice("randomness.augment.padding", padding, PADDINGS)
    b, _, h, w = x.shape
    if theta is None and zoom is None and translation is None:
        return x
    kw = {"n": b, "dtype": x.dtype, "device": x.device}
    if resample == "fused":
        return _resample(x, affine_matrices(theta, zoom, translation, h, w, **kw), padding)
    out = x
    if theta is not None:
        out = _resample(out, affine_matrices(theta, None, None, h, w, **kw), padding)
    if zoom is not None:
        out = _resample(out, affine_matrices(None, zoom, None, h, w, **kw), padding)
    if translation is not None:
        out = _resample(out, affine_matrices(None, None, translation, h, w, **kw), padding)
    return out
