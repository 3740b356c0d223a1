"""``dicelab techniques --preview``: a PNG of what one technique does (spec 01 §7).

Data techniques: an 8×8 grid, 8 training images (rows) × 8 independent draws (columns). Schedules: the lr or
batch size per epoch. Annealed noise: σ_t against the step t on log axes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dicelab.config import parse_override
from dicelab.errors import ConfigError
from dicelab.hooks import EpochPlan, StepState
from dicelab.randomness.base import Level
from dicelab.randomness.config import RandomnessConfig
from dicelab.randomness.optimization import annealed_sigma
from dicelab.randomness.registry import technique
from dicelab.randomness.techniqueset import build

__all__ = ["preview", "PREVIEWABLE"]

_SCHEDULES = ("lr_schedule", "batch_schedule")
_ANNEALED = ("weight_noise", "gradient_noise")
_IMAGE = ("flip", "rotation", "zoom", "translation", "contrast", "input_noise")
PREVIEWABLE = _IMAGE + _SCHEDULES + _ANNEALED


def _parse(spec: str) -> tuple[str, RandomnessConfig]:
    path, value = parse_override(spec)
    name = path[0]
    technique(name)  # unknown names: one line listing the known ones
    if name not in PREVIEWABLE:
        raise ConfigError(f"--preview {name}: no preview for this technique (previews: {', '.join(PREVIEWABLE)})")
    data = {name: value} if len(path) == 1 else {name: {path[1]: value}}
    try:
        cfg = RandomnessConfig.model_validate(data)
    except Exception as exc:  # pydantic's message, on one line
        raise ConfigError(f"--preview {spec}: {str(exc).splitlines()[2].strip()}") from None
    if not cfg.is_on(name):
        raise ConfigError(f"--preview {spec}: the technique is off at this value")
    return name, cfg


def preview(spec: str, out: str | Path, *, dataset: str = "digits", seed: int = 0, epochs: int = 20,
            lr: float = 1e-3, batch_size: int = 128, data_dir: str | Path | None = None) -> Path:
    """Write the preview PNG of ``spec`` (``"rotation=0.2"``, ``"lr_schedule=-0.5"``) to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name, cfg = _parse(spec)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if technique(name).level == Level.DATA:
        fig = _image_grid(name, cfg, dataset, seed, data_dir, plt)
    elif name in _SCHEDULES:
        fig = _schedule_plot(name, cfg, seed, epochs, lr, batch_size, plt)
    else:
        fig = _sigma_plot(name, cfg, plt)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _image_grid(name, cfg, dataset, seed, data_dir, plt):
    from dicelab.data import load_dataset

    data = load_dataset(dataset, data_dir=data_dir, val_fraction=0.0)
    if len(data.input_shape) != 3:
        raise ConfigError(f"--dataset {dataset}: image techniques need image data (C, H, W)")
    images = data.train.x[:8]
    batch = images.repeat_interleave(8, dim=0)          # each image 8 times: 8 independent draws
    tset = build(cfg, seed, num_classes=data.num_classes, input_shape=data.input_shape, num_train=len(data.train))
    state = StepState(epoch=0, epochs=1, step=0, batch_size=len(batch), lr=0.0)
    x, _ = tset.on_batch(batch, data.train.y[:8].repeat_interleave(8), state)
    fig, axes = plt.subplots(8, 9, figsize=(9, 8))
    for r in range(8):
        cells = [images[r]] + [x[8 * r + c] for c in range(8)]
        for c, img in enumerate(cells):
            ax = axes[r, c]
            arr = img.detach().cpu().numpy()
            arr = arr[0] if arr.shape[0] == 1 else np.clip(arr.transpose(1, 2, 0), 0, 1)
            ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("original" if c == 0 else f"draw {c}", fontsize=8)
    fig.suptitle(f"{name}: {cfg.table(name)} ({dataset})")
    fig.tight_layout()
    return fig


def _schedule_plot(name, cfg, seed, epochs, lr, batch_size, plt):
    tset = build(cfg, seed)
    tset.context.base_batch_size = batch_size
    plan = EpochPlan(lr=lr, batch_size=batch_size)
    values = []
    for e in range(epochs):
        tset.on_epoch(StepState(epoch=e, epochs=epochs, step=0, batch_size=plan.batch_size, lr=plan.lr), plan)
        values.append(plan.lr if name == "lr_schedule" else plan.batch_size)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.step(range(epochs), values, where="post", marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate" if name == "lr_schedule" else "batch size")
    if name == "lr_schedule":
        ax.set_yscale("log")
    ax.set_title(f"{name} s = {cfg.table(name)['s']} over {epochs} epochs")
    fig.tight_layout()
    return fig


def _sigma_plot(name, cfg, plt):
    values = cfg.resolved(name)
    t = np.unique(np.logspace(0, 5, 200).astype(int)) - 1
    sigma = [annealed_sigma(values["eta"], int(s), values["gamma"]) for s in t]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(t + 1, sigma)
    ax.set_xlabel("step t + 1")
    ax.set_ylabel("σ_t")
    ax.set_title(f"{name}: σ_t = sqrt({values['eta']:g}/(t+1)^{values['gamma']:g})")
    fig.tight_layout()
    return fig
