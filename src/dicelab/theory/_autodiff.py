"""Batched derivatives of per-chain functions.

Every function here takes a batched map ``f: (S, d) -> (S,)`` whose chains are independent (row ``s`` of
the output depends only on row ``s`` of the input). Derivatives of the chain *sum* are then per-chain
derivatives, so one reverse pass (or one HVP along a direction replicated over chains) serves all S chains
at once. All helpers are written with ``torch.func`` so they compose (``grad_reg`` differentiates
through the exact regulariser, the drift differentiates through the Hessian).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import Tensor
from torch.func import grad, jvp, vmap

from dicelab.threads import num_threads

# torch.func.jvp calls the deprecated torch.jit.script inside torch itself (torch 2.14); the warning is
# about torch's own code, says nothing to a dicelab user, and would print on every `dicelab theory run`.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

BatchedFn = Callable[[Tensor], Tensor]

_CHUNK = 256


def batched_grad(f: BatchedFn) -> BatchedFn:
    """``w (S,d) -> ∇f (S,d)`` per chain (gradient of the chain sum)."""
    return grad(lambda w: f(w).sum())


def _basis(S: int, d: int, like: Tensor) -> Tensor:
    """(d, S, d): direction ``e_j`` replicated over the S chains, for each j."""
    eye = torch.eye(d, dtype=like.dtype, device=like.device)
    return eye[:, None, :].expand(d, S, d)


def batched_hessian(f: BatchedFn, w: Tensor) -> Tensor:
    """Per-chain Hessians ``(S, d, d)`` by d forward-over-reverse HVPs (vmapped in chunks of 256)."""
    S, d = w.shape
    g = batched_grad(f)

    def hvp(v: Tensor) -> Tensor:
        return jvp(g, (w,), (v,))[1]

    cols = vmap(hvp, chunk_size=_CHUNK)(_basis(S, d, w))  # (d, S, d): column j of each Hessian
    return cols.permute(1, 2, 0)


def batched_jacobian(F: Callable[[Tensor], Tensor], w: Tensor) -> Tensor:
    """Per-chain Jacobian ``(S, M, d)`` of a batched map ``(S,d) -> (S,M)`` by d JVPs."""
    S, d = w.shape

    def col(v: Tensor) -> Tensor:
        return jvp(F, (w,), (v,))[1]

    cols = vmap(col, chunk_size=_CHUNK)(_basis(S, d, w))  # (d, S, M)
    return cols.permute(1, 2, 0)


def hessian_autograd(f: BatchedFn, x: Tensor, create_graph: bool = False) -> Tensor:
    """Per-chain Hessians (S, d, d) by d plain-autograd double-backward passes.

    Much faster than the torch.func version on small d (no functorch dispatch overhead); not composable with
    torch.func transforms, but differentiable with ``create_graph=True`` (``x`` must require grad then).
    """
    with torch.enable_grad():
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(f(x).sum(), x, create_graph=True)
        d = x.shape[1]
        rows = [torch.autograd.grad(g[:, j].sum(), x, create_graph=create_graph, retain_graph=True)[0]
                for j in range(d)]
    return torch.stack(rows, dim=1)


@contextmanager
def threads_for(setting: str | int, size: int):
    """``"auto"``: one intra-op thread while the batch is small (S·d ≤ 2·10⁵), restored afterwards.

    On tiny tensors intra-op threading costs more than it saves (up to 10× slower on 2 threads).
    """
    want: int | None = None
    if setting == "auto":
        want = 1 if size <= 200_000 else None
    elif isinstance(setting, int):
        want = setting
    with num_threads(want):
        yield
