"""Models for the ``dicelab symmetry`` commands: checkpoints, run folders and architecture strings.

Checkpoints are read only with ``torch.load(path, map_location="cpu", weights_only=True)``. Accepted:

* dicelab's symmetry checkpoint ``{"format": "dicelab.checkpoint/1", "arch": {"name", "kwargs"},
  "state_dict", "meta"}`` (what ``align``/``canonicalize`` write);
* a training-engine checkpoint (``checkpoint.pt`` of a run folder: ``"model"`` state dict + ``"config"``);
* a bare state dict, with ``--arch``.

Architecture strings: ``mlp:784-512-512-512-10`` (``:tanh`` etc. for the activation), ``resnet20:32``,
``transformer:d_model=768,layers=12,heads=12,d_ff=3072`` and ``package.module:factory`` (a callable that
returns an ``nn.Module`` or a ``PermSpec``). Outputs go to new paths only.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dicelab.symmetry.errors import CheckpointError, SymmetryError
from dicelab.symmetry.spec import PermSpec

__all__ = ["FORMAT", "LoadedModel", "load_model", "save_model", "parse_arch", "arch_spec", "arch_model",
           "resolve_model", "data_for", "refuse_existing"]

FORMAT = "dicelab.checkpoint/1"
_ARCH_HELP = ("mlp:784-512-512-512-10[:activation], resnet20:WIDTH, "
              "transformer:d_model=768,layers=12,heads=12,d_ff=3072 or package.module:factory")


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, with what is known about how it was made."""

    model: nn.Module
    source: str
    arch: dict[str, Any]
    config: Any = None            # the RunConfig of an engine checkpoint
    input_shape: tuple[int, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def example_input(self) -> torch.Tensor | None:
        if self.input_shape is None:
            return None
        return torch.zeros(2, *self.input_shape, dtype=next(self.model.parameters()).dtype)


def refuse_existing(path: str | Path) -> Path:
    path = Path(path)
    if path.exists():
        raise CheckpointError(f"{path}: already exists; outputs go to new paths only")
    return path


def parse_arch(text: str) -> tuple[str, Any]:
    """(kind, parsed) for an architecture string, or raise naming the string."""
    kind, sep, rest = text.partition(":")
    if not sep or not rest:
        raise SymmetryError(f"{text!r}: not an architecture string ({_ARCH_HELP})")
    if kind == "mlp":
        parts = rest.split(":")
        try:
            widths = [int(w) for w in parts[0].split("-")]
        except ValueError:
            raise SymmetryError(f"{text!r}: mlp widths must be integers joined by '-'") from None
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise SymmetryError(f"{text!r}: mlp needs at least input and output widths >= 1")
        return "mlp", (widths, parts[1] if len(parts) > 1 else "relu")
    if kind == "resnet20":
        try:
            return "resnet20", int(rest)
        except ValueError:
            raise SymmetryError(f"{text!r}: resnet20 width must be an integer") from None
    if kind == "transformer":
        try:
            kv = dict(p.split("=", 1) for p in rest.split(","))
            return "transformer", {"d_model": int(kv["d_model"]), "n_layers": int(kv["layers"]),
                                   "n_heads": int(kv["heads"]), "d_ff": int(kv["d_ff"])}
        except (KeyError, ValueError):
            raise SymmetryError(f"{text!r}: transformer needs d_model=,layers=,heads=,d_ff= integers") from None
    if all(part.isidentifier() for part in kind.split(".")) and rest.isidentifier():
        return "factory", (kind, rest)
    raise SymmetryError(f"{text!r}: unknown architecture {kind!r} ({_ARCH_HELP})")


def _factory(module: str, name: str) -> Any:
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise SymmetryError(f"{module}:{name}: cannot import the factory ({type(exc).__name__})") from None
    return fn()


def arch_spec(text: str) -> PermSpec | nn.Module:
    """The spec of an architecture string (``mlp``, ``resnet20``, ``transformer``), or the module a
    ``package.module:factory`` string builds (a factory may also return a PermSpec)."""
    kind, parsed = parse_arch(text)
    if kind == "mlp":
        return PermSpec.mlp(*parsed)
    if kind == "resnet20":
        return PermSpec.resnet20(parsed)
    if kind == "transformer":
        return PermSpec.transformer(**parsed)
    out = _factory(*parsed)
    if not isinstance(out, nn.Module | PermSpec):
        raise SymmetryError(f"{text}: the factory returned {type(out).__name__}, not an nn.Module or PermSpec")
    return out


def arch_model(text: str) -> nn.Module:
    """A freshly built module for an ``mlp:`` or ``package.module:factory`` string."""
    kind, parsed = parse_arch(text)
    if kind == "mlp":
        from dicelab.models import MLP

        widths, act = parsed
        return MLP(widths[0], widths[1:-1], widths[-1], act)
    if kind == "factory":
        out = _factory(*parsed)
        if isinstance(out, nn.Module):
            return out
    raise SymmetryError(f"{text!r}: only mlp:... and package.module:factory build a module with weights")


def _build_registered(name: str, kwargs: dict[str, Any]) -> nn.Module:
    from dicelab.models import build_model

    opts = dict(kwargs.get("options", {}))
    if "widths" in opts and isinstance(opts["widths"], list):
        opts["widths"] = tuple(opts["widths"])
    with torch.random.fork_rng(devices=[]):  # the weights are overwritten; keep the caller's global RNG
        return build_model(name, tuple(kwargs["input_shape"]), int(kwargs["num_classes"]), **opts)


def _input_shape_for(config: Any) -> tuple[int, ...]:
    from dicelab.data import dataset_info

    info = dataset_info(config.data.name)
    if info.offline:
        from dicelab.train import load_data_for

        return tuple(load_data_for(config).input_shape)
    return tuple(info.input_shape)


def load_model(path: str | Path, *, arch: str | None = None) -> LoadedModel:
    """Rebuild the model stored at ``path`` (a checkpoint file or a run folder holding checkpoint.pt)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickled class, a truncated file, not a torch file
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
        raise CheckpointError(f"{path}: refused by torch.load(weights_only=True) ({type(exc).__name__}"
                              f"{': ' + first if first else ''})") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: not a checkpoint (a {type(payload).__name__}, expected a dict)")
    config = None
    meta: dict[str, Any] = {}
    if payload.get("format") == FORMAT:
        for key in ("arch", "state_dict"):
            if key not in payload:
                raise CheckpointError(f"{path}: missing key {key!r}")
        arch_d = payload["arch"]
        state = payload["state_dict"]
        meta = dict(payload.get("meta") or {})
        name = arch_d.get("name", "")
        if ":" in name:
            model = arch_model(name)
        else:
            try:
                model = _build_registered(name, arch_d.get("kwargs", {}))
            except Exception as exc:
                raise CheckpointError(f"{path}: cannot rebuild architecture {name!r} ({exc})") from None
        input_shape = tuple(arch_d.get("kwargs", {}).get("input_shape") or ()) or None
        if meta.get("config"):
            from dicelab.config import load_run_config

            config = load_run_config(data=json.loads(meta["config"]))
    elif "model" in payload and "config" in payload:  # a training-engine checkpoint
        from dicelab.config import load_run_config

        try:
            config = load_run_config(data=json.loads(payload["config"]))
        except Exception as exc:
            raise CheckpointError(f"{path}: unreadable run config in checkpoint ({exc})") from None
        state = payload["model"]
        input_shape = _input_shape_for(config)
        kwargs = {"input_shape": list(input_shape), "num_classes": None,
                  "options": {k: list(v) if isinstance(v, tuple) else v
                              for k, v in config.model.build_kwargs().items()}}
        from dicelab.data import dataset_info

        kwargs["num_classes"] = dataset_info(config.data.name).num_classes
        if config.data.name == "teacher":
            kwargs["num_classes"] = int(config.data.options.get("classes", kwargs["num_classes"]))
        arch_d = {"name": config.model.name, "kwargs": kwargs}
        model = _build_registered(config.model.name, kwargs)
        meta = {"config": payload["config"], "source": str(path)}
    elif payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        if arch is None:
            raise CheckpointError(f"{path}: a bare state dict; pass --arch (e.g. mlp:64-32-10)")
        model = arch_model(arch)
        state = payload
        arch_d = {"name": arch, "kwargs": {}}
        input_shape = None
    else:
        raise CheckpointError(f"{path}: missing key 'state_dict' (not a dicelab checkpoint)")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: 'state_dict' is not a dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(s.strip() for s in first[:2])[:200]
        raise CheckpointError(f"{path}: the state dict does not fit the model ({detail})") from None
    if input_shape is None and arch_d["name"].startswith("mlp:"):
        input_shape = (parse_arch(arch_d["name"])[1][0][0],)
    return LoadedModel(model.eval(), str(path), arch_d, config, input_shape, meta)


def save_model(path: str | Path, loaded: LoadedModel, model: nn.Module, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (same architecture as ``loaded``) as a dicelab symmetry checkpoint at a new path."""
    path = refuse_existing(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "arch": loaded.arch,
               "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
               "meta": {**{k: v for k, v in loaded.meta.items() if isinstance(v, str | int | float)},
                        **(meta or {})}}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def resolve_model(text: str, *, arch: str | None = None) -> LoadedModel | PermSpec | nn.Module:
    """A MODEL argument: an existing checkpoint/run folder, else an architecture string."""
    if Path(text).exists():
        return load_model(text, arch=arch)
    if ":" in text:
        return arch_spec(text)
    raise CheckpointError(f"{text}: no such file, and not an architecture string ({_ARCH_HELP})")


def data_for(name: str | None, loaded: LoadedModel | None = None) -> Any:
    """The DataBundle for a command: ``--data NAME`` (digits: the 1437/360 split of spec 06 §12), else the
    data section of the checkpoint's run config."""
    from dicelab.data import load_dataset

    if name is not None:
        opts = {"train_size": 1437} if name == "digits" else {}
        return load_dataset(name, val_fraction=0.0, **opts)
    if loaded is not None and loaded.config is not None:
        from dicelab.train import load_data_for

        return load_data_for(loaded.config)
    raise SymmetryError("this command needs data: pass --data NAME (e.g. --data digits)")
