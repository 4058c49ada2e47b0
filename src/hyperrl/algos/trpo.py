"""TRPO's pieces in plain torch (TorchRL has none): conjugate gradient, the Fisher-vector product of a mean KL, and
the backtracking line search, configured as the authors' MAML outer step (hyperrl-paper.md §5.4).

One TRPO step on a loss ``L(θ)`` (to minimise) under ``KL(θ) = mean KL(π_θ ‖ π_old) ≤ δ``:

1. ``g = ∇L(θ₀)``; ``F v = ∇(∇KL(θ₀)·v) + damping·v`` (Hessian of the mean KL at θ₀, which is the Fisher matrix
   there, plus damping);
2. ``s = F⁻¹ g`` by ``cg_iterations`` steps of conjugate gradient;
3. full step ``Δ = s / √(sᵀF s / (2δ))`` (the step whose quadratic KL model equals δ);
4. ``θ = θ₀ − βᵏ Δ`` for k = 0, 1, ... ``max_steps − 1``: accept the first with ``L(θ) < L(θ₀)`` and
   ``KL(θ) < δ``; if none is accepted, θ₀ is restored bit for bit.

:func:`trpo_step` takes ``L`` and ``KL`` as tensors with autograd graphs to ``θ``; :func:`natural_gradient_step` takes
``g`` and the product ``v ↦ F v`` as given (e.g. compiled functions computed with :mod:`torch.func`) and does 2-4.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def flat(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate tensors into one vector ``(Σ numel,)``."""
    return torch.cat([t.reshape(-1) for t in tensors])


def conjugate_gradient(matvec: Callable[[Tensor], Tensor], b: Tensor, iterations: int = 10,
                       residual_tol: float = 1e-10) -> Tensor:
    """Approximately solve ``A x = b`` for a symmetric positive-definite ``A`` given as ``matvec(v) = A v``.

    Standard CG from ``x₀ = 0``: ``r = b − A x``, ``p`` the A-conjugate directions; stops early when ``rᵀr`` falls
    below ``residual_tol``. Exact after ``n`` iterations for an ``n × n`` system (in exact arithmetic).
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r.dot(r)
    for _ in range(int(iterations)):
        if rr <= residual_tol:
            break
        ap = matvec(p)
        alpha = rr / p.dot(ap)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = r.dot(r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def fisher_vector_product(kl: Tensor, params: Sequence[Tensor], damping: float = 1e-5) -> Callable[[Tensor], Tensor]:
    """``v ↦ ∇_θ(∇_θ KL · v) + damping·v`` for the scalar ``kl`` (built with a graph to ``params``).

    The first gradient is taken once (with ``create_graph``); every product is then one more backward pass through
    it, so CG's iterations do not redo the forward pass.
    """
    params = list(params)
    grads = flat(torch.autograd.grad(kl, params, create_graph=True))

    def product(v: Tensor) -> Tensor:
        hv = torch.autograd.grad(grads.dot(v.detach()), params, retain_graph=True)
        return flat(hv).detach() + damping * v

    return product


@dataclass
class LineSearchResult:
    """What the line search did: whether a step was accepted, its fraction ``βᵏ`` (0 if rejected), the number of
    candidates tried, and the loss and KL at the parameters kept."""

    accepted: bool
    fraction: float
    tries: int
    loss: float
    kl: float


@torch.no_grad()
def line_search(params: Sequence[Tensor], step: Tensor, evaluate: Callable[[], tuple[float, float]],
                old_loss: float, max_kl: float, ratio: float = 0.8, max_steps: int = 20) -> LineSearchResult:
    """Backtracking: set ``θ = θ₀ − βᵏ·step`` (in place) for k = 0..max_steps−1, call ``evaluate() -> (loss, kl)``
    at each, keep the first with ``loss < old_loss`` and ``kl < max_kl``. Otherwise restore θ₀ exactly (the saved
    tensors are copied back, so the parameters are bit-identical to before)."""
    params = list(params)
    saved = [p.detach().clone() for p in params]
    fraction = 1.0
    for k in range(int(max_steps)):
        offset = 0
        for p, p0 in zip(params, saved):
            n = p.numel()
            p.copy_(p0 - fraction * step[offset:offset + n].view_as(p0))
            offset += n
        loss, kl = evaluate()
        if loss < old_loss and kl < max_kl:
            return LineSearchResult(True, fraction, k + 1, float(loss), float(kl))
        fraction *= ratio
    for p, p0 in zip(params, saved):
        p.copy_(p0)
    return LineSearchResult(False, 0.0, int(max_steps), float(old_loss), 0.0)


def natural_gradient_step(params: Sequence[Tensor], grad: Tensor, fvp: Callable[[Tensor], Tensor], old_loss: float,
                          evaluate: Callable[[], tuple[float, float]], max_kl: float = 1e-2, cg_iterations: int = 10,
                          ratio: float = 0.8, max_steps: int = 20) -> LineSearchResult:
    """Steps 2-4 of the module docstring: ``params`` move in place along ``F⁻¹ g`` (``grad``: the flat gradient of
    the loss at θ₀, ``fvp(v) = F v`` with its damping, ``old_loss`` = L(θ₀)); ``evaluate()`` recomputes
    ``(loss, kl)`` at the current parameter values. Nothing moves if ``sᵀF s`` is not positive and finite."""
    direction = conjugate_gradient(fvp, grad, cg_iterations)
    shs = 0.5 * direction.dot(fvp(direction))
    if not torch.isfinite(shs) or shs <= 0:
        return LineSearchResult(False, 0.0, 0, float(old_loss), 0.0)
    step = direction / torch.sqrt(shs / max_kl)
    return line_search(params, step, evaluate, float(old_loss), max_kl, ratio, max_steps)


def trpo_step(params: Sequence[Tensor], loss: Tensor, kl: Tensor, evaluate: Callable[[], tuple[float, float]],
              max_kl: float = 1e-2, damping: float = 1e-5, cg_iterations: int = 10, ratio: float = 0.8,
              max_steps: int = 20) -> LineSearchResult:
    """One TRPO update of ``params`` in place (module docstring): ``loss`` and ``kl`` are scalars at θ₀ with graphs to
    ``params``; ``evaluate()`` recomputes ``(loss, kl)`` at the current parameter values."""
    params = list(params)
    grad = flat(torch.autograd.grad(loss, params, retain_graph=True)).detach()
    fvp = fisher_vector_product(kl, params, damping)
    return natural_gradient_step(params, grad, fvp, loss.item(), evaluate, max_kl, cg_iterations, ratio, max_steps)
