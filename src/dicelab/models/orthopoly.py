"""Per-unit orthogonal-polynomial activations (spec 06 §6.2): φ_j(z) = Σ_{k=1..K} c_{jk} P_k(tanh z).

Each unit has its own coefficient vector, held in a *buffer*: a permutation of the weights cannot carry
it along, so units with different coefficients are not interchangeable. Polynomials by recurrence:
Chebyshev T_{k+1} = 2xT_k − T_{k−1}; Legendre (k+1)P_{k+1} = (2k+1)xP_k − kP_{k−1}; probabilists'
Hermite He_{k+1} = xHe_k − kHe_{k−1}, divided by √(k!). Chebyshev and Legendre stay within ±1 on [−1, 1].

``coeffs="unique_random"``: c_j ~ N(0, I_K) normalised to unit norm, pairwise distinct (drawn from the
``model.orthopoly`` stream of a structure seed). ``"degree_per_unit"``: φ_j = P_{1+(j mod K)}.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from dicelab.errors import ConfigError
from dicelab.models.mlp import mlp_sites

__all__ = ["OrthoPolyActivation", "OrthoPolyMLP", "orthopoly_mlp_factory", "FAMILIES", "poly_basis"]

FAMILIES = ("chebyshev", "legendre", "hermite")
COEFFS = ("unique_random", "degree_per_unit")


def poly_basis(x: torch.Tensor, K: int, family: str) -> list[torch.Tensor]:
    """[P_1(x), …, P_K(x)] of ``family``."""
    prev, cur = torch.ones_like(x), x
    out = [cur]
    for k in range(1, K):
        if family == "chebyshev":
            nxt = 2 * x * cur - prev
        elif family == "legendre":
            nxt = ((2 * k + 1) * x * cur - k * prev) / (k + 1)
        else:  # probabilists' Hermite, unnormalised here
            nxt = x * cur - k * prev
        prev, cur = cur, nxt
        out.append(cur)
    if family == "hermite":
        out = [p / math.sqrt(math.factorial(k)) for k, p in enumerate(out, start=1)]
    return out


class OrthoPolyActivation(nn.Module):
    """Unit j applies its own polynomial Σ_k c_{jk} P_k(squash(z_j)); the feature axis is dim 1."""

    def __init__(self, width: int, K: int = 4, family: str = "chebyshev", squash: str = "tanh",
                 coeffs: str = "unique_random", learnable: bool = False, *, generator: torch.Generator | None = None,
                 structure_seed: int = 0) -> None:
        super().__init__()
        if family not in FAMILIES:
            raise ConfigError(f"model.options.family: {family!r} is not one of {', '.join(FAMILIES)}")
        if squash not in ("tanh", "none"):
            raise ConfigError(f"model.options.squash: {squash!r} is not 'tanh' or 'none'")
        if squash == "none" and family != "hermite":
            raise ConfigError("model.options.squash: 'none' is allowed for the hermite family only")
        if coeffs not in COEFFS:
            raise ConfigError(f"model.options.coeffs: {coeffs!r} is not one of {', '.join(COEFFS)}")
        if K < 1:
            raise ConfigError(f"model.options.K: {K} must be >= 1")
        self.width, self.K, self.family, self.squash, self.mode = int(width), int(K), family, squash, coeffs
        if coeffs == "degree_per_unit":
            c = torch.zeros(width, K)
            c[torch.arange(width), torch.arange(width) % K] = 1.0
        else:
            if generator is None:
                from dicelab.seeding import generator as make

                generator = make(int(structure_seed), "model.orthopoly")
            c = self._unique_random(width, K, generator)
        self.learnable = bool(learnable)
        if self.learnable:
            self.coeffs = nn.Parameter(c)
        else:
            self.register_buffer("coeffs", c)

    @staticmethod
    def _unique_random(width: int, K: int, generator: torch.Generator) -> torch.Tensor:
        c = torch.randn(width, K, generator=generator)
        c = c / c.norm(dim=1, keepdim=True)
        for _ in range(100):  # exact duplicates have probability 0 for K > 1; K = 1 leaves only ±1
            dup = [j for j in range(width) if any(torch.equal(c[j], c[i]) for i in range(j))]
            if not dup or K == 1:
                break
            fresh = torch.randn(len(dup), K, generator=generator)
            c[dup] = fresh / fresh.norm(dim=1, keepdim=True)
        return c

    def odd_units(self) -> torch.Tensor:
        """Units whose polynomial is odd (no even degree): a sign flip of such a unit is exact."""
        even = self.coeffs.detach()[:, 1::2]  # degrees 2, 4, ...
        return (even == 0).all(dim=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(z) if self.squash == "tanh" else z.clamp(-4.0, 4.0)
        shape = [1, self.width] + [1] * (z.dim() - 2)
        out = None
        for k, p in enumerate(poly_basis(x, self.K, self.family)):
            term = self.coeffs[:, k].view(shape) * p
            out = term if out is None else out + term
        return out

    def extra_repr(self) -> str:
        return f"width={self.width}, K={self.K}, family={self.family}, coeffs={self.mode}, learnable={self.learnable}"


class OrthoPolyMLP(nn.Sequential):
    """An MLP (``flatten, fc1, act1, …, head``) whose activations are :class:`OrthoPolyActivation`."""

    def __init__(self, in_features: int, widths: Sequence[int], num_classes: int, *, K: int = 4,
                 family: str = "chebyshev", squash: str = "tanh", coeffs: str = "unique_random",
                 learnable: bool = False, structure_seed: int = 0) -> None:
        from dicelab.seeding import generator as make

        gen = make(int(structure_seed), "model.orthopoly")
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        prev = in_features
        for i, w in enumerate(widths, start=1):
            layers[f"fc{i}"] = nn.Linear(prev, w)
            layers[f"act{i}"] = OrthoPolyActivation(w, K, family, squash, coeffs, learnable, generator=gen)
            prev = w
        layers["head"] = nn.Linear(prev, num_classes)
        super().__init__(layers)
        self.widths = tuple(widths)

    def sites(self) -> dict[str, list[str]]:
        return mlp_sites(len(self.widths))


def orthopoly_mlp_factory(input_shape, num_classes, widths=(128, 128), activation="relu", K=4, family="chebyshev",
                          squash="tanh", coeffs="unique_random", learnable=False, structure_seed=0,
                          **unused) -> OrthoPolyMLP:
    """``model.name = "orthopoly_mlp"``; options ``K``, ``family``, ``squash``, ``coeffs``, ``learnable``,
    ``structure_seed``. ``model.activation`` is not used: the per-unit polynomials are the activation."""
    if unused:
        raise ConfigError(f"model.{next(iter(unused))}: not an option of model 'orthopoly_mlp'")
    return OrthoPolyMLP(math.prod(input_shape), widths, num_classes, K=int(K), family=family, squash=squash,
                        coeffs=coeffs, learnable=bool(learnable), structure_seed=int(structure_seed))
