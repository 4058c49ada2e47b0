"""PEARL's context encoder ``q(z | c)`` (Rakelly et al. 2019; ``hyperrl-paper.md`` §6): a context provider.

The encoder maps each context transition ``c_n = (s, a, r)`` (``(s, a, r, s')`` with ``use_next_obs_in_context``) of
a task to a Gaussian factor, an MLP (3×200, rlkit's init) with output ``(μ_n, σ̃_n)``, ``σ_n² = max(softplus(σ̃_n),
1e-7)``; the posterior is their product::

    q(z | c_1..N) ∝ Π_n N(z; μ_n, σ_n²)   =>   σ² = 1 / Σ_n σ_n^-2,   μ = σ² Σ_n μ_n / σ_n²     (per latent dim)

``z = μ + σ ε`` (reparameterised, one per task), and the loss gains ``kl_lambda · Σ_tasks Σ_dims KL(q ‖ N(0, I))``
with ``KL = ½ (σ² + μ² − 1 − log σ²)``. With the information bottleneck off the encoder outputs ``z_n`` only and
``z = mean_n z_n`` (deterministic, no KL term).

In the update (:meth:`~hyperrl.algos.meta_sac.ContextSAC.losses`) ``z`` reaches the encoder through ``L_Q`` only,
plus the KL term; the policy, ``V`` and the min-Q term see ``z̄ = z.detach()``. For acting, the encoder keeps one
``q`` and one ``z`` per row of the env acted in (:meth:`PEARLEncoder.clear_z`, :meth:`PEARLEncoder.infer_posterior`,
:meth:`PEARLEncoder.sample_z`), which PEARL's data (:mod:`hyperrl.data.pearl`) and evaluation
(:class:`~hyperrl.algos.meta_eval.AdaptationEvaluator`) drive.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jsonargparse.typing import NonNegativeFloat, PositiveInt
from tensordict import TensorDictBase
from torch import Tensor, nn

from hyperrl.algos.arguments import check_arguments
from hyperrl.algos.context import ContextProvider
from hyperrl.errors import require_positive_sizes
from hyperrl.nn.meta_critics import pearl_last_layer, pearl_trunk

#: the lower clamp of each factor's variance (rlkit's ``product_of_gaussians``)
MIN_VARIANCE = 1e-7

def product_of_gaussians(mu: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
    """``(..., N, L)`` factors -> ``(..., L)`` mean and variance of their normalised product (module docstring)."""
    var = var.clamp(min=MIN_VARIANCE)
    precision = var.reciprocal().sum(-2)
    posterior_var = precision.reciprocal()
    return posterior_var * (mu / var).sum(-2), posterior_var


def gaussian_kl_to_standard(mu: Tensor, var: Tensor) -> Tensor:
    """``KL(N(μ, diag σ²) ‖ N(0, I))`` per dimension: ``½ (σ² + μ² − 1 − log σ²)``, the shape of ``mu``."""
    return 0.5 * (var + mu.square() - 1.0 - var.log())


class PEARLEncoder(ContextProvider):
    """PEARL's context encoder ``q(z | c)`` (module docstring) and the ``z`` it acts with.

    Args:
        observation_dim, action_dim: the env's sizes (the context transition has ``|s| + |a| + 1 (+ |s|)`` entries).
        latent_dim: the size of ``z`` (PEARL: 5).
        hidden: the MLP's hidden widths (PEARL: 3×200).
        use_information_bottleneck: Gaussian factors and their product (``True``), or a deterministic mean.
        use_next_obs_in_context: include ``s'`` in the context transition.
        kl_lambda: the weight of the KL term.

    Acting, one ``q`` and one ``z`` per row of the env acted in (rows side by side, one task each):
    :meth:`clear_z` (``q`` := the prior ``N(0, I)`` on ``rows`` rows, draw ``z``), :meth:`infer_posterior` (``q``
    of some rows := the posterior of their contexts, draw ``z`` on every row), :meth:`sample_z` (draw ``z`` from the
    current ``q``); :meth:`acting` returns the rows' ``z`` whatever the env's context. Not part of the
    ``state_dict``: every collection and evaluation starts with :meth:`clear_z`.
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        latent_dim: PositiveInt = 5,
        hidden: Sequence[int] = (200, 200, 200),
        use_information_bottleneck: bool = True,
        use_next_obs_in_context: bool = False,
        kl_lambda: NonNegativeFloat = 0.1,
    ) -> None:
        super().__init__()
        check_arguments(PEARLEncoder.__init__, locals())
        hidden = list(require_positive_sizes("encoder_hidden", hidden))
        self.output_dim = int(latent_dim)
        self.use_information_bottleneck = use_information_bottleneck
        self.use_next_obs_in_context = use_next_obs_in_context
        self.kl_lambda = float(kl_lambda)
        self.input_dim = observation_dim + action_dim + 1 + (observation_dim if use_next_obs_in_context else 0)
        outputs = 2 * latent_dim if use_information_bottleneck else latent_dim
        self.net = nn.Sequential(*pearl_trunk(self.input_dim, hidden),
                                 pearl_last_layer(hidden[-1] if hidden else self.input_dim, outputs, 3e-3))
        self._z: Tensor | None = None
        self._mu: Tensor | None = None
        self._var: Tensor | None = None

    @classmethod
    def from_spec(cls, env_spec, **kwargs) -> PEARLEncoder:
        return cls(env_spec.observation_dim, env_spec.action_dim, **kwargs)

    # ------------------------------------------------------------------------------------------ q(z | c)
    def factors(self, context: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(T, N, F) ->`` the per-transition ``(μ_n, σ_n²)`` ``(T, N, L)`` each (``σ_n²`` is ``None`` without the
        bottleneck, ``μ_n`` then being the deterministic ``z_n``)."""
        if context.shape[-1] != self.input_dim:
            raise ValueError(f"context transitions have {context.shape[-1]} features, the encoder expects "
                             f"{self.input_dim}")
        out = self.net(context)
        # the factors and their product in fp32 at least: under bf16 autocast the linears run in bf16, and a product
        # over many transitions (a sum of precisions) needs fp32's mantissa; ``q`` is kept in fp32 between calls
        out = out.to(torch.promote_types(out.dtype, torch.float32))
        if not self.use_information_bottleneck:
            return out, None
        mu, raw = out.split(self.output_dim, dim=-1)
        return mu, F.softplus(raw)

    def posterior(self, context: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(T, N, F) ->`` ``q(z | c)``'s mean and variance ``(T, L)`` (variance ``None`` without the bottleneck)."""
        mu, var = self.factors(context)
        if var is None:
            return mu.mean(-2), None
        return product_of_gaussians(mu, var)

    def infer(self, batch: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        mu, var = self.posterior(batch.get("encoder_context"))
        if var is None:
            return mu.unsqueeze(-2), {}
        z = mu + var.sqrt() * torch.randn_like(mu)
        kl = gaussian_kl_to_standard(mu, var).sum()
        return z.unsqueeze(-2), {"kl_loss": self.kl_lambda * kl}

    # ------------------------------------------------------------------------------------------ acting
    def _device(self) -> torch.device:
        return self.net[0].weight.device

    def clear_z(self, generator: torch.Generator | None = None, rows: int = 1) -> None:
        """Reset ``q`` to the prior ``N(0, I)`` (deterministic variant: ``z = 0``) on ``rows`` rows and draw ``z``."""
        device = self._device()
        self._mu = torch.zeros(rows, self.output_dim, device=device)
        self._var = torch.ones(rows, self.output_dim, device=device) if self.use_information_bottleneck else None
        self.sample_z(generator)

    @torch.no_grad()
    def infer_posterior(self, context, generator: torch.Generator | None = None, rows: Sequence[int] | None = None):
        """``q`` of ``rows`` (default: every row, in order) := the posterior of their contexts, then draw ``z`` on
        every row (the other rows from their current ``q``). ``context``: ``(len(rows), N, F)``, or one ``(N_r, F)``
        per row when their lengths differ."""
        if self._mu is None:
            self.clear_z(rows=len(context) if rows is None else max(rows) + 1)
        rows = list(range(self._mu.shape[0])) if rows is None else list(rows)
        if len(context) != len(rows):
            raise ValueError(f"{len(context)} contexts for {len(rows)} rows")
        if torch.is_tensor(context):
            mu, var = self.posterior(context.to(self._device()))
        else:
            parts = [self.posterior(c.to(self._device()).unsqueeze(0)) for c in context]
            mu = torch.cat([p[0] for p in parts], 0)
            var = None if parts[0][1] is None else torch.cat([p[1] for p in parts], 0)
        self._mu = self._mu.clone()
        self._mu[rows] = mu
        if var is not None:
            self._var = self._var.clone()
            self._var[rows] = var
        self.sample_z(generator)

    def sample_z(self, generator: torch.Generator | None = None) -> None:
        """Draw ``z`` from the current ``q`` of every row (its mean without the bottleneck)."""
        if self._mu is None:
            self.clear_z(generator)
            return
        if self._var is None:
            self._z = self._mu
        else:
            noise = torch.randn(self._mu.shape, generator=generator, device="cpu").to(self._mu.device)
            self._z = self._mu + self._var.sqrt() * noise

    def acting(self, context: Tensor) -> Tensor:
        """The rows' ``z``: ``(R, L)`` for a batched env's context ``(R, c)``, ``(L,)`` for one row's ``(c,)``."""
        if self._z is None:
            self.clear_z(rows=context.shape[0] if context.dim() > 1 else 1)
        z = self._z.to(context.device)
        if context.dim() == 1:
            if z.shape[0] != 1:
                raise ValueError(f"one context for {z.shape[0]} rows of z")
            return z[0]
        if context.shape[:-1] != z.shape[:1]:
            if z.shape[0] == 1:
                return z[0].expand(*context.shape[:-1], self.output_dim)
            raise ValueError(f"contexts of batch {tuple(context.shape[:-1])} for {z.shape[0]} rows of z")
        return z
