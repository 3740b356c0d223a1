"""Fixtures of the memorization tests: one thread, and the shared 20-epoch digits-mlp run."""

from __future__ import annotations

import warnings

import pytest
import torch
from _mem_support import digits_mlp


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny tensors: one intra-op thread is faster and immune to a busy second core
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="memorization: RLP heads hold")
        yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def mlp20():
    """digits-mlp, 20 epochs, seed 0, λ = 0, tap act3 (= h3), with a checkpoint (checks 3, 7 and 8)."""
    import tempfile
    from pathlib import Path

    from dicelab.memorization.experiments import run

    folder = Path(tempfile.mkdtemp(prefix="dicelab-mem-"))
    cfg = digits_mlp(20, memorization={"taps": ["act3"], "num_labels": 100}, output={"checkpoint": True})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="memorization: RLP heads hold")
        res = run(cfg, out_dir=folder / "run", plots=False)
    return res
