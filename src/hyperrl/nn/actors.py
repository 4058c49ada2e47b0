"""Policies: SAC's tanh-Gaussian and TD3's deterministic tanh policy, both rescaled to the action bounds.

Both map an observation ``(..., obs_dim)`` through a 2×256 ReLU trunk. Actions live in ``[low, high]`` via
``a = c + r · tanh(u)`` with centre ``c = (high + low)/2`` and radius ``r = (high − low)/2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hyperrl.errors import ConfigurationError, require_positive, require_positive_sizes


def register_action_bounds(module: nn.Module, action_dim: int, low, high) -> None:
    """Validate ``low < high`` (scalars or ``(action_dim,)``) and register the buffers ``action_centre`` ``c`` and
    ``action_radius`` ``r`` on ``module``."""
    # validated on the CPU (so that this also works under ``with torch.device("meta")``), then put on the current
    # default device, as ``torch.as_tensor`` alone would
    low = torch.as_tensor(low, dtype=torch.float32, device="cpu").expand(action_dim).clone()
    high = torch.as_tensor(high, dtype=torch.float32, device="cpu").expand(action_dim).clone()
    if not bool(torch.isfinite(low).all() and torch.isfinite(high).all() and (high > low).all()):
        raise ConfigurationError(
            f"action bounds low={low.tolist()}, high={high.tolist()} must be finite with low < high"
        )
    device = torch.empty(0).device
    module.register_buffer("action_centre", ((high + low) / 2).to(device))
    module.register_buffer("action_radius", ((high - low) / 2).to(device))


#: forms of the tanh correction ``log(1 − tanh²u)`` in a tanh-Gaussian log-density: ``exact`` (the stable closed
#: form), ``pearl`` (PEARL's and the authors' ``log(1 − tanh²u + 1e-6)``, rlkit's ``TanhNormal``)
TANH_LOG_PROB_FORMS = ("exact", "pearl")
#: the constant rlkit adds inside the logarithm (``TanhNormal``'s ``epsilon``)
PEARL_TANH_EPSILON = 1e-6


def check_tanh_log_prob(form) -> str:
    if form not in TANH_LOG_PROB_FORMS:
        raise ConfigurationError(
            f"tanh_log_prob={form!r} is not allowed: expected one of {', '.join(TANH_LOG_PROB_FORMS)}"
        )
    return form


def log_one_minus_tanh_squared(u: Tensor, form: str = "exact") -> Tensor:
    """``log(1 − tanh²u)``, elementwise. ``exact``: ``2(log 2 − u − softplus(−2u))``, finite for every ``u``;
    ``pearl``: ``log(1 − tanh²u + 1e-6)``, which agrees for moderate ``|u|`` but floors at ``log 1e-6 ≈ −13.8`` where
    ``tanh`` saturates (the exact value keeps falling as ``−2|u|``)."""
    if form == "pearl":
        return torch.log(1.0 - torch.tanh(u).square() + PEARL_TANH_EPSILON)
    return 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))


def tanh_normal_log_prob(u: Tensor, loc: Tensor, scale: Tensor, radius: Tensor, form: str = "exact") -> Tensor:
    """``log π(a)`` of ``a = c + r·tanh(u)``, ``u ~ N(loc, scale²)``, summed over the last dim: ``(..., 1)``.

    ``Σ_i [log N(u_i; μ_i, σ_i) − log(1 − tanh²u_i) − log r_i]``, the tanh term in ``form``
    (:func:`log_one_minus_tanh_squared`; default: the numerically stable exact form).
    """
    log_prob = (
        -0.5 * ((u - loc) / scale) ** 2
        - scale.log()
        - 0.5 * math.log(2 * math.pi)
        - log_one_minus_tanh_squared(u, form)
        - radius.log()
    )
    return log_prob.sum(-1, keepdim=True)


def tanh_normal_rsample(loc: Tensor, scale: Tensor, radius: Tensor, form: str = "exact") -> tuple[Tensor, Tensor]:
    """Reparameterised pre-tanh sample ``u = loc + scale·ε`` and its :func:`tanh_normal_log_prob`."""
    u = loc + scale * torch.randn_like(loc)
    return u, tanh_normal_log_prob(u, loc, scale, radius, form)


class BoundedActions:
    """Squashing into the bounds registered by :func:`register_action_bounds` (buffers ``action_centre`` and
    ``action_radius``): shared by every tanh-squashed policy."""

    action_centre: Tensor
    action_radius: Tensor

    def squash(self, u: Tensor) -> Tensor:
        """``u ↦ c + r·tanh(u)``."""
        return self.action_centre + self.action_radius * torch.tanh(u)

    @property
    def low(self) -> Tensor:
        return self.action_centre - self.action_radius

    @property
    def high(self) -> Tensor:
        return self.action_centre + self.action_radius


class _BoundedPolicy(BoundedActions, nn.Module):
    def __init__(self, observation_dim: int, action_dim: int, low, high, hidden: Sequence[int]) -> None:
        super().__init__()
        require_positive("observation_dim", observation_dim, integer=True)
        require_positive("action_dim", action_dim, integer=True)
        hidden = require_positive_sizes("actor_hidden", hidden)
        register_action_bounds(self, action_dim, low, high)
        layers: list[nn.Module] = []
        previous = observation_dim
        for width in hidden:
            layers += [nn.Linear(previous, width), nn.ReLU()]
            previous = width
        self.trunk = nn.Sequential(*layers)
        self.feature_dim = previous
        self.action_dim = action_dim



class TanhGaussianPolicy(_BoundedPolicy):
    """SAC's policy: ``u ~ N(μ(s), σ(s)²)``, ``a = c + r·tanh(u)``; ``log σ`` clamped to ``log_std_bounds``.

    ``forward`` returns ``(μ, σ)``; :meth:`sample` draws a reparameterised action with its log-density

    ``log π(a|s) = Σ_i [log N(u_i; μ_i, σ_i) − 2(log 2 − u_i − softplus(−2u_i)) − log r_i]``

    (the numerically stable form of ``log(1 − tanh²u)``, :func:`tanh_normal_log_prob`). Xavier-uniform weights, zero
    biases (authors' SAC).
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        low=-1.0,
        high=1.0,
        hidden: Sequence[int] = (256, 256),
        log_std_bounds: tuple[float, float] = (-20.0, 2.0),
    ) -> None:
        super().__init__(observation_dim, action_dim, low, high, hidden)
        self.mean = nn.Linear(self.feature_dim, action_dim)
        self.log_std = nn.Linear(self.feature_dim, action_dim)
        self.log_std_bounds = tuple(float(b) for b in log_std_bounds)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, observation: Tensor) -> tuple[Tensor, Tensor]:
        """``(loc, scale)`` of the pre-tanh Gaussian, in fp32 at least: under bf16 autocast the linears run in bf16,
        but the sampling and log-density arithmetic after them stays in fp32 (``sample``)."""
        h = self.trunk(observation)
        loc, log_std = self.mean(h), self.log_std(h)
        dtype = torch.promote_types(loc.dtype, torch.float32)
        return loc.to(dtype), log_std.to(dtype).clamp(*self.log_std_bounds).exp()

    def sample(self, observation: Tensor) -> tuple[Tensor, Tensor]:
        """Reparameterised ``(a, log π(a|s))``: shapes ``(..., A)`` and ``(..., 1)``."""
        loc, scale = self(observation)
        u, log_prob = tanh_normal_rsample(loc, scale, self.action_radius)
        return self.squash(u), log_prob

    def mode(self, observation: Tensor) -> Tensor:
        """The deterministic action ``c + r·tanh(μ(s))`` (used for evaluation)."""
        return self.squash(self(observation)[0])


class DeterministicPolicy(_BoundedPolicy):
    """TD3's policy ``a = c + r·tanh(MLP(s))`` with PyTorch's default initialisation (Fujimoto's TD3)."""

    def __init__(self, observation_dim: int, action_dim: int, low=-1.0, high=1.0, hidden: Sequence[int] = (256, 256)):
        super().__init__(observation_dim, action_dim, low, high, hidden)
        self.out = nn.Linear(self.feature_dim, action_dim)

    def forward(self, observation: Tensor) -> Tensor:
        return self.squash(self.out(self.trunk(observation)))

    mode = forward
