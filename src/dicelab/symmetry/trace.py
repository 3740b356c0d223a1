"""``PermSpec.from_module``: derive the permutation groups of a model from its ``torch.fx`` graph.

Every tensor in the graph carries a *feature label* (the group that permutes its feature axis, or none
for the input and anything tied to it). A Linear/Conv/Embedding creates a new label for its outputs;
elementwise activations, norms, dropout, pooling and flattening pass a label on (flattening a conv output
turns a channel into a block of H·W columns); ``+`` between two labelled tensors ties them into one group
(residual streams, union-find); the model output is never permuted. Parameters are recorded axis by axis
as they are met. Anything that holds parameters or mixes features in a way not listed raises
:class:`UnsupportedModuleError` with the module's name.
"""

from __future__ import annotations

import math
import operator
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from dicelab.symmetry.errors import SymmetryError, SymmetryWarning, UnsupportedModuleError
from dicelab.symmetry.spec import AxisRef, Group, PermSpec, Tap, unit_rows

__all__ = ["spec_from_module"]

_HINT = "build the spec with PermSpec.from_axes(...)"

# elementwise nonlinearities: "odd" (f(-x) = -f(x)), "relu" (positively homogeneous), "sigmoid" (σ(-x) = 1-σ(x)),
# "even"/"other" (neither)
_ACT_MODULES: dict[type, str] = {
    nn.ReLU: "relu", nn.LeakyReLU: "relu", nn.Tanh: "odd", nn.Softsign: "odd", nn.Tanhshrink: "odd",
    nn.Softshrink: "odd", nn.Hardshrink: "odd", nn.Identity: "linear", nn.Dropout: "linear", nn.Dropout1d: "linear",
    nn.Dropout2d: "linear", nn.Dropout3d: "linear", nn.AlphaDropout: "other", nn.Sigmoid: "sigmoid",
    nn.GELU: "other", nn.SiLU: "other", nn.ELU: "other", nn.CELU: "other", nn.SELU: "other", nn.Softplus: "other",
    nn.Mish: "other", nn.ReLU6: "other", nn.Hardswish: "other", nn.Hardsigmoid: "other", nn.LogSigmoid: "other",
}
_ACT_FUNCS: dict[Any, str] = {
    torch.relu: "relu", F.relu: "relu", F.leaky_relu: "relu", torch.tanh: "odd", F.tanh: "odd", torch.sin: "odd",
    F.softsign: "odd", F.tanhshrink: "odd", F.hardtanh: "odd", F.dropout: "linear", torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid", F.gelu: "other", F.silu: "other", F.elu: "other", F.selu: "other", F.celu: "other",
    F.softplus: "other", F.mish: "other", F.relu6: "other", torch.exp: "other", torch.abs: "other",
    torch.cos: "other", operator.neg: "linear", torch.neg: "linear",
}
_ACT_METHODS = {"relu": "relu", "tanh": "odd", "sigmoid": "sigmoid", "sin": "odd", "exp": "other", "abs": "other",
                "neg": "linear", "contiguous": "linear", "float": "linear", "double": "linear", "clone": "linear",
                "detach": "linear", "to": "linear"}
_POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                 nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                 nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_POOL_FUNCS = {F.max_pool1d: "max", F.max_pool2d: "max", F.max_pool3d: "max", F.avg_pool1d: "linear",
               F.avg_pool2d: "linear", F.avg_pool3d: "linear", F.adaptive_avg_pool1d: "linear",
               F.adaptive_avg_pool2d: "linear", F.adaptive_max_pool2d: "max"}
_NORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_SOFTMAX = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax}
_ADD = {operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub}
_MUL = {operator.mul, operator.imul, torch.mul, operator.truediv, torch.div}
_FLATTEN = {torch.flatten}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze"}


@dataclass
class _Label:
    id: int
    size: int
    kind: str
    producers: list[str]
    odd: bool = True               # every function applied so far is odd
    odd_affine: bool = True        # ... treating sigmoid-type functions as odd
    saw_sigmoid: bool = False
    relu: bool = False             # a positively homogeneous activation was applied
    nonlinear_other: bool = False  # any other nonlinearity or a norm
    bn: bool = False
    no_signs: bool = False
    gn_groups: int | None = None
    continuous: int = 0
    consumers_have_bias: bool = True
    merged: bool = False
    fixed: bool = False


@dataclass(frozen=True)
class _V:
    """A tensor's feature label (``None``: fixed), the index of its feature axis, the flatten block."""

    label: int | None
    fdim: int
    block: int = 1


@dataclass(frozen=True)
class _Param:
    key: str
    shape: tuple[int, ...]


