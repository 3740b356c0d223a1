"""Permutation groups of a network: :class:`PermSpec` (which group permutes which tensor axis) and
:class:`GroupElement` (one permutation, plus sign flips where allowed, per group).

The axes-to-group map follows Git Re-Basin (arXiv 2209.04836): every axis of every parameter or buffer
names the group that permutes it, or ``None``. An :class:`AxisRef` adds what a plain name cannot say:
``block``/``repeat`` (a channel acting on a block of H·W flattened columns; a head acting on the three
q/k/v blocks of ``in_proj_weight``), the ``role`` of the slice for the unit (``in``: its own incoming row,
bias or embedding row; ``out``: its outgoing column; ``norm``: affine parameters of a norm layer;
``stat``: running statistics, moved but never scored) and whether a sign flip negates it (``odd``).

Applying a group element only gathers and negates entries, so parameters move exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from dicelab.symmetry.errors import SymmetryError

__all__ = ["AxisRef", "Group", "Tap", "PermSpec", "GroupElement", "unit_rows", "apply_state", "apply_group",
           "apply_tensor", "scale_units",
           "random_group_element", "state_of", "float_keys"]

ROLES = ("in", "out", "norm", "stat")


@dataclass(frozen=True)
class AxisRef:
    """One tensor axis permuted by ``group``: the axis has ``repeat`` × n × ``block`` entries."""

    group: str
    block: int = 1
    repeat: int = 1
    role: str = "in"
    odd: bool = True

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"AxisRef.role must be one of {ROLES}, got {self.role!r}")


@dataclass(frozen=True)
class Group:
    """A permutation group of ``n`` interchangeable units.

    ``classes`` gives a class label per unit (units are interchangeable only within a class; ``None``:
    one class). ``class_blocks``: the classes are equal contiguous blocks that may also be permuted as
    wholes (GroupNorm). ``signs``: exact sign flips are allowed (odd activations). ``affine_signs``: a
    sigmoid-type flip that needs an addition into the next bias (counted only, never applied).
    ``continuous``: dimension of the continuous symmetry not counted (ReLU scaling, GL(d) per head).
    ``norm``: a BatchNorm normalises the group (REPAIR leaves it to ``bn="reset"``).
    """

    name: str
    n: int
    kind: str = "units"
    signs: bool = False
    classes: tuple[int, ...] | None = None
    class_blocks: bool = False
    affine_signs: bool = False
    continuous: int = 0
    norm: bool = False

    def class_members(self) -> list[torch.Tensor]:
        """Unit indices of every class, in order of first appearance."""
        if self.classes is None:
            return [torch.arange(self.n)]
        labels = torch.tensor(self.classes)
        seen: dict[int, None] = dict.fromkeys(self.classes)
        return [torch.nonzero(labels == c).flatten() for c in seen]

    def log10_order(self) -> tuple[float, float]:
        """(log10 of the permutation part, log10 of the sign part) of |group|."""
        perm = sum(math.lgamma(len(m) + 1) for m in self.class_members()) / math.log(10)
        if self.class_blocks:
            perm += math.lgamma(len(self.class_members()) + 1) / math.log(10)
        sign = self.n * math.log10(2) if (self.signs or self.affine_signs) else 0.0
        return perm, sign

    def order(self) -> int:
        """|group| as an exact integer."""
        members = self.class_members()
        value = math.prod(math.factorial(len(m)) for m in members)
        if self.class_blocks:
            value *= math.factorial(len(members))
        if self.signs or self.affine_signs:
            value *= 2 ** self.n
        return value


@dataclass(frozen=True)
class Tap:
    """Where a group's post-activation values can be read: the input of a consuming module."""

    module: str
    group: str
    fdim: int
    block: int = 1


def _ref(value: Any, role: str) -> AxisRef | None:
    if value is None or isinstance(value, AxisRef):
        return value
    if isinstance(value, str):
        return AxisRef(value, role=role)
    if isinstance(value, tuple | list) and value and isinstance(value[0], str):
        name, *rest = value
        return AxisRef(name, *rest) if not rest or isinstance(rest[0], int) else AxisRef(name, role=role)
    raise SymmetryError(f"from_axes: axis entry {value!r} is not a group name, AxisRef or None")


