"""Returns, the linear feature baseline and GAE on padded episodes (MAML's inner and outer losses, §5.4).

Episodes come padded to the horizon ``T``: tensors ``(..., T)`` (or ``(..., T, F)``) with a ``mask (..., T)`` that is
1 on the steps of the episode and 0 after it ended (:func:`hyperrl.data.onpolicy.episode_mask`).

* Discounted return ``R_t = Σ_{k≥t} γ^{k-t} r_k m_k``.
* Linear feature baseline (the authors' ``LinearFeatureBaseline``): features
  ``φ_t = [o_t, o_t², τ, τ², τ³, 1]·m_t`` with ``τ = t/100``, so ``2·S + 4`` per step; weights
  ``w = argmin ‖Φ w − R‖² + reg ‖w‖²``, i.e. ``(ΦᵀΦ + reg I) w = ΦᵀR`` solved by :func:`torch.linalg.lstsq`, fitted
  on one task's episodes; ``reg`` grows ×10 (up to 5 times) if the solution is not finite, as the authors do. A
  baseline fitted on some episodes can give the values of others (:func:`advantages` ``fit_on``: the authors'
  MAML values the post-adaptation episodes with the baseline fitted on the pre-adaptation ones).
* GAE(γ, λ) from TorchRL's :func:`~torchrl.objectives.value.functional.generalized_advantage_estimate`, with the
  value after the last step of an episode taken as 0 (the authors treat the time limit as terminal too), then
  normalised with mask-weighted mean and standard deviation (``(A − mean)/(std + 1e-8)``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """``Σ x m / Σ m`` over every element (``x`` and ``mask`` broadcast together)."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def discounted_returns(reward: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """``R_t = r_t m_t + γ R_{t+1}`` along the last dim: ``(..., T) -> (..., T)``."""
    reward = reward * mask.to(reward.dtype)
    out = torch.empty_like(reward)
    running = torch.zeros_like(reward[..., 0])
    for t in range(reward.shape[-1] - 1, -1, -1):
        running = reward[..., t] + gamma * running
        out[..., t] = running
    return out * mask.to(reward.dtype)


def baseline_features(observation: Tensor, mask: Tensor) -> Tensor:
    """``[o, o², τ, τ², τ³, 1]·m`` with ``τ = t/100``: ``(..., T, S), (..., T) -> (..., T, 2S + 4)``."""
    m = mask.to(observation.dtype).unsqueeze(-1)
    steps = torch.arange(observation.shape[-2], dtype=observation.dtype, device=observation.device)
    tau = (steps / 100.0).reshape(-1, 1).expand(*observation.shape[:-1], 1) * m
    obs = observation * m
    return torch.cat([obs, obs.square(), tau, tau.square(), tau.pow(3), m], dim=-1)


def fit_baseline_weights(observation: Tensor, returns: Tensor, mask: Tensor, reg: float = 1e-5) -> Tensor:
    """The linear feature baseline's weights ``(2S + 4, 1)`` (float64) fitted on one task's episodes.

    ``observation (..., T, S)``, ``returns (..., T)``, ``mask (..., T)``; every leading dim is pooled into one fit.
    """
    features = baseline_features(observation, mask)
    x = features.reshape(-1, features.shape[-1]).double()
    y = (returns * mask.to(returns.dtype)).reshape(-1, 1).double()
    xtx, xty = x.T @ x, x.T @ y
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    for _ in range(5):
        weights = torch.linalg.lstsq(xtx + reg * eye, xty).solution
        if torch.isfinite(weights).all():
            break
        reg *= 10.0
    return weights


def baseline_values(observation: Tensor, mask: Tensor, weights: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """The values ``(..., T)`` (masked; in ``dtype``, default the observations') of a fitted baseline on episodes."""
    features = baseline_features(observation, mask)
    values = (features.double() @ weights).squeeze(-1).to(dtype or observation.dtype)
    return values * mask.to(values.dtype)


def fit_linear_baseline(observation: Tensor, returns: Tensor, mask: Tensor, reg: float = 1e-5) -> Tensor:
    """Fit the linear feature baseline on one task's episodes and return its values on them ``(..., T)`` (masked)."""
    weights = fit_baseline_weights(observation, returns, mask, reg)
    return baseline_values(observation, mask, weights, returns.dtype)


def gae(reward: Tensor, value: Tensor, mask: Tensor, gamma: float, lmbda: float) -> Tensor:
    """GAE advantages ``(..., T)`` of padded episodes (TorchRL's functional GAE; 0 after each episode ends).

    ``δ_t = r_t + γ V_{t+1} m_{t+1} − V_t``, ``A_t = Σ_k (γλ)^k δ_{t+k}`` within the episode.
    """
    from torchrl.objectives.value.functional import generalized_advantage_estimate

    m = mask.to(reward.dtype)
    value = value * m
    next_value = torch.cat([value[..., 1:], torch.zeros_like(value[..., :1])], dim=-1)
    next_mask = torch.cat([m[..., 1:], torch.zeros_like(m[..., :1])], dim=-1)
    end = next_mask == 0  # the last step of an episode, and the padding after it
    advantage, _ = generalized_advantage_estimate(
        gamma, lmbda, value.unsqueeze(-1), (next_value * next_mask).unsqueeze(-1), (reward * m).unsqueeze(-1),
        end.unsqueeze(-1), end.unsqueeze(-1),
    )
    return advantage.squeeze(-1) * m


def normalize(x: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """``(x − mean)/(std + eps)`` with mask-weighted mean and (biased) standard deviation; 0 on padding."""
    m = mask.to(x.dtype)
    mean = masked_mean(x, m)
    std = masked_mean((x - mean).square(), m).sqrt()
    return (x - mean) / (std + eps) * m


def advantages(observation: Tensor, reward: Tensor, mask: Tensor, gamma: float, lmbda: float,
               reg: float = 1e-5, fit_on: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
    """Normalised GAE advantages of ONE task's episodes ``(E, T)``. The baseline is fitted on these episodes, or on
    the episodes ``fit_on = (observation, reward, mask)`` of the same task (e.g. those collected before adaptation)."""
    fit_obs, fit_reward, fit_mask = (observation, reward, mask) if fit_on is None else fit_on
    weights = fit_baseline_weights(fit_obs, discounted_returns(fit_reward, fit_mask, gamma), fit_mask, reg)
    values = baseline_values(observation, mask, weights, reward.dtype)
    return normalize(gae(reward, values, mask, gamma, lmbda), mask)