@dataclass
class _State:
    model: nn.Module
    labels: dict[int, _Label] = field(default_factory=dict)
    parent: dict[int, int] = field(default_factory=dict)
    records: list[tuple[str, str, int, int, int, int, str, bool]] = field(default_factory=list)
    taps: list[tuple[str, int, int, int]] = field(default_factory=list)
    producers: dict[int, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def new(self, size: int, kind: str, producer: str) -> int:
        i = len(self.labels)
        self.labels[i] = _Label(i, int(size), kind, [producer])
        self.parent[i] = i
        return i

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def lab(self, i: int) -> _Label:
        return self.labels[self.find(i)]

    def union(self, a: int | None, b: int | None, where: str) -> int | None:
        if a is None or b is None:
            for x in (a, b):
                if x is not None:
                    self.lab(x).fixed = True
            return None
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        la, lb = self.labels[ra], self.labels[rb]
        if la.size != lb.size:
            raise UnsupportedModuleError(f"symmetry: operation in {where} adds features of sizes {la.size} and "
                                         f"{lb.size}; {_HINT}")
        lo, hi = (la, lb) if ra < rb else (lb, la)
        self.parent[hi.id] = lo.id
        lo.producers += [p for p in hi.producers if p not in lo.producers]
        for flag in ("odd", "odd_affine", "consumers_have_bias"):
            setattr(lo, flag, getattr(lo, flag) and getattr(hi, flag))
        for flag in ("saw_sigmoid", "relu", "nonlinear_other", "bn", "no_signs", "fixed"):
            setattr(lo, flag, getattr(lo, flag) or getattr(hi, flag))
        lo.continuous += hi.continuous
        lo.gn_groups = lo.gn_groups or hi.gn_groups
        lo.merged = True
        lo.kind = "residual"
        return lo.id

    def record(self, key: str, axis: int, v: _V | None, role: str, odd: bool = True, *, table: str = "axes",
               repeat: int = 1, block: int | None = None, label: int | None = None) -> None:
        lid = label if label is not None else (v.label if v is not None else None)
        if lid is None:
            return
        blk = block if block is not None else (v.block if v is not None else 1)
        self.records.append((table, key, axis, lid, blk, repeat, role, odd))

    def apply_fn(self, v: _V, kind: str) -> None:
        if v.label is None:
            return
        lab = self.lab(v.label)
        if kind in ("odd", "linear"):
            return
        lab.odd = False
        if kind == "sigmoid":
            lab.saw_sigmoid = True
            lab.nonlinear_other = True
            return
        lab.odd_affine = False
        if kind == "relu":
            lab.relu = True
        else:
            lab.nonlinear_other = True


def _unsupported(name: str, what: str) -> UnsupportedModuleError:
    return UnsupportedModuleError(f"symmetry: module '{name}' ({what}) is not supported; {_HINT}")


def _module_name_of(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    if stack:
        path = list(stack.values())[-1]
        name = path[0] if isinstance(path, tuple) else str(path)
        return name or "<root>"
    return "<root>"


def _shape(node: Any) -> tuple[int, ...] | None:
    if not isinstance(node, fx.Node):
        return None
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _example_for(model: nn.Module) -> torch.Tensor:
    for m in model.modules():
        p = next(m.parameters(recurse=False), None)
        if isinstance(m, nn.Linear):
            return torch.zeros(2, m.in_features, dtype=p.dtype if p is not None else torch.float32)
        if isinstance(m, nn.Embedding):
            return torch.zeros(2, 4, dtype=torch.long)
        if isinstance(m, nn.MultiheadAttention):
            return torch.zeros(2, 3, m.embed_dim) if m.batch_first else torch.zeros(3, 2, m.embed_dim)
        if p is not None and not isinstance(m, nn.Sequential):
            raise SymmetryError(f"PermSpec.from_module: the model starts with {type(m).__name__}; "
                                "pass example_input= (one input batch) so shapes can be traced")
    raise SymmetryError("PermSpec.from_module: the model has no parameters")


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        from dicelab.models.orthopoly import OrthoPolyActivation
        from dicelab.models.prepruned import FrozenMaskConv2d, FrozenMaskLinear

        if isinstance(m, FrozenMaskLinear | FrozenMaskConv2d | OrthoPolyActivation):
            return True
        return super().is_leaf_module(m, qualname)


def spec_from_module(model: nn.Module, example_input: Any = None, *, affine_odd: bool = False) -> PermSpec:
    """See :meth:`PermSpec.from_module`."""
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # data-dependent control flow, unsupported Python
        raise UnsupportedModuleError(f"symmetry: module '<root>' ({type(model).__name__}) could not be traced by "
                                     f"torch.fx ({type(exc).__name__}); {_HINT}") from None
    gm = fx.GraphModule(model, graph)
    example = example_input if example_input is not None else _example_for(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*(example if isinstance(example, tuple) else (example,)))
    except Exception as exc:
        raise SymmetryError(f"PermSpec.from_module: the example input does not run through the model "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    finally:
        model.train(was_training)
    st = _State(model)
    info: dict[fx.Node, Any] = {}
    modules = dict(model.named_modules())
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            info[node] = _V(None, 1)
        elif node.op == "get_attr":
            t = _get_attr(model, node.target)
            info[node] = _Param(node.target, tuple(t.shape)) if isinstance(t, torch.Tensor) else None
        elif node.op == "call_module":
            info[node] = _call_module(st, node, modules[node.target], info)
        elif node.op == "call_function":
            info[node] = _call_function(st, node, info)
        elif node.op == "call_method":
            info[node] = _call_method(st, node, info)
        elif node.op == "output":
            for v in _flat_values(node.args, info):
                if isinstance(v, _V) and v.label is not None:
                    st.lab(v.label).fixed = True
    return _resolve(st, model, affine_odd)


def _get_attr(model: nn.Module, target: str) -> Any:
    obj: Any = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _flat_values(args: Any, info: dict) -> list[Any]:
    out = []
    if isinstance(args, fx.Node):
        v = info.get(args)
        if isinstance(v, tuple):
            out += [x for x in v if x is not None]
        elif v is not None:
            out.append(v)
    elif isinstance(args, list | tuple):
        for a in args:
            out += _flat_values(a, info)
    elif isinstance(args, dict):
        for a in args.values():
            out += _flat_values(a, info)
    return out


def _tensor_in(node: fx.Node, info: dict, name: str) -> _V:
    arg = node.args[0] if node.args else next(iter(node.kwargs.values()))
    v = info.get(arg) if isinstance(arg, fx.Node) else None
    if isinstance(v, _Param):
        raise _unsupported(name, f"parameter {v.key!r} used as input")
    if not isinstance(v, _V):
        raise _unsupported(name, "non-tensor input")
    return v


def _consume(st: _State, name: str, v: _V, shape: tuple[int, ...] | None, want_fdim: str) -> None:
    """Check that a linear-type module reads its input's feature axis; register a tap."""
    if v.label is None:
        return
    nd = len(shape) if shape is not None else None
    ok = (nd is not None and v.fdim == nd - 1) if want_fdim == "last" else v.fdim == 1
    if not ok:
        raise _unsupported(name, "reads a tensor whose permuted axis is not its feature axis")
    st.taps.append((name, v.label, v.fdim, v.block))


def _call_module(st: _State, node: fx.Node, mod: nn.Module, info: dict) -> Any:
    from dicelab.models.orthopoly import OrthoPolyActivation
    from dicelab.models.prepruned import FrozenMaskConv2d, FrozenMaskLinear

    name = node.target
    tname = type(mod).__name__
    if isinstance(mod, nn.Linear):
        v = _tensor_in(node, info, name)
        _consume(st, name, v, _shape(node.args[0]), "last")
        out = st.new(mod.out_features, "units", name)
        st.record(f"{name}.weight", 0, None, "in", label=out, block=1)
        st.record(f"{name}.weight", 1, v, "out")
        if mod.bias is not None:
            st.record(f"{name}.bias", 0, None, "in", label=out, block=1)
        elif v.label is not None:
            st.lab(v.label).consumers_have_bias = False
        if isinstance(mod, FrozenMaskLinear):
            for key in ("mask", "frozen"):
                st.record(f"{name}.{key}", 0, None, "in", label=out, block=1, table="structure")
                st.record(f"{name}.{key}", 1, v, "out", table="structure")
        st.producers.setdefault(out, []).append(name)
        return _V(out, len(_shape(node) or (0, 0)) - 1)
    if isinstance(mod, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        if mod.groups != 1:
            raise _unsupported(name, f"{tname} with groups={mod.groups}")
        v = _tensor_in(node, info, name)
        _consume(st, name, v, _shape(node.args[0]), "channel")
        out = st.new(mod.out_channels, "channels", name)
        st.record(f"{name}.weight", 0, None, "in", label=out, block=1)
        st.record(f"{name}.weight", 1, v, "out")
        if mod.bias is not None:
            st.record(f"{name}.bias", 0, None, "in", label=out, block=1)
        if isinstance(mod, FrozenMaskConv2d):
            for key in ("mask", "frozen"):
                st.record(f"{name}.{key}", 0, None, "in", label=out, block=1, table="structure")
                st.record(f"{name}.{key}", 1, v, "out", table="structure")
        st.producers.setdefault(out, []).append(name)
        return _V(out, 1)
    if isinstance(mod, nn.Embedding):
        out = st.new(mod.embedding_dim, "units", name)
        st.record(f"{name}.weight", 1, None, "in", label=out, block=1)
        return _V(out, len(_shape(node) or (0, 0)) - 1)
    if isinstance(mod, _NORM_MODULES):
        v = _tensor_in(node, info, name)
        if v.label is not None:
            if v.fdim != 1:
                raise _unsupported(name, f"{tname} over a permuted axis that is not dim 1")
            lab = st.lab(v.label)
            lab.bn = True
            lab.nonlinear_other = True
            if mod.affine:
                st.record(f"{name}.weight", 0, v, "norm", odd=False, block=1)
                st.record(f"{name}.bias", 0, v, "norm", block=1)
            if mod.track_running_stats:
                st.record(f"{name}.running_mean", 0, v, "stat", block=1)
                st.record(f"{name}.running_var", 0, v, "stat", odd=False, block=1)
        return v
    if isinstance(mod, nn.LayerNorm | getattr(nn, "RMSNorm", nn.LayerNorm)):
        v = _tensor_in(node, info, name)
        if v.label is not None:
            shape = _shape(node.args[0])
            if len(mod.normalized_shape) != 1 or shape is None or v.fdim != len(shape) - 1:
                raise _unsupported(name, f"{tname} over more than the feature axis")
            lab = st.lab(v.label)
            lab.no_signs = True
            lab.nonlinear_other = True
            if getattr(mod, "weight", None) is not None:
                st.record(f"{name}.weight", 0, v, "norm", odd=False, block=1)
            if getattr(mod, "bias", None) is not None:
                st.record(f"{name}.bias", 0, v, "norm", block=1)
        return v
    if isinstance(mod, nn.GroupNorm):
        v = _tensor_in(node, info, name)
        if v.label is not None:
            if v.fdim != 1:
                raise _unsupported(name, "GroupNorm over a permuted axis that is not dim 1")
            lab = st.lab(v.label)
            lab.no_signs = True
            lab.nonlinear_other = True
            lab.gn_groups = mod.num_groups
            if mod.affine:
                st.record(f"{name}.weight", 0, v, "norm", odd=False, block=1)
                st.record(f"{name}.bias", 0, v, "norm", block=1)
        return v
    if isinstance(mod, OrthoPolyActivation):
        v = _tensor_in(node, info, name)
        if v.label is not None:
            if v.fdim != 1:
                raise _unsupported(name, "OrthoPolyActivation over a permuted axis that is not dim 1")
            lab = st.lab(v.label)
            if not bool(mod.odd_units().all()):
                lab.odd = lab.odd_affine = False
            lab.nonlinear_other = True
            if mod.learnable:
                st.record(f"{name}.coeffs", 0, v, "norm", odd=False, block=1)
                lab.no_signs = True
                st.warnings.append(f"symmetry: '{name}' has learnable structure (OrthoPolyActivation learnable=True); "
                                   "the group acts on weights and coefficients jointly, so the count stays dense")
            else:
                st.record(f"{name}.coeffs", 0, v, "norm", odd=False, block=1, table="structure")
        return v
    if isinstance(mod, nn.Hardtanh):  # nn.Hardtanh and subclasses; odd only when symmetric
        v = _tensor_in(node, info, name)
        st.apply_fn(v, "odd" if mod.min_val == -mod.max_val else "other")
        return v
    if type(mod) in _ACT_MODULES:
        v = _tensor_in(node, info, name)
        st.apply_fn(v, _ACT_MODULES[type(mod)])
        return v
    if isinstance(mod, _POOL_MODULES):
        v = _tensor_in(node, info, name)
        if v.label is not None and v.fdim != 1:
            raise _unsupported(name, f"{tname} over the feature axis")
        st.apply_fn(v, "other" if "Max" in tname else "linear")
        return v
    if isinstance(mod, nn.Flatten):
        v = _tensor_in(node, info, name)
        return _reshape(v, _shape(node.args[0]), _shape(node), name)
    if isinstance(mod, nn.Softmax | nn.LogSoftmax):
        v = _tensor_in(node, info, name)
        shape = _shape(node.args[0])
        dim = mod.dim if mod.dim is not None else -1
        if v.label is not None and shape is not None and dim % len(shape) != v.fdim:
            raise _unsupported(name, f"{tname} across a permuted axis")
        st.apply_fn(v, "other")
        return v
    if isinstance(mod, nn.MultiheadAttention):
        return _mha(st, node, mod, info, name)
    if isinstance(mod, nn.TransformerEncoderLayer):
        v = _tensor_in(node, info, name)
        return _encoder_layer(st, node, mod, name, v)
    if isinstance(mod, nn.TransformerEncoder):
        v = _tensor_in(node, info, name)
        for i, layer in enumerate(mod.layers):
            v = _encoder_layer(st, node, layer, f"{name}.layers.{i}", v)
        if mod.norm is not None:
            v = _layer_norm_inline(st, v, f"{name}.norm")
        return v
    if any(True for _ in mod.parameters()):
        raise _unsupported(name, tname)
    # a parameter-free module that is not known: harmless on fixed tensors only
    vals = _flat_values(node.args, info) + _flat_values(node.kwargs, info)
    if any(isinstance(v, _V) and v.label is not None for v in vals):
        raise _unsupported(name, tname)
    return _V(None, 1)


def _layer_norm_inline(st: _State, v: _V, name: str) -> _V:
    if v.label is not None:
        lab = st.lab(v.label)
        lab.no_signs = True
        lab.nonlinear_other = True
        st.record(f"{name}.weight", 0, v, "norm", odd=False, block=1)
        st.record(f"{name}.bias", 0, v, "norm", block=1)
    return v


def _mha_records(st: _State, mod: nn.MultiheadAttention, name: str, v: _V, out_label: int | None,
                 make_out: bool = True) -> int | None:
    if not mod._qkv_same_embed_dim or mod.bias_k is not None or mod.add_zero_attn:
        raise _unsupported(name, "MultiheadAttention with kdim/vdim != embed_dim, bias_k/bias_v or add_zero_attn")
    h, e = mod.num_heads, mod.embed_dim
    d = e // h
    heads = st.new(h, "heads", f"{name}.heads")
    st.labels[heads].no_signs = True
    st.labels[heads].continuous = 2 * h * d * d  # GL(d_k) × GL(d_v) per head
    if v.label is not None:
        st.taps.append((name, v.label, v.fdim, v.block))
    st.record(f"{name}.in_proj_weight", 0, None, "in", label=heads, block=d, repeat=3, odd=False)
    st.record(f"{name}.in_proj_weight", 1, v, "out")
    if mod.in_proj_bias is not None:
        st.record(f"{name}.in_proj_bias", 0, None, "in", label=heads, block=d, repeat=3, odd=False)
    st.record(f"{name}.out_proj.weight", 1, None, "out", label=heads, block=d, odd=False)
    out = out_label if out_label is not None or not make_out else st.new(e, "units", f"{name}.out_proj")
    if out is not None:
        st.record(f"{name}.out_proj.weight", 0, None, "in", label=out, block=1)
        if mod.out_proj.bias is not None:
            st.record(f"{name}.out_proj.bias", 0, None, "in", label=out, block=1)
    return out


def _mha(st: _State, node: fx.Node, mod: nn.MultiheadAttention, info: dict, name: str) -> tuple:
    args = list(node.args[:3]) + [node.kwargs.get(k) for k in ("query", "key", "value")][len(node.args):]
    vals = [info.get(a) if isinstance(a, fx.Node) else None for a in args]
    if len(vals) != 3 or not all(isinstance(v, _V) for v in vals):
        raise _unsupported(name, "MultiheadAttention needs query, key and value tensors")
    q = vals[0]
    for other in vals[1:]:
        if other.label != q.label:
            st.union(q.label, other.label, name)
    q = _V(st.find(q.label) if q.label is not None else None, q.fdim, q.block)
    shape = _shape(args[0])
    if q.label is not None and (shape is None or q.fdim != len(shape) - 1 or q.block != 1):
        raise _unsupported(name, "MultiheadAttention over a permuted axis that is not the last one")
    out = _mha_records(st, mod, name, q, None)
    return (_V(out, len(shape) - 1 if shape else 2), _V(None, 1))


def _encoder_layer(st: _State, node: fx.Node, mod: nn.TransformerEncoderLayer, name: str, v: _V) -> _V:
    act = getattr(mod, "activation", None)
    kind = {F.relu: "relu", F.gelu: "other"}.get(act) if not isinstance(act, nn.Module) else _ACT_MODULES.get(type(act))
    if kind is None:
        raise _unsupported(name, f"TransformerEncoderLayer with activation {act!r}")
    res = v.label
    if res is None:  # the stream is tied to the model input: fixed, but the inner groups still exist
        res_v = _V(None, v.fdim)
    else:
        st.lab(res).kind = "residual"
        st.lab(res).merged = True
        res_v = v
    _mha_records(st, mod.self_attn, f"{name}.self_attn", res_v, res, make_out=res is not None)
    ff = st.new(mod.linear1.out_features, "units", f"{name}.linear1")
    st.labels[ff].odd = st.labels[ff].odd_affine = False
    if kind == "relu":
        st.labels[ff].relu = True
    else:
        st.labels[ff].nonlinear_other = True
    st.producers.setdefault(ff, []).append(f"{name}.linear1")
    st.record(f"{name}.linear1.weight", 0, None, "in", label=ff, block=1)
    st.record(f"{name}.linear1.weight", 1, res_v, "out")
    st.record(f"{name}.linear1.bias", 0, None, "in", label=ff, block=1)
    st.taps.append((f"{name}.linear2", ff, -1, 1))
    st.record(f"{name}.linear2.weight", 1, None, "out", label=ff, block=1)
    if res is not None:
        st.record(f"{name}.linear2.weight", 0, res_v, "in")
        st.record(f"{name}.linear2.bias", 0, res_v, "in")
        st.taps.append((f"{name}.linear1", res, -1, 1))
    for nm in ("norm1", "norm2"):
        _layer_norm_inline(st, res_v, f"{name}.{nm}")
    return v


def _reshape(v: _V, s: tuple[int, ...] | None, o: tuple[int, ...] | None, where: str) -> _V:
    if v.label is None:
        return _V(None, 1)
    if s is None or o is None:
        raise _unsupported(where, "reshape of unknown shape")
    f = v.fdim
    if s == o:
        return v
    if len(o) == f + 1 and o[:f] == s[:f] and o[f] == math.prod(s[f:]):
        return _V(v.label, f, v.block * math.prod(s[f + 1:]))
    # squeeze/unsqueeze of size-1 axes that leave the feature axis alone
    if [d for d in s if d != 1] == [d for d in o if d != 1]:
        before = sum(1 for d in s[:f] if d != 1)
        idx = [i for i, d in enumerate(o) if d != 1]
        if before < len(idx) and o[idx[before]] == s[f]:
            return _V(v.label, idx[before], v.block)
    raise _unsupported(where, f"reshape {s} -> {o} that splits or mixes the permuted feature axis")


def _node_arg_values(node: fx.Node, info: dict) -> list[tuple[Any, Any]]:
    out = []
    for a in list(node.args) + list(node.kwargs.values()):
        out.append((a, info.get(a) if isinstance(a, fx.Node) else None))
    return out


def _call_function(st: _State, node: fx.Node, info: dict) -> Any:
    fn = node.target
    where = _module_name_of(node)
    fname = getattr(fn, "__name__", str(fn))
    if fn is operator.getitem:
        src, idx = node.args[0], node.args[1]
        v = info.get(src) if isinstance(src, fx.Node) else None
        if isinstance(v, tuple):
            return v[idx]
        if isinstance(v, _V) and v.label is not None:
            raise _unsupported(where, "indexing of permuted features")
        return _V(None, 1) if isinstance(v, _V) else None
    if fn in _ACT_FUNCS or fn in _POOL_FUNCS:
        v = info.get(node.args[0]) if isinstance(node.args[0], fx.Node) else None
        if isinstance(v, _V):
            if fn in _POOL_FUNCS and v.label is not None and v.fdim != 1:
                raise _unsupported(where, f"{fname} over the feature axis")
            st.apply_fn(v, _ACT_FUNCS.get(fn) or ("other" if _POOL_FUNCS[fn] == "max" else "linear"))
            return v
        return None
    if fn in _SOFTMAX:
        v = info.get(node.args[0])
        if isinstance(v, _V):
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else -1)
            shape = _shape(node.args[0])
            if v.label is not None and shape is not None and dim % len(shape) != v.fdim:
                raise _unsupported(where, f"{fname} across a permuted axis")
            st.apply_fn(v, "other")
            return v
        return None
    if fn in _FLATTEN:
        v = info.get(node.args[0])
        return _reshape(v, _shape(node.args[0]), _shape(node), where) if isinstance(v, _V) else None
    if fn in _ADD:
        return _add(st, node, info, where)
    if fn in _MUL:
        return _mul(st, node, info, where, divide=fn in (operator.truediv, torch.div))
    return _generic(st, node, info, where, fname)


def _generic(st: _State, node: fx.Node, info: dict, where: str, fname: str) -> Any:
    vals = _node_arg_values(node, info)
    if any(isinstance(v, _Param) for _, v in vals):
        raise _unsupported(where, f"parameter used in {fname}")
    if any(isinstance(v, _V) and v.label is not None for _, v in vals):
        raise _unsupported(where, f"operation {fname} on permuted features")
    return _V(None, 1) if _shape(node) is not None else None


def _aligned(v: _V, shape: tuple[int, ...] | None, out_nd: int) -> int:
    return v.fdim + (out_nd - len(shape)) if shape is not None else v.fdim


def _operands(node: fx.Node, info: dict) -> tuple[list, list, int] | None:
    """A binary op's operands: the traced tensors as (node, _V), the parameters, and the output's rank; None when
    the output has no known shape."""
    a, b = node.args[0], node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
    va = info.get(a) if isinstance(a, fx.Node) else None
    vb = info.get(b) if isinstance(b, fx.Node) else None
    out_shape = _shape(node)
    if out_shape is None:
        return None
    tensors = [(x, v) for x, v in ((a, va), (b, vb)) if isinstance(v, _V)]
    params = [v for v in (va, vb) if isinstance(v, _Param)]
    return tensors, params, len(out_shape)


def _add(st: _State, node: fx.Node, info: dict, where: str) -> Any:
    operands = _operands(node, info)
    if operands is None:
        return None
    tensors, params, nd = operands
    if len(tensors) == 2:
        (xa, ta), (xb, tb) = tensors
        if ta.label is not None and tb.label is not None:
            fa, fb = _aligned(ta, _shape(xa), nd), _aligned(tb, _shape(xb), nd)
            if fa != fb or ta.block != tb.block:
                raise _unsupported(where, "addition of tensors permuted along different axes")
            return _V(st.union(ta.label, tb.label, where), fa, ta.block)
        labelled = ta if ta.label is not None else tb
        if labelled.label is not None:
            st.lab(labelled.label).fixed = True  # tied to a fixed tensor (the input): never permuted
        return _V(None, 1)
    if len(tensors) == 1:
        x, v = tensors[0]
        if v.label is None:
            return _V(None, 1)
        f = _aligned(v, _shape(x), nd)
        if params:
            p = params[0]
            axis = f - (nd - len(p.shape))
            if 0 <= axis < len(p.shape) and p.shape[axis] == st.lab(v.label).size:
                st.record(p.key, axis, _V(v.label, f), "in", block=1)
                return _V(v.label, f, v.block)
        st.apply_fn(v, "other")  # adding a constant breaks oddness
        return _V(v.label, f, v.block)
    return _V(None, 1)


def _mul(st: _State, node: fx.Node, info: dict, where: str, divide: bool) -> Any:
    operands = _operands(node, info)
    if operands is None:
        return None
    tensors, params, nd = operands
    if len(tensors) == 2:
        (xa, ta), (xb, tb) = tensors
        if ta.label is None and tb.label is None:
            return _V(None, 1)
        if ta.label is not None and tb.label is not None and not divide:
            fa, fb = _aligned(ta, _shape(xa), nd), _aligned(tb, _shape(xb), nd)
            if fa != fb:
                raise _unsupported(where, "product of tensors permuted along different axes")
            lid = st.union(ta.label, tb.label, where)
            if lid is not None:
                st.lab(lid).odd = st.lab(lid).odd_affine = False
                st.lab(lid).nonlinear_other = True
            return _V(lid, fa, ta.block)
        raise _unsupported(where, "product of permuted features with a fixed tensor")
    if len(tensors) == 1:
        x, v = tensors[0]
        if v.label is None:
            return _V(None, 1)
        f = _aligned(v, _shape(x), nd)
        if params:
            p = params[0]
            axis = f - (nd - len(p.shape))
            if 0 <= axis < len(p.shape) and p.shape[axis] == st.lab(v.label).size and not divide:
                st.record(p.key, axis, _V(v.label, f), "norm", odd=False, block=1)
            elif any(s != 1 for s in p.shape):
                raise _unsupported(where, f"parameter {p.key!r} multiplied across permuted features")
        return _V(v.label, f, v.block)
    return _V(None, 1)


def _call_method(st: _State, node: fx.Node, info: dict) -> Any:
    where = _module_name_of(node)
    name = node.target
    src = node.args[0]
    v = info.get(src) if isinstance(src, fx.Node) else None
    if isinstance(v, _Param):
        raise _unsupported(where, f"parameter {v.key!r} used in .{name}()")
    if name in ("size", "dim", "numel") or _shape(node) is None:
        if isinstance(v, _V) and v.label is not None and name not in ("size", "dim", "numel"):
            raise _unsupported(where, f".{name}() on permuted features")
        return None
    if not isinstance(v, _V):
        return _generic(st, node, info, where, name)
    if name in _ACT_METHODS:
        st.apply_fn(v, _ACT_METHODS[name])
        return v
    if name in _RESHAPE_METHODS:
        return _reshape(v, _shape(src), _shape(node), where)
    if name in ("transpose", "permute") and v.label is not None:
        s = _shape(src)
        if name == "transpose":
            d0, d1 = (int(x) % len(s) for x in node.args[1:3])
            f = d1 if v.fdim == d0 else d0 if v.fdim == d1 else v.fdim
        else:
            dims = [int(x) % len(s) for x in (node.args[1] if isinstance(node.args[1], list | tuple)
                                              else node.args[1:])]
            f = dims.index(v.fdim)
        if v.block != 1:
            raise _unsupported(where, f".{name}() of flattened features")
        return _V(v.label, f)
    if name in ("softmax", "log_softmax"):
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else -1)
        s = _shape(src)
        if v.label is not None and dim % len(s) != v.fdim:
            raise _unsupported(where, f".{name}() across a permuted axis")
        st.apply_fn(v, "other")
        return v
    if name in ("add", "add_", "sub", "mul", "mul_", "div"):
        fn = {"add": torch.add, "add_": torch.add, "sub": torch.sub, "mul": torch.mul, "mul_": torch.mul,
              "div": torch.div}[name]
        return _call_function(st, _Shim(node, fn), info)
    return _generic(st, node, info, where, f".{name}()")


class _Shim:
    """A call_method node seen as the equivalent call_function."""

    def __init__(self, node: fx.Node, fn: Any) -> None:
        self.target, self.args, self.kwargs, self.meta = fn, node.args, node.kwargs, node.meta


# -- resolution -----------------------------------------------------------------------------------
def _resolve(st: _State, model: nn.Module, affine_odd: bool) -> PermSpec:
    state = model.state_dict()
    roots: list[int] = []
    for i in sorted(st.labels):
        r = st.find(i)
        if r not in roots and not st.labels[r].fixed:
            roots.append(r)
    names: dict[int, str] = {}
    used: set[str] = set()
    for r in roots:
        lab = st.labels[r]
        base = lab.producers[0] if not lab.merged else f"residual:{lab.producers[0]}"
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}#{k}"
        used.add(name)
        names[r] = name
    axes: dict[str, list[AxisRef | None]] = {k: [None] * t.dim() for k, t in state.items()}
    structure: dict[str, list[AxisRef | None]] = {}
    for table, key, axis, lid, block, repeat, role, odd in st.records:
        r = st.find(lid)
        if r not in names:
            continue
        if key not in state:
            raise _unsupported(key.rsplit(".", 1)[0], f"tensor {key!r} not in the state dict")
        ref = AxisRef(names[r], block, repeat, role, odd)
        if table == "structure":
            structure.setdefault(key, [None] * state[key].dim())[axis] = ref
            axes.pop(key, None)
        else:
            axes[key][axis] = ref
    for key in structure:
        axes.pop(key, None)
    groups = []
    for r in roots:
        lab = st.labels[r]
        name = names[r]
        signs = lab.odd and not lab.no_signs and lab.kind != "heads"
        affine = (affine_odd and not signs and lab.saw_sigmoid and lab.odd_affine and not lab.no_signs
                  and lab.consumers_have_bias and lab.kind != "heads")
        continuous = lab.continuous
        if lab.relu and not lab.nonlinear_other and lab.kind in ("units", "channels"):
            continuous += lab.size
        classes, blocks = _classes(st, state, name, structure, lab)
        groups.append(Group(name, lab.size, lab.kind, signs=signs, classes=classes, class_blocks=blocks,
                            affine_signs=affine, continuous=continuous, norm=lab.bn))
    taps = tuple(Tap(m, names[st.find(lid)], fdim, block) for m, lid, fdim, block in st.taps
                 if st.find(lid) in names)
    producers = {}
    for r in roots:
        lab = st.labels[r]
        mods = st.producers.get(r, [])
        if not lab.merged and len(mods) == 1 and not lab.bn and lab.kind in ("units", "channels"):
            producers[names[r]] = mods[0]
    outputs = []  # Linear/Conv layers writing the (fixed) model output: REPAIR may correct the logits too
    for i in sorted(st.labels):
        lab = st.labels[i]
        if st.find(i) == i and lab.fixed and not lab.merged and not lab.bn and lab.kind in ("units", "channels"):
            mods = st.producers.get(i, [])
            if len(mods) == 1:
                outputs.append(mods[0])
    for msg in st.warnings:
        warnings.warn(msg, SymmetryWarning, stacklevel=3)
    return PermSpec(tuple(groups), {k: tuple(v) for k, v in axes.items()},
                    {k: tuple(v) for k, v in structure.items()}, taps, producers, tuple(st.warnings), tuple(outputs))


def _classes(st: _State, state: dict, name: str, structure: dict, lab: _Label) -> tuple[tuple[int, ...] | None, bool]:
    n = lab.size
    if lab.gn_groups and lab.gn_groups > 1:
        size = n // lab.gn_groups
        return tuple(j // size for j in range(n)), True
    refs = [(k, a, r) for k, rs in structure.items() for a, r in enumerate(rs) if r is not None and r.group == name]
    if not refs:
        return None, False
    sig: list[list[bytes]] = [[] for _ in range(n)]
    for key, axis, ref in refs:
        rows = unit_rows(state[key].detach().cpu(), axis, ref, n)
        if rows.is_floating_point():
            rows = rows + 0.0  # -0.0 and 0.0 are the same value
        for j in range(n):
            sig[j].append(rows[j].contiguous().numpy().tobytes())
    first: dict[tuple[bytes, ...], int] = {}
    labels = []
    for j in range(n):
        labels.append(first.setdefault(tuple(sig[j]), len(first)))
    if len(first) == 1:
        return None, False
    return tuple(labels), False