@dataclass
class PermSpec:
    """The permutation groups of a model and the tensor axes each one acts on.

    ``axes`` maps every state-dict key to one entry per tensor axis; ``structure`` maps buffers that fix
    the symmetry-breaking structure (masks, activation coefficients): they define the unit classes and are
    never moved. ``taps`` and ``producers`` serve activation matching and REPAIR.
    """

    groups: tuple[Group, ...]
    axes: dict[str, tuple[AxisRef | None, ...]]
    structure: dict[str, tuple[AxisRef | None, ...]] = field(default_factory=dict)
    taps: tuple[Tap, ...] = field(default=(), compare=False)
    producers: dict[str, str] = field(default_factory=dict, compare=False)
    notes: tuple[str, ...] = field(default=(), compare=False)
    output_producers: tuple[str, ...] = field(default=(), compare=False)

    # -- lookups -------------------------------------------------------------------------------------
    def group(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        raise SymmetryError(f"no permutation group named {name!r} (groups: {', '.join(self.names())})")

    def names(self) -> list[str]:
        return [g.name for g in self.groups]

    def refs(self, name: str, *, roles: Iterable[str] = ROLES) -> list[tuple[str, int, AxisRef]]:
        """Every (key, axis, ref) that ``name`` moves, in key order, restricted to ``roles``."""
        roles = tuple(roles)
        return [(k, a, r) for k, axes in self.axes.items() for a, r in enumerate(axes)
                if r is not None and r.group == name and r.role in roles]

    def structure_refs(self, name: str) -> list[tuple[str, int, AxisRef]]:
        return [(k, a, r) for k, axes in self.structure.items() for a, r in enumerate(axes)
                if r is not None and r.group == name]

    def log10_order(self) -> float:
        return sum(sum(g.log10_order()) for g in self.groups)

    def with_classes(self, classes: Mapping[str, Iterable[int] | None]) -> PermSpec:
        groups = tuple(replace(g, classes=tuple(int(c) for c in classes[g.name]) if classes.get(g.name) is not None
                               else None) if g.name in classes else g for g in self.groups)
        return replace(self, groups=groups)

    def without_classes(self) -> PermSpec:
        """The dense group (every unit of a layer interchangeable), e.g. to move weights off a mask."""
        return replace(self, groups=tuple(replace(g, classes=None, class_blocks=False) for g in self.groups))

    def to_dict(self) -> dict[str, Any]:
        return {"groups": [{"name": g.name, "n": g.n, "kind": g.kind, "signs": g.signs,
                            "classes": list(g.classes) if g.classes is not None else None,
                            "class_blocks": g.class_blocks, "affine_signs": g.affine_signs,
                            "continuous": g.continuous, "norm": g.norm} for g in self.groups],
                "axes": {k: [None if r is None else r.__dict__ for r in v] for k, v in self.axes.items()},
                "structure": {k: [None if r is None else r.__dict__ for r in v] for k, v in self.structure.items()},
                "notes": list(self.notes)}

    def check_state(self, state: Mapping[str, torch.Tensor], source: str = "model") -> None:
        """Raise a one-line error if ``state`` lacks a key of the spec or an axis has the wrong size."""
        sizes = {g.name: g.n for g in self.groups}
        for table in (self.axes, self.structure):
            for key, axes in table.items():
                if key not in state:
                    raise SymmetryError(f"{source}: missing tensor {key!r} named by the permutation spec")
                t = state[key]
                if t.dim() != len(axes):
                    raise SymmetryError(f"{source}: {key!r} has {t.dim()} axes, the spec names {len(axes)}")
                for a, r in enumerate(axes):
                    if r is not None and t.shape[a] != r.repeat * sizes[r.group] * r.block:
                        raise SymmetryError(f"{source}: {key!r} axis {a} has size {t.shape[a]}, group {r.group!r} "
                                            f"needs {r.repeat}×{sizes[r.group]}×{r.block}")

    # -- constructors ---------------------------------------------------------------------------------
    @classmethod
    def from_module(cls, model: nn.Module, example_input: Any = None, *, affine_odd: bool = False) -> PermSpec:
        """Trace ``model`` with ``torch.fx`` and derive its groups (see :mod:`dicelab.symmetry.trace`)."""
        from dicelab.symmetry.trace import spec_from_module

        return spec_from_module(model, example_input, affine_odd=affine_odd)

    @classmethod
    def from_axes(cls, axes: Mapping[str, Iterable[Any]], classes: Mapping[str, Iterable[int]] | None = None,
                  signs: Iterable[str] = (), *, sizes: Mapping[str, int] | None = None,
                  model: nn.Module | Mapping[str, torch.Tensor] | None = None) -> PermSpec:
        """A spec from a Git Re-Basin style map ``{key: (group or None, ...)}``.

        Entries may be group names, ``AxisRef`` or ``(name, block, repeat)``. Group sizes come from
        ``sizes`` or from the tensor shapes of ``model``. Without an explicit ``AxisRef``, axis 0 of a
        tensor is the unit's own (``in``) side and later axes its outgoing (``out``) side.
        """
        state = state_of(model) if model is not None else None
        table: dict[str, tuple[AxisRef | None, ...]] = {}
        order: list[str] = []
        found: dict[str, int] = dict(sizes or {})
        for key, entry in axes.items():
            refs = tuple(_ref(v, "in" if a == 0 else "out") for a, v in enumerate(entry))
            table[key] = refs
            for a, r in enumerate(refs):
                if r is None:
                    continue
                if r.group not in order:
                    order.append(r.group)
                if state is not None and key in state:
                    n = state[key].shape[a] // (r.block * r.repeat)
                    if found.setdefault(r.group, n) != n:
                        raise SymmetryError(f"from_axes: {key!r} axis {a} gives group {r.group!r} size {n}, "
                                            f"elsewhere {found[r.group]}")
        missing = [g for g in order if g not in found]
        if missing:
            raise SymmetryError(f"from_axes: size of group {missing[0]!r} unknown; pass sizes= or model=")
        signs = set(signs)
        cls_map = dict(classes or {})
        groups = tuple(Group(g, found[g], signs=g in signs,
                             classes=tuple(int(c) for c in cls_map[g]) if g in cls_map else None) for g in order)
        spec = cls(groups, table)
        if state is not None:
            spec.check_state(state)
        return spec

    @classmethod
    def mlp(cls, widths: Iterable[int], activation: str = "relu") -> PermSpec:
        """dicelab's :class:`~dicelab.models.MLP` (``fc1, …, head``) with all widths ``[in, h1, …, out]``."""
        widths = [int(w) for w in widths]
        if len(widths) < 2:
            raise SymmetryError("PermSpec.mlp needs at least [in, out] widths")
        odd = activation in _ODD_NAMES
        homogeneous = activation in ("relu", "leaky_relu")
        groups, axes = [], {}
        prev: str | None = None
        for i, w in enumerate(widths[1:-1], start=1):
            name = f"fc{i}"
            groups.append(Group(name, w, "units", signs=odd, continuous=w if homogeneous else 0))
            axes[f"{name}.weight"] = (AxisRef(name), AxisRef(prev, role="out") if prev else None)
            axes[f"{name}.bias"] = (AxisRef(name),)
            prev = name
        axes["head.weight"] = (None, AxisRef(prev, role="out") if prev else None)
        axes["head.bias"] = (None,)
        producers = {g.name: g.name for g in groups}
        taps = tuple(Tap(f"fc{i + 1}" if i < len(groups) else "head", g.name, 1) for i, g in enumerate(groups, 1))
        return cls(tuple(groups), axes, taps=taps, producers=producers, output_producers=("head",))

    @classmethod
    def vgg3(cls, input_shape: Iterable[int] = (1, 8, 8), widths: Iterable[int] = (32, 64, 128), dense: int = 128,
             num_classes: int = 10, batchnorm: bool = True, activation: str = "relu") -> PermSpec:
        """dicelab's :class:`~dicelab.models.VGG3` (conv → activation → BatchNorm, 2×2 pool per block)."""
        c, h, w = (int(s) for s in input_shape)
        groups, axes = [], {}
        prev: str | None = None
        odd = activation in _ODD_NAMES and not batchnorm
        for b, width in enumerate(widths, start=1):
            for j in (1, 2):
                name = f"block{b}.conv{j}"
                groups.append(Group(name, int(width), "channels", signs=odd, norm=batchnorm))
                axes[f"{name}.weight"] = (AxisRef(name), AxisRef(prev, role="out") if prev else None, None, None)
                axes[f"{name}.bias"] = (AxisRef(name),)
                if batchnorm:
                    bn = f"block{b}.bn{j}"
                    axes[f"{bn}.weight"] = (AxisRef(name, role="norm", odd=False),)
                    axes[f"{bn}.bias"] = (AxisRef(name, role="norm"),)
                    axes[f"{bn}.running_mean"] = (AxisRef(name, role="stat"),)
                    axes[f"{bn}.running_var"] = (AxisRef(name, role="stat", odd=False),)
                    axes[f"{bn}.num_batches_tracked"] = ()
                prev = name
            h, w = h // 2, w // 2
        groups.append(Group("fc1", int(dense), "units", signs=odd, norm=batchnorm))
        axes["fc1.weight"] = (AxisRef("fc1"), AxisRef(prev, block=h * w, role="out"))
        axes["fc1.bias"] = (AxisRef("fc1"),)
        if batchnorm:
            axes["bn_fc.weight"] = (AxisRef("fc1", role="norm", odd=False),)
            axes["bn_fc.bias"] = (AxisRef("fc1", role="norm"),)
            axes["bn_fc.running_mean"] = (AxisRef("fc1", role="stat"),)
            axes["bn_fc.running_var"] = (AxisRef("fc1", role="stat", odd=False),)
            axes["bn_fc.num_batches_tracked"] = ()
        axes["head.weight"] = (None, AxisRef("fc1", role="out"))
        axes["head.bias"] = (None,)
        return cls(tuple(groups), axes)

    @classmethod
    def resnet20(cls, width: int = 1, num_classes: int = 10) -> PermSpec:
        """CIFAR ResNet-20 (16/32/64 channels × ``width``, 3 stages × 3 basic blocks, 1×1 projection
        shortcuts at stage changes): one group per residual stage, one per block-inner conv.
        Keys follow the usual ``conv1, bn1, layer{s}.{b}.conv{1,2}/bn{1,2}/shortcut.{0,1}, fc`` names."""
        groups, axes = [], {}
        chans = [16 * width, 32 * width, 64 * width]

        def conv(key: str, out: str | None, inp: str | None) -> None:
            axes[f"{key}.weight"] = (AxisRef(out) if out else None, AxisRef(inp, role="out") if inp else None,
                                     None, None)

        def bn(key: str, g: str) -> None:
            axes[f"{key}.weight"] = (AxisRef(g, role="norm", odd=False),)
            axes[f"{key}.bias"] = (AxisRef(g, role="norm"),)
            axes[f"{key}.running_mean"] = (AxisRef(g, role="stat"),)
            axes[f"{key}.running_var"] = (AxisRef(g, role="stat", odd=False),)
            axes[f"{key}.num_batches_tracked"] = ()

        prev_stream: str | None = None
        for s, c in enumerate(chans, start=1):
            stream = f"residual{s}"
            groups.append(Group(stream, c, "residual", norm=True))
            if s == 1:
                conv("conv1", stream, None)
                bn("bn1", stream)
            for b in range(3):
                inner = f"layer{s}.{b}.conv1"
                groups.append(Group(inner, c, "channels", continuous=c, norm=True))
                source = prev_stream if (b == 0 and s > 1) else stream
                conv(f"layer{s}.{b}.conv1", inner, source)
                bn(f"layer{s}.{b}.bn1", inner)
                conv(f"layer{s}.{b}.conv2", stream, inner)
                bn(f"layer{s}.{b}.bn2", stream)
                if b == 0 and s > 1:
                    conv(f"layer{s}.0.shortcut.0", stream, prev_stream)
                    bn(f"layer{s}.0.shortcut.1", stream)
            prev_stream = stream
        axes["fc.weight"] = (None, AxisRef(prev_stream, role="out"))
        axes["fc.bias"] = (None,)
        return cls(tuple(groups), axes)

    @classmethod
    def transformer(cls, d_model: int, n_layers: int, n_heads: int, d_ff: int) -> PermSpec:
        """A pre/post-norm transformer encoder with ``nn.TransformerEncoderLayer`` key names
        (``layers.{i}.self_attn…``) between an ``embed`` and a ``head``: d_model! once (residual stream),
        h! and d_ff! per layer; GL(d_k), GL(d_v) per head are continuous (reported, not counted)."""
        if d_model % n_heads:
            raise SymmetryError(f"transformer: d_model={d_model} is not divisible by heads={n_heads}")
        d = d_model // n_heads
        res = "residual"
        groups = [Group(res, d_model, "residual")]
        axes: dict[str, tuple[AxisRef | None, ...]] = {"embed.weight": (None, AxisRef(res))}
        for i in range(n_layers):
            p = f"layers.{i}"
            heads, ff = f"{p}.self_attn.heads", f"{p}.linear1"
            groups += [Group(heads, n_heads, "heads", continuous=2 * n_heads * d * d),
                       Group(ff, d_ff, "units")]
            axes[f"{p}.self_attn.in_proj_weight"] = (AxisRef(heads, block=d, repeat=3, odd=False),
                                                     AxisRef(res, role="out"))
            axes[f"{p}.self_attn.in_proj_bias"] = (AxisRef(heads, block=d, repeat=3, odd=False),)
            axes[f"{p}.self_attn.out_proj.weight"] = (AxisRef(res), AxisRef(heads, block=d, role="out", odd=False))
            axes[f"{p}.self_attn.out_proj.bias"] = (AxisRef(res),)
            axes[f"{p}.linear1.weight"] = (AxisRef(ff), AxisRef(res, role="out"))
            axes[f"{p}.linear1.bias"] = (AxisRef(ff),)
            axes[f"{p}.linear2.weight"] = (AxisRef(res), AxisRef(ff, role="out"))
            axes[f"{p}.linear2.bias"] = (AxisRef(res),)
            for nm in ("norm1", "norm2"):
                axes[f"{p}.{nm}.weight"] = (AxisRef(res, role="norm", odd=False),)
                axes[f"{p}.{nm}.bias"] = (AxisRef(res, role="norm"),)
        axes["head.weight"] = (None, AxisRef(res, role="out"))
        return cls(tuple(groups), axes)


_ODD_NAMES = ("tanh", "identity", "sin", "softsign", "hardtanh", "tanhshrink")


# -- tensors of a unit -------------------------------------------------------------------------------
def unit_rows(t: torch.Tensor, axis: int, ref: AxisRef, n: int) -> torch.Tensor:
    """``t`` reshaped to (n, rest): row j holds every entry that unit j of ``ref.group`` owns on ``axis``."""
    moved = t.movedim(axis, 0)
    rest = moved.shape[1:]
    v = moved.reshape(ref.repeat, n, ref.block, *rest).movedim(1, 0)
    return v.reshape(n, -1)


def _index(ref: AxisRef, perm: torch.Tensor, n: int) -> torch.Tensor:
    if ref.block == 1 and ref.repeat == 1:
        return perm
    r = torch.arange(ref.repeat).view(-1, 1, 1) * (n * ref.block)
    b = torch.arange(ref.block).view(1, 1, -1)
    return (r + perm.view(1, -1, 1) * ref.block + b).reshape(-1)


def _expand_signs(ref: AxisRef, signs: torch.Tensor) -> torch.Tensor:
    return signs.view(1, -1, 1).expand(ref.repeat, -1, ref.block).reshape(-1)


@dataclass
class GroupElement:
    """Per group a permutation (int64; new unit i is old unit ``perm[i]``) and, for groups with signs,
    a ±1 vector (new unit i is negated when ``signs[i] = -1``)."""

    perms: dict[str, torch.Tensor]
    signs: dict[str, torch.Tensor | None] = field(default_factory=dict)

    @classmethod
    def identity(cls, spec: PermSpec) -> GroupElement:
        return cls({g.name: torch.arange(g.n) for g in spec.groups},
                   {g.name: torch.ones(g.n) if g.signs else None for g in spec.groups})

    def sign(self, name: str) -> torch.Tensor | None:
        return self.signs.get(name)

    def compose(self, other: GroupElement) -> GroupElement:
        """``self`` after ``other``: applying the result equals applying ``other`` then ``self``."""
        perms, signs = {}, {}
        for name in set(self.perms) | set(other.perms):
            p2 = self.perms.get(name)
            p1 = other.perms.get(name)
            s2, s1 = self.signs.get(name), other.signs.get(name)
            if p2 is None:
                perms[name], signs[name] = p1, s1
                continue
            if p1 is None:
                perms[name], signs[name] = p2, s2
                continue
            perms[name] = p1[p2]
            if s1 is None and s2 is None:
                signs[name] = None
            else:
                s1v = s1[p2] if s1 is not None else torch.ones(len(p2))
                signs[name] = s1v * (s2 if s2 is not None else 1.0)
        return GroupElement(perms, signs)

    def inverse(self) -> GroupElement:
        perms, signs = {}, {}
        for name, p in self.perms.items():
            inv = torch.argsort(p)
            perms[name] = inv
            s = self.signs.get(name)
            signs[name] = s[inv] if s is not None else None
        return GroupElement(perms, signs)

    def is_identity(self) -> bool:
        return all(torch.equal(p, torch.arange(len(p))) for p in self.perms.values()) and all(
            s is None or bool((s > 0).all()) for s in self.signs.values())

    def to_dict(self) -> dict[str, Any]:
        return {name: {"perm": p.tolist(), "signs": None if self.signs.get(name) is None
                       else [int(v) for v in self.signs[name].tolist()]} for name, p in self.perms.items()}


def state_of(model: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return dict(model.state_dict()) if isinstance(model, nn.Module) else dict(model)


def float_keys(spec: PermSpec, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Floating-point tensors that are not fixed structure, in state order."""
    return [k for k, t in state.items() if t.is_floating_point() and k not in spec.structure]


def apply_tensor(t: torch.Tensor, axes: tuple[AxisRef | None, ...], g: GroupElement, sizes: Mapping[str, int],
                 skip: str | None = None) -> torch.Tensor:
    """``g`` acting on one tensor whose axes are ``axes`` (groups absent from ``g`` or equal to ``skip``
    are left alone)."""
    for axis, ref in enumerate(axes):
        if ref is None or ref.group == skip or ref.group not in g.perms:
            continue
        n = sizes[ref.group]
        t = t.index_select(axis, _index(ref, g.perms[ref.group].to(t.device), n))
        s = g.signs.get(ref.group)
        if s is not None and ref.odd and t.is_floating_point():
            shape = [1] * t.dim()
            shape[axis] = -1
            t = t * _expand_signs(ref, s).to(t).view(shape)
    return t


def scale_units(t: torch.Tensor, axis: int, ref: AxisRef, factor: torch.Tensor) -> torch.Tensor:
    """``t`` with unit j's entries on ``axis`` multiplied by ``factor[j]``."""
    shape = [1] * t.dim()
    shape[axis] = -1
    return t * _expand_signs(ref, factor).to(t).view(shape)


def apply_state(state: Mapping[str, torch.Tensor], g: GroupElement, spec: PermSpec) -> dict[str, torch.Tensor]:
    """``g`` acting on a state dict (a new dict; untouched tensors are shared, not copied)."""
    sizes = {gr.name: gr.n for gr in spec.groups}
    out = dict(state)
    for key, axes in spec.axes.items():
        if key in state and any(r is not None and r.group in g.perms for r in axes):
            out[key] = apply_tensor(state[key], axes, g, sizes)
    return out


def apply_group(model: nn.Module, g: GroupElement, spec: PermSpec | None = None) -> nn.Module:
    """A copy of ``model`` with ``g`` applied to its parameters and buffers (the function is unchanged)."""
    import copy

    spec = spec if spec is not None else PermSpec.from_module(model)
    new = copy.deepcopy(model)
    new.load_state_dict(apply_state(model.state_dict(), g, spec))
    return new


def random_group_element(spec: PermSpec, generator: torch.Generator | None = None) -> GroupElement:
    """A uniformly random element: a permutation within each class (whole classes too where
    ``class_blocks``) and uniform signs where the group allows them; draws from ``generator``
    (default: ``symmetry.group`` under root seed 0)."""
    if generator is None:
        from dicelab.seeding import generator as make

        generator = make(0, "symmetry.group")
    perms, signs = {}, {}
    for g in spec.groups:
        perm = torch.arange(g.n)
        members = g.class_members()
        targets = members
        if g.class_blocks:
            order = torch.randperm(len(members), generator=generator)
            targets = [members[i] for i in order.tolist()]
        for pos, src in zip(members, targets, strict=True):
            perm[pos] = src[torch.randperm(len(src), generator=generator)]
        perms[g.name] = perm
        signs[g.name] = (torch.randint(0, 2, (g.n,), generator=generator) * 2 - 1).to(torch.float64) if g.signs else None
    return GroupElement(perms, signs)
