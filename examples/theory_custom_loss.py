"""Your own loss and noise in a few lines: Reg, the predicted flow on Γ, and a many-seed simulation check.

Loss: L(w) = ½ (w₁² + w₂² − 1)², zero on the unit circle Γ. Noise: multiplicative on w₁ only,
L̂(w, η) = ½ (w₁²(1 + η)² + w₂² − 1)². dicelab finds Reg = ½ ∂²_η L̂ = 2w₁⁴ on Γ by autograd, decides that
the regime is non-degenerate (Reg varies along Γ), integrates the projected flow dW/dτ₁ = −P_T∇Reg and
compares it with 500 noisy-GD chains in rescaled time τ₁ = ασ²k.

Run: python examples/theory_custom_loss.py
"""

from __future__ import annotations

import torch

from dicelab.theory import classify, compare, limit, make_objective, reg, simulate


def main(chains: int = 500, alpha: float = 0.05, quiet: bool = False) -> dict[str, float]:
    obj = make_objective(
        lambda w, e: 0.5 * ((w[:, 0] * (1 + e[:, 0])) ** 2 + w[:, 1] ** 2 - 1) ** 2,  # L̂(w, η)
        d=2, m=1, sigma=0.1,
        constraint=lambda w: (w**2).sum(-1, keepdim=True) - 1,  # Γ = {F = 0}
    )
    w0 = torch.tensor([0.8, 0.6], dtype=torch.float64)
    observables = {"w1^2": lambda w: w[:, 0] ** 2}
    cls = classify(obj, w0, alpha=alpha)
    r = reg(obj, w0)
    taus = [0.25, 0.5, 0.75, 1.0]
    traj = limit(obj, w0, taus, observables=observables, dtau=0.05)
    sim = simulate(obj, w0, alpha, tau=taus, chains=chains, observables=observables)
    cmp = compare(sim, traj, "w1^2")
    if not quiet:
        print("regime:", cls)
        print(f"Reg(w0) = {float(r.value[0]):.6f}   (closed form 2 w1^4 = {2 * 0.8**4:.6f})")
        for t, lim_v, sim_v in zip(sim.tau.tolist(), traj.mean("w1^2").tolist(), sim.proj["w1^2"].mean.tolist(),
                                   strict=False):
            print(f"  tau1 = {t:5.2f}   limit w1^2 = {lim_v:.4f}   simulated (projected mean) = {sim_v:.4f}")
        print(cmp)
    return {"reg": float(r.value[0]), "regime": cls.regime, "sup_error": cmp.sup_error,
            "final_limit": float(traj.mean("w1^2")[-1]), "final_sim": float(sim.proj["w1^2"].mean[-1])}


if __name__ == "__main__":
    main()
