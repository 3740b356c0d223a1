"""Error paths and smaller API pieces: divergence, retraction failure, Anti-PGD reporting, σ sweep."""

from __future__ import annotations

import pytest
import torch

from dicelab.theory import (
    RetractionError,
    SimulationDiverged,
    ZeroLossSet,
    anti_pgd,
    label_noise,
    sigma_sweep,
    simulate,
    weight_noise,
)
from dicelab.theory.experiments.e3 import make as e3_make
from dicelab.theory.experiments.e3 import p1
from dicelab.theory.losses import product_loss

W0 = torch.tensor([2.0, 0.5], dtype=torch.float64)


def test_divergence_names_alpha_step_chain():
    L = product_loss()
    obj = label_noise(L.model_fn, None, torch.ones(1), 1.0)
    with pytest.raises(SimulationDiverged, match=r"alpha=1.*step \d+, chain \d+.*alpha\*lambda_max"):
        simulate(obj, W0, 1.0, steps=500, regime="degenerate", chains=4, project=None)


def test_retraction_failure_names_chain_and_residual():
    Z = ZeroLossSet(product_loss())
    with pytest.raises(RetractionError, match=r"chain \d+ residual"):
        Z.retract(torch.tensor([[3.0, 3.0]]), max_iter=1)


def test_anti_pgd_reports_w_equal_z_plus_xi():
    L = product_loss()
    z_run = simulate(anti_pgd(L, 0.1, report="z"), W0, 0.02, steps=50, regime="trivial", chains=4000, project=None)
    wn_run = simulate(weight_noise(L, 0.1), W0, 0.02, steps=50, regime="trivial", chains=4000, project=None)
    assert torch.equal(z_run.final_raw, wn_run.final_raw)  # same recursion in z
    w_run = simulate(anti_pgd(L, 0.1, report="w"), W0, 0.02, steps=50, regime="trivial", chains=4000, project=None)
    xi = w_run.final_raw - z_run.final_raw  # the pending perturbation ξ_k
    assert abs(float(xi.std()) - 0.1) < 0.005 and float(xi.mean().abs()) < 0.005


def test_sigma_sweep_error_grows_with_sigma():
    res = sigma_sweep(e3_make("dropconnect", 0.2), torch.tensor([1.0, 0.5, 0.8, 0.4]), [0.2, 0.1], 0.04, p1,
                      [0.5], chains=2000, regime="non-degenerate")
    assert res.errors[0] > res.errors[1] > 0
