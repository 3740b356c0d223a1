"""The training engine: a plain, readable PyTorch loop with named hook points.

One :class:`Trainer` trains one model on one in-memory dataset. With no hooks it is exactly the loop
below (the benchmark ``benchmarks/engine_overhead.py`` times it against a hand-written twin):

    for epoch:                       order = randperm(N, generator=data.order) (or 0..N-1)
        for batch in order:          x, y = train[idx]
            logits = model(x);       loss = cross_entropy(logits, y)
            loss.backward();         optimizer.step()
        evaluate on validation

As soon as an ``on_loss`` hook is present, per-sample losses are computed and handed to it before the
reduction, so a hook can reweight samples (without one, the fused reduction gives the same gradients
bit for bit). A non-finite
training loss ends the run with status ``diverged`` (no exception), and the record says where.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dicelab.config import RunConfig, TrainConfig
from dicelab.data import DataBundle, Split, load_dataset
from dicelab.errors import ConfigError
from dicelab.hooks import EpochPlan, Hook, HookList, StepState
from dicelab.models import build_model
from dicelab.optim import build_optimizer
from dicelab.seeding import SeedBank
from dicelab.threads import num_threads
from dicelab.train.checkpoint import load_checkpoint, save_checkpoint
from dicelab.train.record import library_versions, new_run_dir, utc_now, write_json_atomic
from dicelab.train.schedules import lr_at_epoch
from dicelab.train.sections import hooks_from_config

__all__ = ["Trainer", "evaluate", "resolve_device", "load_data_for", "build_model_for"]

EVAL_BATCH = 1024


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_data_for(config: RunConfig) -> DataBundle:
    d = config.data
    return load_dataset(d.name, data_dir=d.data_dir, download=d.download, val_fraction=d.val_fraction,
                        standardize=d.standardize, **d.options)


def build_model_for(config: RunConfig, data: DataBundle, seeds: SeedBank) -> nn.Module:
    """Build the configured model with its weights drawn from the run's ``init`` stream.

    Module constructors draw from the global RNG; forking it keeps the caller's global state untouched
    while making the initialisation a function of (root seed, "init") alone.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds.seed("init"))
        return build_model(config.model.name, data.input_shape, data.num_classes, **config.model.build_kwargs())


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = EVAL_BATCH) -> dict[str, float | None]:
    """Mean cross-entropy and accuracy of ``model`` (in eval mode) on ``split``; hard labels."""
    if len(split) == 0:
        return {"loss": None, "accuracy": None}
    was_training = model.training
    model.eval()
    loss_sum = 0.0
    correct = 0
    for start in range(0, len(split), batch_size):
        x, y = split.x[start:start + batch_size], split.y[start:start + batch_size]
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(dim=1) == y).sum())
    model.train(was_training)
    return {"loss": loss_sum / len(split), "accuracy": correct / len(split)}


