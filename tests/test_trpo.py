"""TRPO pieces: conjugate gradient, the Fisher-vector product of the mean KL, the line search, one whole step."""

from __future__ import annotations

import math

import pytest
import torch

from hyperrl.algos.maml import normal_kl
from hyperrl.algos.trpo import conjugate_gradient, fisher_vector_product, flat, line_search, trpo_step
from hyperrl.nn import make_policy


def _spd(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    return a @ a.T + n * torch.eye(n, dtype=torch.float64)


def test_conjugate_gradient_solves_a_known_spd_system():
    a = _spd(6)
    x_true = torch.arange(1.0, 7.0, dtype=torch.float64)
    b = a @ x_true
    x = conjugate_gradient(lambda v: a @ v, b, iterations=6, residual_tol=0.0)
    assert torch.allclose(x, x_true, atol=1e-9)
    # fewer iterations than the dimension: not yet the solution, but a smaller residual than x = 0
    x2 = conjugate_gradient(lambda v: a @ v, b, iterations=2)
    assert 0 < (a @ x2 - b).norm() < b.norm()


def test_conjugate_gradient_stops_on_a_zero_right_hand_side():
    x = conjugate_gradient(lambda v: v, torch.zeros(3, dtype=torch.float64))
    assert torch.equal(x, torch.zeros(3, dtype=torch.float64))


def test_fisher_vector_product_matches_the_explicit_fisher_matrix():
    """For a Gaussian policy with state-dependent mean μ_θ(s) and a state-independent log σ, the Fisher matrix of
    the mean KL is F = mean_s Jᵀ diag(1/σ², 2) J, J = ∂[μ(s), log σ]/∂θ; the FVP applied to each basis vector must give
    its columns (damping 0), and damping adds d·v."""
    torch.manual_seed(0)
    policy = make_policy("mlp", 2, 2, distribution="normal", hidden=[3]).double()
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([0.3, -0.4], dtype=torch.float64))
    obs = torch.randn(5, 2, dtype=torch.float64)
    params = list(policy.parameters())
    loc0, scale0 = (t.detach() for t in policy(obs))
    loc, scale = policy(obs)
    kl = normal_kl(loc0, scale0, loc, scale).mean()
    fvp = fisher_vector_product(kl, params, damping=0.0)
    n = sum(p.numel() for p in params)
    columns = torch.stack([fvp(torch.eye(n, dtype=torch.float64)[i]) for i in range(n)], 1)

    names = [name for name, _ in policy.named_parameters()]
    base = {k: v.detach() for k, v in policy.named_parameters()}

    def outputs(theta: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        values, offset = {}, 0
        for name in names:
            numel = base[name].numel()
            values[name] = theta[offset:offset + numel].view_as(base[name])
            offset += numel
        mu, sigma = torch.func.functional_call(policy, values, (s.unsqueeze(0),))
        return torch.cat([mu.reshape(-1), sigma.log().reshape(-1)])

    theta = flat([p.detach() for p in params])
    fisher = torch.zeros(n, n, dtype=torch.float64)
    weights = torch.cat([1.0 / scale0[0] ** 2, torch.full((2,), 2.0, dtype=torch.float64)])
    for s in obs:
        jac = torch.autograd.functional.jacobian(lambda t: outputs(t, s), theta)
        fisher += jac.T @ torch.diag(weights) @ jac
    fisher /= len(obs)
    assert torch.allclose(columns, fisher, atol=1e-10, rtol=1e-8)
    damped = fisher_vector_product(normal_kl(loc0, scale0, *policy(obs)).mean(), params, damping=0.5)
    v = torch.randn(n, dtype=torch.float64)
    assert torch.allclose(damped(v), fisher @ v + 0.5 * v, atol=1e-10)


def test_rejected_line_search_leaves_the_parameters_bit_identical():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    before = [p.detach().clone() for p in params]
    step = torch.randn(10) * 1e-3
    calls = []

    def worse():  # never an improvement
        calls.append(1)
        return 1.0, 0.0

    result = line_search(params, step, worse, old_loss=0.5, max_kl=0.01, ratio=0.8, max_steps=20)
    assert not result.accepted and result.fraction == 0.0 and len(calls) == 20
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))

    def too_far():  # improves, but outside the trust region
        return 0.0, 1.0

    result = line_search(params, step, too_far, old_loss=0.5, max_kl=0.01)
    assert not result.accepted
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))


def test_line_search_accepts_the_first_improving_step_inside_the_trust_region():
    params = [torch.nn.Parameter(torch.zeros(2))]
    step = torch.tensor([1.0, 0.0])
    # loss = x0 (we move to -fraction), kl = x0²: 1, 0.64, 0.4096: the third candidate (0.8² = 0.64) is inside 0.5
    result = line_search(params, step, lambda: (float(params[0][0]), float(params[0][0] ** 2)), old_loss=0.0,
                         max_kl=0.5, ratio=0.8, max_steps=20)
    assert result.accepted and result.tries == 3 and result.fraction == pytest.approx(0.64)
    assert torch.allclose(params[0].detach(), torch.tensor([-0.64, 0.0]))


def test_trpo_step_on_a_quadratic_takes_the_natural_gradient_step_of_kl_delta():
    """loss = gᵀθ, KL = ½ θᵀFθ + Σ|θ|³ (Hessian F at θ₀ = 0): the full step −F⁻¹g·√(2δ / gᵀF⁻¹g) has quadratic KL
    exactly δ, so the cubic term puts it outside the trust region, and the first accepted candidate is 0.8 of it."""
    f = _spd(4, seed=1)
    g = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    theta = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    delta = 1e-2

    def terms():
        return g @ theta, 0.5 * theta @ f @ theta + theta.abs().pow(3).sum()

    loss, kl = terms()
    result = trpo_step([theta], loss, kl, lambda: tuple(t.item() for t in terms()), max_kl=delta, damping=0.0,
                       cg_iterations=10)
    natural = torch.linalg.solve(f, g)
    full = natural * math.sqrt(2 * delta / float(g @ natural))
    assert result.accepted and result.fraction == pytest.approx(0.8)
    assert torch.allclose(theta.detach(), -0.8 * full, atol=1e-8)
    assert result.kl < delta
