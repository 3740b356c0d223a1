"""The zero-loss set Γ: projectors, spectrum, retraction, gradient-flow limit map Φ, degenerate drift."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import vjp

from dicelab.theory._autodiff import batched_hessian, hessian_autograd, threads_for
from dicelab.theory.errors import RetractionError
from dicelab.theory.objective import Loss, NoisyObjective, as_loss

__all__ = ["ZeroLossSet", "Spectrum", "as_batch"]


def as_batch(w: Tensor | list | tuple, dtype: torch.dtype = torch.float64) -> Tensor:
    """Parameters as a (S, d) float64 tensor (a single point becomes S = 1)."""
    w = torch.as_tensor(w, dtype=dtype)  # manifold tools need float64 (1e-12 retractions)
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2:
        raise ValueError(f"parameters must have shape (S, d) or (d,), got {tuple(w.shape)}")
    return w


@dataclass
class Spectrum:
    """Non-zero part of the Hessian spectrum per chain: λ⁺_min (the fast contraction rate), λ_max, rank M."""

    lam_min_plus: Tensor
    lam_max: Tensor
    rank: int


class ZeroLossSet:
    """Γ = {L = 0} of an objective (or a :class:`Loss`), given by constraints F or implicitly by rank ∇²L.

    With F: P_N projects onto range DFᵀ and retraction is min-norm Gauss–Newton. Without F: the normal space
    is the top-M eigenspace of ∇²L (M = ``rank`` or the count of eigenvalues > ``rank_rtol``·λ_max).
    """

    def __init__(
        self,
        obj: NoisyObjective | Loss | Callable[[Tensor], Tensor],
        constraint: Callable[[Tensor], Tensor] | None = None,
        rank: int | None = None,
        rank_rtol: float = 1e-8,
    ) -> None:
        self.base = obj.base if isinstance(obj, NoisyObjective) else as_loss(obj)
        self.loss = self.base.fn
        self.F = constraint if constraint is not None else (self.base._constraint if self.base.has_constraint else None)
        self._rank = rank
        self.rank_rtol = rank_rtol

    # -- local geometry --------------------------------------------------------------------------
    def hessian(self, w: Tensor) -> Tensor:
        """∇²L per chain, (S, d, d)."""
        w = as_batch(w)
        if w.shape[1] <= 64:  # plain autograd: far less dispatch overhead on small problems
            return hessian_autograd(self.loss, w).detach()
        return batched_hessian(self.loss, w)

    def grad(self, w: Tensor) -> Tensor:
        """∇L per chain, (S, d)."""
        return self._grad_autograd(as_batch(w))

    def _grad_autograd(self, w: Tensor) -> Tensor:
        return self.base.gradient(w)

    def rank(self, w: Tensor | None = None) -> int:
        """M = codimension of Γ."""
        if self._rank is not None:
            return self._rank
        if self.F is not None and w is not None:
            return int(self.F(as_batch(w)[:1]).shape[-1])
        if w is None:
            raise ValueError("rank unknown without a point")
        ev = torch.linalg.eigvalsh(self.hessian(as_batch(w)[:1]))[0]
        return int((ev > self.rank_rtol * ev[-1].clamp_min(1e-300)).sum())

    def constraint_jacobian(self, w: Tensor) -> Tensor:
        """DF per chain, (S, M, d)."""
        if self.F is self.base._constraint:
            DF = self.base.constraint_jacobian(w)
            if DF is not None:
                return DF
        return self._F_and_jacobian(w)[1]

    def _F_and_jacobian(self, w: Tensor) -> tuple[Tensor, Tensor]:
        assert self.F is not None
        # plain autograd, one backward pass per constraint: much cheaper than torch.func on small tensors,
        # and retraction runs at every recorded step of a simulation
        with torch.enable_grad():
            x = w.detach().requires_grad_(True)
            Fx = self.F(x)
            M = Fx.shape[-1]
            rows = [torch.autograd.grad(Fx[:, i].sum(), x, retain_graph=i < M - 1)[0] for i in range(M)]
        return Fx.detach(), torch.stack(rows, dim=1)

    def normal_basis(self, w: Tensor) -> Tensor:
        """Orthonormal basis of the normal space, (S, d, M)."""
        w = as_batch(w)
        if self.F is not None:
            DF = self.constraint_jacobian(w)
            if DF.shape[1] == 1:  # codimension 1: normalise; batched QR of d×1 matrices is slow
                return (DF[:, 0, :] / DF[:, 0, :].norm(dim=-1, keepdim=True))[..., None]
            Q, _ = torch.linalg.qr(DF.transpose(-1, -2))
            return Q
        M = self.rank(w)
        _, V = torch.linalg.eigh(self.hessian(w))
        return V[..., -M:]

    def normal_projector(self, w: Tensor) -> Tensor:
        Q = self.normal_basis(w)
        return Q @ Q.transpose(-1, -2)

    def tangent_projector(self, w: Tensor) -> Tensor:
        """P_T = I − DFᵀ(DF DFᵀ)⁻¹DF per chain, (S, d, d) (computed through a QR of DFᵀ: symmetric, idempotent)."""
        w = as_batch(w)
        eye = torch.eye(w.shape[1], dtype=w.dtype)
        return eye - self.normal_projector(w)

    def spectrum(self, w: Tensor) -> Spectrum:
        """λ⁺_min, λ_max and the rank M of ∇²L at w (on Γ the non-zero eigenvalues are the top M)."""
        w = as_batch(w)
        ev = torch.linalg.eigvalsh(self.hessian(w))
        M = self.rank(w)
        return Spectrum(ev[:, -M], ev[:, -1], M)

    # -- retraction ---------------------------------------------------------------------------
    def _retract(self, w: Tensor, tol: float, max_iter: int) -> tuple[Tensor, Tensor, int]:
        w = as_batch(w).clone()
        it = 0
        for it in range(max_iter + 1):  # noqa: B007 - the count is returned
            if self.F is not None:
                Fw = self.F(w)
                res = Fw.norm(dim=-1)
                active = res > tol
                if not bool(active.any()) or it == max_iter:
                    break
                DF = self.constraint_jacobian(w)
                if DF.shape[1] == 1:
                    n = DF[:, 0, :]
                    step = n * (Fw / (n * n).sum(-1, keepdim=True))
                else:
                    step = (DF.transpose(-1, -2) @ torch.linalg.solve(DF @ DF.transpose(-1, -2), Fw[..., None]))[..., 0]
            else:
                g = self.grad(w)
                H = self.hessian(w)
                ev, V = torch.linalg.eigh(H)
                M = self.rank(w)
                Vn, lam = V[..., -M:], ev[..., -M:]
                step = (Vn @ ((Vn.transpose(-1, -2) @ g[..., None]) / lam[..., None]))[..., 0]
                res = step.norm(dim=-1)
                active = res > tol
                if not bool(active.any()) or it == max_iter:
                    break
            w = torch.where(active[:, None], w - step, w)
        return w, res, it

    def retract(self, w: Tensor, tol: float = 1e-12, max_iter: int = 20) -> Tensor:
        """Min-norm Gauss–Newton ``w ← w − DFᵀ(DF DFᵀ)⁻¹F`` (Newton on the top-M eigenspace without F),
        quadratically convergent; raises :class:`RetractionError` naming the worst chain if ‖F‖ > tol."""
        out, res, _ = self._retract(w, tol, max_iter)
        bad = ~(res <= tol)
        if bool(bad.any()):
            i = int(torch.nan_to_num(res, nan=float("inf")).argmax())
            raise RetractionError(
                f"retraction onto Γ failed: chain {i} residual {float(res[i]):.3e} > tol {tol:g} after "
                f"{max_iter} iterations ({int(bad.sum())} of {len(res)} chains)"
            )
        return out

    def retract_report(self, w: Tensor, tol: float = 1e-12, max_iter: int = 20) -> tuple[Tensor, Tensor, int]:
        """Like :meth:`retract` but returns (w, residual per chain, iterations) instead of raising."""
        return self._retract(w, tol, max_iter)

    # -- gradient-flow limit map ------------------------------------------------------------------
    def phi(self, w: Tensor, tol: float = 1e-13, max_steps: int = 100_000, near: float = 1e-7) -> Tensor:
        """Φ(w) = lim x(t), ẋ = −∇L(x), x(0) = w: batched RK4 with step 0.2/λ_max(x₀) per chain until
        ‖∇L‖ ≤ tol; a chain within ``near`` of Γ (‖F‖) finishes with :meth:`retract` (difference O(1e-14)).

        Far from Γ the step follows the curvature (re-checked every 16 steps, and a step that raises L is
        rejected and quartered), so starts deep inside a curved Γ converge too."""
        x = as_batch(w).clone()
        with threads_for("auto", x.numel()):
            return self._phi(x, tol, max_steps, near)

    def _phi(self, x: Tensor, tol: float, max_steps: int, near: float) -> Tensor:
        S = x.shape[0]
        # spectral radius, not λ_max: far inside a curved Γ the Hessian can be indefinite
        lam = torch.linalg.eigvalsh(self.hessian(x)).abs().amax(-1).clamp_min(1e-12)
        h = (0.2 / lam)[:, None]
        active = torch.arange(S)
        g = self._grad_autograd
        for step in range(max_steps):
            if step and step % 16 == 0:
                # the curvature can grow along the path (from deep inside a curved Γ towards it): keep
                # h ≤ 0.2/ρ(H) so RK4 stays far from its stability edge (hρ ≈ 2.8), where it crawls
                rho = torch.linalg.eigvalsh(self.hessian(x[active])).abs().amax(-1).clamp_min(1e-12)
                h[active] = torch.minimum(h[active], (0.2 / rho)[:, None])
            xa, ha = x[active], h[active]
            k1 = -g(xa)
            done = k1.norm(dim=-1) <= tol
            if self.F is not None:
                close = self.F(xa).norm(dim=-1) <= near
                if bool(close.any()):
                    x[active[close]] = self.retract(xa[close])
                done = done | close
            keep = ~done
            if not bool(keep.any()):
                active = active[keep]
                break
            active, xa, ha, k1 = active[keep], xa[keep], ha[keep], k1[keep]
            k2 = -g(xa + 0.5 * ha * k1)
            k3 = -g(xa + 0.5 * ha * k2)
            k4 = -g(xa + ha * k3)
            xn = xa + ha / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            # safeguard: L decreases along the flow; a step that raises it overshot (the curvature grew since
            # x₀, e.g. from deep inside a curved Γ): reject it and quarter that chain's step
            up = self.loss(xn) > self.loss(xa) * (1 + 1e-12) + 1e-300
            if bool(up.any()):
                h[active[up]] = ha[up] / 4
                xn = torch.where(up[:, None], xa, xn)
            x[active] = xn
        if active.numel():
            i = int(active[0])
            raise RetractionError(f"phi: gradient flow of chain {i} did not reach ‖∇L‖ ≤ {tol:g} in {max_steps} steps")
        return x

    # -- degenerate drift -------------------------------------------------------------------------
    def degenerate_drift(self, w: Tensor, Sigma: Tensor, method: str = "closed", eps: float = 2e-3) -> Tensor:
        """b = ½ ∂²Φ(w)[Σ] on Γ, (S, d).

        ``"closed"``: b = −½ H⁺∇³L[Σ_∥] − P_T∇³L[H⁺Σ_Δ] − ½ P_T∇³L[S] (LWA), ∇³L[M] by autograd of
        ⟨∇²L, M⟩, S from the Lyapunov equation HS + SH = Σ_⊥ in H's eigenbasis. ``"fd"``: central second
        differences of Φ along the eigenvectors of Σ (step ``eps``).
        """
        w = as_batch(w)
        S_, d = w.shape
        Sigma = torch.as_tensor(Sigma, dtype=w.dtype)
        if Sigma.ndim == 2:
            Sigma = Sigma.expand(S_, d, d)
        if method == "fd":
            mu, V = torch.linalg.eigh(Sigma)  # (S,d), (S,d,d) columns are v_k
            dirs = V.transpose(-1, -2)  # (S, d_k, d)
            pts = torch.cat([(w[:, None, :] + eps * dirs).reshape(-1, d), (w[:, None, :] - eps * dirs).reshape(-1, d)])
            both = self.phi(pts)  # one batched flow for all 2d points
            plus, minus = both[: S_ * d].reshape(S_, d, d), both[S_ * d:].reshape(S_, d, d)
            second = (plus - 2 * w[:, None, :] + minus) / eps**2
            return 0.5 * (mu[..., None] * second).sum(1)
        if method != "closed":
            raise ValueError(f"method must be 'closed' or 'fd', got {method!r}")
        M = self.rank(w)
        H, hess_vjp = vjp(lambda x: batched_hessian(self.loss, x), w)
        ev, V = torch.linalg.eigh(H)
        Vn, lam = V[..., -M:], ev[..., -M:]
        PN = Vn @ Vn.transpose(-1, -2)
        PT = torch.eye(d, dtype=w.dtype) - PN
        Hp = Vn @ (Vn.transpose(-1, -2) / lam[..., None])
        Sig_par = PT @ Sigma @ PT
        Sig_delta = PT @ Sigma @ PN + PN @ Sigma @ PT
        St = Vn.transpose(-1, -2) @ Sigma @ Vn
        St = St / (lam[..., :, None] + lam[..., None, :])
        Slyap = Vn @ St @ Vn.transpose(-1, -2)

        def contract(Mx: Tensor) -> Tensor:
            return hess_vjp(0.5 * (Mx + Mx.transpose(-1, -2)))[0]

        g1 = contract(Sig_par)
        g23 = contract(Hp @ Sig_delta + 0.5 * Slyap)
        return -0.5 * (Hp @ g1[..., None])[..., 0] - (PT @ g23[..., None])[..., 0]

    def drift_hessian_aligned(self, w: Tensor, c: float, trace: Callable[[Tensor], Tensor] | None = None,
                              PT: Tensor | None = None) -> Tensor:
        """Σ = c·H: b = −(c/4) P_T ∇tr H (``trace`` may replace tr H by a function with the same tangential
        gradient on Γ, e.g. tr G for squared losses)."""
        w = as_batch(w)
        tr = trace if trace is not None else self.base.trace_hessian
        with torch.enable_grad():
            x = w.detach().requires_grad_(True)
            (gt,) = torch.autograd.grad(tr(x).sum(), x)
        PT = self.tangent_projector(w) if PT is None else PT
        return -(c / 4) * (PT @ gt[..., None])[..., 0]

    def log_det_plus(self, w: Tensor) -> Tensor:
        """log det₊ ∇²L: the sum of the logs of the top-M eigenvalues, (S,)."""
        w = as_batch(w)
        M = self.rank(w)
        return torch.log(torch.linalg.eigvalsh(batched_hessian(self.loss, w))[..., -M:]).sum(-1)

    def drift_isotropic(self, w: Tensor, PT: Tensor | None = None) -> Tensor:
        """Σ = I: the tangential drift P_T b = −¼ P_T ∇ log det₊H (the normal part comes from retraction).

        Valid on Γ (where the integrators call it)."""
        w = as_batch(w)
        M = self.rank(w)
        with torch.enable_grad():
            x = w.detach().requires_grad_(True)
            H = hessian_autograd(self.loss, x, create_graph=True)
            if M == 1:
                # on Γ the only non-zero eigenvalue is tr H, along Γ too: same tangential gradient, and it avoids
                # thousands of tiny batched eigendecompositions
                logdet = torch.log(H.diagonal(dim1=-2, dim2=-1).sum(-1)).sum()
            else:
                logdet = torch.log(torch.linalg.eigvalsh(H)[..., -M:]).sum()
            (gl,) = torch.autograd.grad(logdet, x)
        PT = self.tangent_projector(w) if PT is None else PT
        return -0.25 * (PT @ gl[..., None])[..., 0]
