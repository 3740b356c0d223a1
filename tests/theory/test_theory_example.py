"""The custom-loss example runs and its simulation agrees with its predicted flow."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def test_custom_loss_example_runs():
    path = Path(__file__).resolve().parents[2] / "examples" / "theory_custom_loss.py"
    spec = importlib.util.spec_from_file_location("theory_custom_loss", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(quiet=True)
    assert out["regime"] == "non-degenerate"
    assert abs(out["reg"] - 2 * 0.8**4) <= 1e-9
    assert out["final_limit"] < 0.64 * 0.8  # the flow moves w1² down along the circle
    assert out["sup_error"] <= 0.02, out