class Trainer:
    """Train ``config``'s model on its dataset, calling ``hooks`` at the named points.

    ``data`` and ``model`` may be passed in (e.g. a notebook's own ``nn.Module``); otherwise they are
    built from the config. ``seeds`` defaults to ``SeedBank(config.seed)``.
    """

    def __init__(self, config: RunConfig, hooks: Sequence[Hook] = (), *, data: DataBundle | None = None,
                 model: nn.Module | None = None, seeds: SeedBank | None = None, quiet: bool = False) -> None:
        self.config = config
        self.seeds = seeds or SeedBank(config.seed)
        self.device = resolve_device(config.train.device)
        self.data = (data if data is not None else load_data_for(config)).to(self.device)
        # Hooks from the config's own sections ([randomness], [memorization]) run before the caller's.
        self.hooks = HookList([*hooks_from_config(config, self.seeds, self.device, self.data), *hooks])
        self.train_config: TrainConfig = self.hooks.configure(config.train)
        tc = self.train_config
        model = model if model is not None else build_model_for(config, self.data, self.seeds)
        self.model = self.hooks.wrap_model(model.to(self.device))
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(tc.optimizer, self.params, lr=tc.lr, momentum=tc.momentum,
                                         weight_decay=tc.weight_decay, **tc.optimizer_options)
        self.hooks.attach(self.optimizer)
        self.order_generator = self.seeds.generator("data.order")
        self.state = StepState(epoch=0, epochs=tc.epochs, step=0, batch_size=tc.batch_size, lr=tc.lr)
        self.history: list[dict[str, Any]] = []
        self.status = "running"
        self.reason: str | None = None
        self.quiet = quiet
        self.timings = {"train_s": 0.0, "eval_s": 0.0}

    # -- one epoch -------------------------------------------------------------------------------
    def _epoch_plan(self, epoch: int) -> EpochPlan:
        tc = self.train_config
        lr = lr_at_epoch(tc, epoch) if tc.scheduler != "constant" else self.optimizer.param_groups[0]["lr"]
        plan = EpochPlan(lr=lr, batch_size=self.state.batch_size)
        self.hooks.on_epoch(self.state, plan)
        for group in self.optimizer.param_groups:
            group["lr"] = plan.lr
        self.state.lr, self.state.batch_size = plan.lr, plan.batch_size
        if plan.order is None:
            n = len(self.data.train)
            plan.order = (torch.randperm(n, generator=self.order_generator) if tc.shuffle
                          else torch.arange(n))
        return plan

    def train_epoch(self, plan: EpochPlan) -> dict[str, Any]:
        """Run one epoch of optimizer steps over ``plan.order``; returns training metrics."""
        model, optimizer, hooks, state, params = self.model, self.optimizer, self.hooks, self.state, self.params
        x_all, y_all = self.data.train.x, self.data.train.y
        order = plan.order.to(x_all.device)
        bs = plan.batch_size
        reduction = self.train_config.loss_reduction
        mean = reduction == "mean"
        clip = self.train_config.grad_clip
        limit = self.train_config.diverge_threshold or math.inf
        on_batch, on_loss = hooks.active("on_batch"), hooks.active("on_loss")
        on_grads, before, after = hooks.active("on_grads"), hooks.active("before_step"), hooks.active("after_step")
        loss_sum = 0.0
        # Predictions are stored per step and compared once at the end: one argmax per step, nothing more.
        predictions = torch.empty(len(order), dtype=torch.int64, device=x_all.device)
        seen = 0
        model.train()
        for start in range(0, len(order), bs):
            idx = order[start:start + bs]
            x, y = x_all[idx], y_all[idx]
            target = y
            if on_batch:
                x, target = hooks.on_batch(x, y, state)
            logits = model(x)
            if on_loss:
                per_sample = F.cross_entropy(logits, target, reduction="none")
                clean_sum = per_sample.detach().sum()  # the logged loss is the un-noised one
                per_sample = hooks.on_loss(per_sample, state)
                loss = per_sample.mean() if mean else per_sample.sum()
            else:
                # Without an on_loss hook nobody needs the per-sample vector: the fused reduction gives
                # bit-identical gradients (tests/test_engine.py checks it) and saves ~15% of a small step.
                loss = F.cross_entropy(logits, target, reduction=reduction)
            value = loss.item() if mean else loss.item() / len(idx)  # one sync per step, as loss.item() in any loop
            if not value <= limit:  # also true for nan
                self.status = "diverged"
                what = "non-finite training loss" if not math.isfinite(value) else (
                    f"training loss above train.diverge_threshold={limit:g}")
                self.reason = f"{what} ({value:.4g}) at epoch {state.epoch}, step {state.step}"
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if on_grads:
                hooks.on_grads(params, state)
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            if before:
                hooks.before_step(params, state)
            optimizer.step()
            state.step += 1
            if after:
                hooks.after_step(params, state)
            loss_sum += clean_sum.item() if on_loss else value * len(idx)
            torch.argmax(logits.detach(), dim=1, out=predictions[start:start + bs])
            seen += len(idx)
        if not seen:
            return {"train_loss": None, "train_accuracy": None, "steps": state.step}
        correct = (predictions[:seen] == y_all[order[:seen]]).sum().item()
        return {"train_loss": loss_sum / seen, "train_accuracy": correct / seen, "steps": state.step}

    # -- the run ---------------------------------------------------------------------------------
    def fit(self, *, out_dir: str | Path | None = None, resume_from: str | Path | None = None,
            write: bool = True) -> dict[str, Any]:
        """Train for ``train.epochs`` epochs (continuing a checkpoint if given) and return the run record.

        With ``write`` the record is (re)written to ``<out_dir>/record.json`` after every epoch and a
        checkpoint to ``checkpoint.pt`` when ``output.checkpoint``; ``out_dir`` defaults to a new folder
        under ``output.dir`` (an existing run folder is never overwritten).
        """
        started = time.perf_counter()
        start_epoch = 0
        if resume_from is not None:
            start_epoch = self.load(resume_from)
        run_dir = None
        if write:
            run_dir = Path(out_dir) if out_dir is not None else new_run_dir(
                self.config.output.dir, self.config.name, self.config.seed)
            if (run_dir / "record.json").exists():
                raise ConfigError(f"{run_dir}: already holds a run record; choose another output folder")
            run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = run_dir
        self.started_at = utc_now()
        self.resumed_from = str(resume_from) if resume_from is not None else None
        try:
            self._run_epochs(start_epoch, run_dir, started)
        except KeyboardInterrupt:
            # Keep what was done: the record says where the run stopped; the last checkpoint stays valid.
            self.status, self.reason = "interrupted", f"interrupted during epoch {self.state.epoch}"
            if run_dir is not None:
                write_json_atomic(run_dir / "record.json", self.record(time.perf_counter() - started))
            raise
        if self.status == "running":
            self.status = "completed"
        record = self.record(time.perf_counter() - started, final=True)
        if run_dir is not None:
            write_json_atomic(run_dir / "record.json", record)
            record["path"] = str(run_dir / "record.json")
        return record

    def _run_epochs(self, start_epoch: int, run_dir: Path | None, started: float) -> None:
        tc = self.train_config
        with num_threads(tc.threads), _progress(tc.epochs, self.quiet or not tc.progress, self.config.name) as bar:
            if start_epoch:
                bar.advance(start_epoch)
            for epoch in range(start_epoch, tc.epochs):
                self.state.epoch = epoch
                t0 = time.perf_counter()
                plan = self._epoch_plan(epoch)
                metrics = {"epoch": epoch, "lr": plan.lr, "batch_size": plan.batch_size}
                metrics.update(self.train_epoch(plan))
                t1 = time.perf_counter()
                val = evaluate(self.model, self.data.val)
                metrics.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
                if self.status == "running" and val["loss"] is not None and not math.isfinite(val["loss"]):
                    self.status, self.reason = "diverged", f"non-finite validation loss at epoch {epoch}"
                self.hooks.on_epoch_end(self.state, metrics)
                # A hook may end the run early (a study's cut or pruner): metrics["stop"] = (status, reason).
                stop = metrics.pop("stop", None)
                if stop is not None and self.status == "running":
                    self.status, self.reason = stop
                t2 = time.perf_counter()
                metrics.update(train_s=t1 - t0, eval_s=t2 - t1)
                self.timings["train_s"] += t1 - t0
                self.timings["eval_s"] += t2 - t1
                self.history.append(metrics)
                bar.update(epoch + 1, metrics)
                if self.status != "running":
                    break
                if run_dir is not None:
                    if self.config.output.checkpoint:
                        self.save(run_dir / "checkpoint.pt", next_epoch=epoch + 1)
                    write_json_atomic(run_dir / "record.json", self.record(time.perf_counter() - started))

    def record(self, elapsed_s: float, final: bool = False) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        summary: dict[str, Any] = {
            "epochs_completed": len(self.history),
            "steps": self.state.step,
            "train_loss": last.get("train_loss"),
            "val_loss": last.get("val_loss"),
            "val_accuracy": last.get("val_accuracy"),
        }
        if final:
            # Test data is read once, at the end, on the final weights; a diverged model has no test score
            # (a run a hook stopped early, e.g. a study's cut, has one: its weights are finite).
            test = evaluate(self.model, self.data.test) if self.status != "diverged" else {"loss": None, "accuracy": None}
            summary.update(test_loss=test["loss"], test_accuracy=test["accuracy"])
        return {
            "dicelab_record": 1,
            "name": self.config.name,
            "status": self.status,
            "reason": self.reason,
            "seed": self.config.seed,
            "seeds": dict(self.seeds.used),  # every randomness source this run drew from
            "config": json.loads(self.config.model_dump_json()),
            "train_config": json.loads(self.train_config.model_dump_json()),
            "data": {"name": self.data.name, **self.data.sizes(), "num_classes": self.data.num_classes,
                     "input_shape": list(self.data.input_shape)},
            "model": {"parameters": sum(p.numel() for p in self.hooks.unwrap(self.model).parameters())},
            "device": str(self.device),
            "epochs": self.history,
            "final": summary,
            "timings": {**self.timings, "total_s": elapsed_s},
            "started_at": getattr(self, "started_at", None),
            "finished_at": utc_now() if final else None,
            "resumed_from": getattr(self, "resumed_from", None),
            "versions": library_versions(),
        }

    # -- checkpoints -----------------------------------------------------------------------------
    def save(self, path: str | Path, next_epoch: int) -> None:
        save_checkpoint(path, {
            "model": self.hooks.unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "next_epoch": next_epoch,
            "step": self.state.step,
            "batch_size": self.state.batch_size,
            "lr": self.optimizer.param_groups[0]["lr"],
            "order_generator": self.order_generator.get_state(),
            "hooks": self.hooks.state_dict(),
            "history": json.dumps(self.history),
            "timings": json.dumps(self.timings),
            "config": self.config.model_dump_json(),
        })

    def load(self, path: str | Path) -> int:
        """Restore a checkpoint written by :meth:`save`; returns the epoch to continue from."""
        ckpt = load_checkpoint(path, map_location=self.device)
        if json.loads(ckpt["config"])["model"] != json.loads(self.config.model_dump_json())["model"]:
            raise ConfigError(f"{path}: checkpoint was written for a different model config")
        self.hooks.unwrap(self.model).load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.order_generator.set_state(ckpt["order_generator"])
        self.hooks.load_state_dict(ckpt["hooks"])
        self.state.step = int(ckpt["step"])
        self.state.batch_size = int(ckpt["batch_size"])
        self.history = json.loads(ckpt["history"])
        self.timings = json.loads(ckpt["timings"])
        return int(ckpt["next_epoch"])


class _progress:
    """A rich progress bar over epochs; silent when not on a terminal or when quiet."""

    def __init__(self, epochs: int, quiet: bool, name: str) -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self.epochs, self.name = epochs, name

    def __enter__(self) -> _progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("{task.fields[info]}"), transient=False)
            self.bar.__enter__()
            self.task = self.bar.add_task(self.name, total=self.epochs, info="")
        return self

    def advance(self, n: int) -> None:
        if self.enabled:
            self.bar.update(self.task, completed=n)

    def update(self, done: int, m: dict[str, Any]) -> None:
        if self.enabled:
            info = f"loss {m['train_loss']:.4f}" if m.get("train_loss") is not None else ""
            if m.get("val_accuracy") is not None:
                info += f"  val acc {m['val_accuracy']:.4f}"
            self.bar.update(self.task, completed=done, info=info)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)
