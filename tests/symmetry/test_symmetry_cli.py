"""``dicelab symmetry`` commands (spec 06 §9; acceptance 17): run folders, outputs, one-line errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dicelab.config import load_run_config
from dicelab.symmetry.io import load_model
from dicelab.train import Trainer

_RUNS: dict[int, object] = {}


def _run_dir(tmp_path_factory, seed: int):
    """A digits run folder (64-16-10 tanh, 3 epochs) with record.json and checkpoint.pt."""
    if seed not in _RUNS:
        out = tmp_path_factory.mktemp(f"run{seed}")
        cfg = load_run_config(data={
            "name": "cli", "seed": seed, "data": {"name": "digits", "val_fraction": 0.0, "options": {"train_size": 1437}},
            "model": {"name": "mlp", "widths": [16], "activation": "tanh"},
            "train": {"epochs": 3, "batch_size": 64, "optimizer": "momentum", "lr": 0.05, "progress": False,
                      "threads": 1}})
        Trainer(cfg, quiet=True).fit(out_dir=out)
        _RUNS[seed] = out
    return _RUNS[seed]


@pytest.fixture
def runs(tmp_path_factory):
    return _run_dir(tmp_path_factory, 0), _run_dir(tmp_path_factory, 1)


def test_help_has_examples(run_cli):
    for cmd in ("count", "canonicalize", "align", "barrier", "spectrum"):
        code, out, _ = run_cli("symmetry", cmd, "--help")
        assert code == 0 and "Examples" in out and f"dicelab symmetry {cmd}" in out


def test_count_checkpoint_and_json(runs, tmp_path, run_cli):
    a, _ = runs
    target = tmp_path / "count.json"
    code, out, err = run_cli("symmetry", "count", str(a), "--exact", "--json", str(target))
    assert code == 0, err
    data = json.loads(target.read_text())
    assert data["exact"] == str(2 ** 16 * math.factorial(16))  # 16 tanh units: 16!·2^16
    assert f"log10 copies: {math.log10(math.factorial(16) * 2 ** 16):.4f}" in out
    code, _, err = run_cli("symmetry", "count", str(a), "--json", str(target))
    assert code == 2 and "already exists" in err and err.count("\n") == 1


def test_canonicalize_dedup_align_barrier_spectrum(runs, tmp_path, run_cli):
    a, b = runs
    code, out, err = run_cli("symmetry", "canonicalize", str(a), str(b), "--out", str(tmp_path / "canon"), "--dedup")
    assert code == 0, err
    assert "distinct solutions at tol 0: 2" in out
    ca = load_model(tmp_path / "canon" / f"{a.name}.canonical.pt")
    la = load_model(a)
    x = torch.rand(8, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(ca.model(x), la.model(x), rtol=1e-5, atol=1e-6)
    code, _, err = run_cli("symmetry", "canonicalize", str(a), "--out", str(tmp_path / "canon"))
    assert code == 2 and "already exists" in err

    aligned = tmp_path / "b_aligned.pt"
    code, out, err = run_cli("symmetry", "align", str(a), str(b), "--out", str(aligned))
    assert code == 0 and "weight matching" in out, err
    lb, lal = load_model(b), load_model(aligned)
    with torch.no_grad():
        torch.testing.assert_close(lal.model(x), lb.model(x), rtol=1e-5, atol=1e-6)

    plot = tmp_path / "curves.png"
    code, out, err = run_cli("symmetry", "barrier", str(a), str(b), "--align", "weight", "--points", "5", "--plot",
                             str(plot), "--json", str(tmp_path / "barrier.json"))
    assert code == 0, err
    assert plot.stat().st_size > 10000 and plot.read_bytes()[:4] == b"\x89PNG"
    res = json.loads((tmp_path / "barrier.json").read_text())
    assert res["barriers"]["after"]["train_loss"] < res["barriers"]["before"]["train_loss"]

    figs = tmp_path / "figs"
    code, out, err = run_cli("symmetry", "spectrum", str(a), "--k", "3", "--trace", "--noise", "--n-samples", "200",
                             "--sgd-law", "--chains", "4", "--steps", "60", "--burn-in", "20", "--eta-rel", "0.5",
                             "--plot-dir", str(figs))
    assert code == 0, err
    assert "tr(H) =" in out and "ratio_B2" in out
    for name in ("spectrum.png", "variance_per_direction.png"):
        assert (figs / name).read_bytes()[:4] == b"\x89PNG"


class _Custom:
    """A class that only an unrestricted pickle could restore."""

    def __init__(self) -> None:
        self.value = 1


def test_pickled_class_refused_and_existing_output_untouched(runs, tmp_path, run_cli):
    a, b = runs
    evil = tmp_path / "evil.pt"
    torch.save({"format": "dicelab.checkpoint/1", "arch": _Custom(), "state_dict": {}}, evil)
    code, _, err = run_cli("symmetry", "count", str(evil))
    assert code == 2 and err.count("\n") == 1 and str(evil) in err and "weights_only" in err
    existing = tmp_path / "keep.pt"
    existing.write_bytes(b"precious")
    code, _, err = run_cli("symmetry", "align", str(a), str(b), "--out", str(existing))
    assert code == 2 and "already exists" in err and err.count("\n") == 1
    assert existing.read_bytes() == b"precious"


def test_bare_state_dicts_and_mismatches(runs, tmp_path, run_cli):
    a, _ = runs
    state = load_model(a).model.state_dict()
    bare = tmp_path / "bare.pt"
    torch.save(state, bare)
    code, _, err = run_cli("symmetry", "count", str(bare))
    assert code == 2 and "pass --arch" in err
    code, out, err = run_cli("symmetry", "count", str(bare), "--arch", "mlp:64-16-10:tanh")
    assert code == 0 and f"log10 copies: {math.log10(math.factorial(16) * 2 ** 16):.4f}" in out, err
    code, _, err = run_cli("symmetry", "count", str(bare), "--arch", "mlp:64-12-10:tanh")
    assert code == 2 and str(bare) in err and "does not fit" in err and err.count("\n") == 1
    missing = tmp_path / "nokey.pt"
    torch.save({"format": "dicelab.checkpoint/1", "arch": {"name": "mlp:64-16-10"}}, missing)
    code, _, err = run_cli("symmetry", "count", str(missing))
    assert code == 2 and "missing key 'state_dict'" in err
