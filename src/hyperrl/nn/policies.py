"""Context-conditioned policies ``π(a | s, c)`` for meta-RL, behind one interface (``hyperrl-paper.md`` §5.1, §6.2).

Three architectures (``make_policy(name, ...)``) and two action distributions (``distribution=``):

* ``hyper``: the meta-policy. The context generates the weights of a small network on the state (meta = ``c``,
  base = ``s``; one dynamic hidden layer of 256 by default), so each task gets its own policy network.
* ``mlp``: an MLP on the state alone (the context, if given, is ignored): MAML's and PEARL's plain baseline.
* ``context_mlp``: an MLP on ``[s, c]`` (MAML's ``--use_task`` "context-MLP"; PEARL's ``TanhGaussianPolicy``).

Distributions:

* ``"tanh_normal"`` (PEARL's SAC): ``u ~ N(μ, σ²)``, ``a = c_a + r_a·tanh(u)`` inside ``[low, high]`` (centre
  ``c_a``, radius ``r_a``; default ``[-1, 1]``), ``μ`` and ``log σ`` from two heads reading the same last hidden
  layer, ``log σ`` clamped to ``[-20, 2]``. ``log π(a|s,c) = Σ_i [log N(u_i; μ_i, σ_i) − log(1 − tanh²u_i) − log r_i]``
  (:func:`~hyperrl.nn.actors.tanh_normal_log_prob`; ``tanh_log_prob="exact"``, the default, the stable closed form,
  ``"pearl"`` PEARL's and the authors' ``log(1 − tanh²u + 1e-6)``); the deterministic action is ``c_a + r_a·tanh μ``.
* ``"normal"`` (MAML's TRPO): ``a ~ N(μ, σ²)`` with a learned state-independent ``log σ`` vector (init 0),
  ``σ = exp(max(log σ, log 1e-6))``, no squashing and no bounds; the deterministic action is ``μ``.

Interface of every policy (any leading batch shape ``...``; ``context`` is ``(..., context_dim)`` or a
:class:`TaskCondition`, and its batch shape broadcasts against the observation's):

* ``policy(observation, context) -> (loc, scale)``: the Gaussian before any squashing, each ``(..., A)``;
* ``policy.loc_and_log_std(observation, context) -> (loc, log_std)`` (clamped; PEARL's 1e-3·(μ² + log σ²)
  regulariser reads these);
* ``policy.sample(observation, context) -> (action (..., A), log_prob (..., 1))``, reparameterised
  (``sample_with_params`` also returns the ``(loc, log_std)`` drawn from);
* ``policy.log_prob(observation, action, context) -> (..., 1)`` for given actions (MAML's REINFORCE/TRPO);
* ``policy.mode(observation, context) -> (..., A)``, the deterministic action;
* ``policy.condition(context) -> TaskCondition``: the task-only computation, to be passed in place of the context.

**The primary network runs once per task.** For a batch of T tasks × N transitions pass the context as
``(T, 1, c)`` against observations ``(T, N, s)``: the primary network and the weight heads run on T rows, and the
per-task weights are applied to the N states of their task without being copied (the authors' ``get_z(task)``).
For acting, ``cond = policy.condition(context)`` once per task and ``policy.sample(obs, cond)`` at every step.
(Passing a per-transition context ``(T, N, c)`` gives the same numbers with T·N primary-network rows.)

Parameter counts, paper sizes, as asserted by the tests: ``hyper``/``normal`` 13,529,106 (state 20, action 6,
context 1), 15,894,808 (27, 8, 1), 7,748,358 (2, 2, 2); ``hyper``/``tanh_normal`` 15,116,824 (20, 6, 5);
``mlp``/``normal`` (MAML 2×100) 12,812 / 13,716 / 10,604 (``context_mlp``: +100 per context dim);
``context_mlp``/``tanh_normal`` (PEARL 3×300) 192,012 (20, 6, 5).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import torch
from torch import Tensor, nn

from hyperrl.errors import ConfigurationError, require_positive, require_positive_sizes, require_sequence
from hyperrl.nn.actors import (
    BoundedActions,
    check_tanh_log_prob,
    register_action_bounds,
    tanh_normal_log_prob,
    tanh_normal_rsample,
)
from hyperrl.nn.hyper import HyperNetwork, dynamic_heads_forward
from hyperrl.nn.meta_critics import broadcast_cat, pearl_last_layer, pearl_trunk
from hyperrl.nn.registry import NetworkKind

DISTRIBUTIONS = ("tanh_normal", "normal")
#: default ``(min, max)`` clamp of ``log σ`` per distribution (``None``: no bound)
LOG_STD_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "tanh_normal": (-20.0, 2.0),
    "normal": (math.log(1e-6), None),
}
#: default hidden widths of the MLP policies per distribution: PEARL's 3×300, MAML's 2×100
MLP_HIDDEN: dict[str, tuple[int, ...]] = {"tanh_normal": (300, 300, 300), "normal": (100, 100)}


@dataclass(frozen=True)
class TaskCondition:
    """The task-only part of a policy's computation (:meth:`MetaPolicy.condition`); pass it where a context goes.

    ``value`` is the policy's own: the generated dynamic layers for ``hyper``, the context for ``context_mlp``,
    ``None`` for ``mlp``.
    """

    value: Any


class MetaPolicy(BoundedActions, nn.Module):
    """Base class of the context-conditioned policies; subclasses implement ``_condition`` and ``_heads``.

    ``_condition(context) -> value`` is the task-only work; ``_heads(observation, value) -> (loc, raw_log_std)``
    the rest. Everything else (clamping, sampling, log-densities, squashing) lives here, once for all policies.
    """

    #: whether the policy reads the context (``mlp`` does not)
    uses_context: bool = True

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        context_dim: int,
        distribution: str,
        low=None,
        high=None,
        log_std_bounds: Sequence[float | None] | None = None,
        tanh_log_prob: str | None = None,
    ) -> None:
        super().__init__()
        require_positive("observation_dim", observation_dim, integer=True)
        require_positive("action_dim", action_dim, integer=True)
        if self.uses_context:
            require_positive("context_dim", context_dim, integer=True)
        elif isinstance(context_dim, bool) or not isinstance(context_dim, int) or context_dim < 0:
            raise ConfigurationError(f"context_dim={context_dim!r} is not allowed: expected an integer >= 0")
        if distribution not in DISTRIBUTIONS:
            raise ConfigurationError(
                f"distribution={distribution!r} is not allowed: expected one of {', '.join(DISTRIBUTIONS)}"
            )
        self.observation_dim, self.action_dim, self.context_dim = observation_dim, action_dim, context_dim
        self.distribution = distribution
        if distribution == "tanh_normal":
            register_action_bounds(self, action_dim, -1.0 if low is None else low, 1.0 if high is None else high)
        elif low is not None or high is not None:
            raise ConfigurationError(
                f"low={low!r}, high={high!r} are not allowed with distribution='normal': "
                "action bounds apply to distribution='tanh_normal' only"
            )
        self.log_std_bounds = _log_std_bounds(distribution, log_std_bounds)
        # None: "exact"; an algorithm that owns the setting (MetaSAC) passes its own
        tanh_log_prob = self.tanh_log_prob = check_tanh_log_prob("exact" if tanh_log_prob is None else tanh_log_prob)
        if tanh_log_prob != "exact" and distribution != "tanh_normal":
            raise ConfigurationError(f"tanh_log_prob={tanh_log_prob!r} is not allowed with distribution="
                                     f"{distribution!r}: it is a form of the tanh_normal log-density")

    # ------------------------------------------------------------------------------------------ subclass hooks
    def _condition(self, context: Tensor | None) -> Any:
        raise NotImplementedError

    def _heads(self, observation: Tensor, value: Any) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ interface
    def condition(self, context: Tensor | None) -> TaskCondition:
        """The task-only computation for ``context (..., context_dim)`` (for ``hyper``: the primary network and the
        weight heads). Compute it once per task and pass it in place of the context."""
        if self.uses_context and context is None:
            raise ValueError(f"{type(self).__name__} needs a context (..., {self.context_dim})")
        return TaskCondition(self._condition(context if self.uses_context else None))

    def loc_and_log_std(
        self, observation: Tensor, context: Tensor | TaskCondition | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(μ, log σ)`` of the Gaussian, ``log σ`` clamped to ``log_std_bounds``; both ``(..., A)`` in fp32 at least
        (under bf16 autocast the linears run in bf16, the distribution arithmetic in fp32)."""
        cond = context if isinstance(context, TaskCondition) else self.condition(context)
        loc, log_std = self._heads(observation, cond.value)
        dtype = torch.promote_types(loc.dtype, torch.float32)
        low, high = self.log_std_bounds
        log_std = log_std.to(dtype)
        if low is not None or high is not None:
            log_std = log_std.clamp(min=low, max=high)
        loc = loc.to(dtype)
        return loc, log_std.expand_as(loc)

    def forward(self, observation: Tensor, context: Tensor | TaskCondition | None = None) -> tuple[Tensor, Tensor]:
        """``(loc, scale)`` of the (pre-tanh for ``tanh_normal``) Gaussian, each ``(..., A)``."""
        loc, log_std = self.loc_and_log_std(observation, context)
        return loc, log_std.exp()

    def sample(self, observation: Tensor, context: Tensor | TaskCondition | None = None) -> tuple[Tensor, Tensor]:
        """A reparameterised action and its log-density: ``(..., A)`` and ``(..., 1)``."""
        return self.sample_with_params(observation, context)[:2]

    def sample_with_params(
        self, observation: Tensor, context: Tensor | TaskCondition | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """:meth:`sample`'s action and log-density, and the ``(μ, log σ)`` of :meth:`loc_and_log_std` they were drawn
        from: one pass of the network for a loss that needs both (SAC's policy loss and its regulariser)."""
        loc, log_std = self.loc_and_log_std(observation, context)
        scale = log_std.exp()
        if self.distribution == "tanh_normal":
            u, log_prob = tanh_normal_rsample(loc, scale, self.action_radius, self.tanh_log_prob)
            return self.squash(u), log_prob, loc, log_std
        action = loc + scale * torch.randn_like(loc)
        return action, _normal_log_prob(action, loc, scale), loc, log_std

    def log_prob(self, observation: Tensor, action: Tensor, context: Tensor | TaskCondition | None = None) -> Tensor:
        """``log π(action | observation, context)``, summed over action dims: ``(..., 1)``.

        For ``tanh_normal`` the action is mapped back by ``u = atanh((a − c_a)/r_a)``, with ``(a − c_a)/r_a``
        clamped to ``±(1 − eps)`` of its dtype, so actions on the bounds get a finite log-density.
        """
        loc, scale = self(observation, context)
        action = action.to(loc.dtype)
        if self.distribution == "tanh_normal":
            limit = 1.0 - torch.finfo(loc.dtype).eps
            y = ((action - self.action_centre) / self.action_radius).clamp(-limit, limit)
            return tanh_normal_log_prob(torch.atanh(y), loc, scale, self.action_radius, self.tanh_log_prob)
        return _normal_log_prob(action, loc, scale)

    def mode(self, observation: Tensor, context: Tensor | TaskCondition | None = None) -> Tensor:
        """The deterministic action: ``c_a + r_a·tanh(μ)`` for ``tanh_normal``, ``μ`` for ``normal``."""
        loc, _ = self.loc_and_log_std(observation, context)
        return self.squash(loc) if self.distribution == "tanh_normal" else loc



def _normal_log_prob(action: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    log_prob = -0.5 * ((action - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)
    return log_prob.sum(-1, keepdim=True)


def _log_std_bounds(distribution: str, bounds) -> tuple[float | None, float | None]:
    if bounds is None:
        return LOG_STD_BOUNDS[distribution]
    bounds = require_sequence("log_std_bounds", bounds, "(min, max) with max allowed to be None")
    numbers = all(b is None or (isinstance(b, (int, float)) and not isinstance(b, bool)) for b in bounds)
    ok = len(bounds) == 2 and numbers
    if ok and None not in bounds:
        ok = bounds[0] < bounds[1]
    if not ok:
        raise ConfigurationError(
            f"log_std_bounds={bounds!r} is not allowed: expected (min, max) numbers with min < max (or None)"
        )
    return tuple(None if b is None else float(b) for b in bounds)


class HyperPolicy(MetaPolicy):
    """The meta-policy: the context generates the weights of a network on the state (meta = c, base = s).

    ``tanh_normal``: two output heads, ``μ`` and ``log σ``, read the dynamic hidden layer (PEARL's
    ``Hyper_Policy``; head bounds ``(0.05, 0.008, 0.001)``: the log-std head starts at U(±0.001)). Parameters at
    paper size: ``256·c + 6,169,344 + 262,400·s + 524,800 + 2·264,450·A``.

    ``normal``: one output head ``μ`` plus a learned ``log σ`` vector (MAML's hyper policy): ``... + 264,450·A + A``.

    ``**hyper``: any :class:`~hyperrl.nn.hyper.HyperNetwork` option (``primary_widths``, ``dynamic_hidden``,
    ``head_bounds``, ``init``, ``init_scale``, ...).
    """

    is_hypernetwork = True

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        context_dim: int,
        distribution: str = "tanh_normal",
        low=None,
        high=None,
        log_std_bounds: Sequence[float | None] | None = None,
        tanh_log_prob: str | None = None,
        **hyper: Any,
    ) -> None:
        super().__init__(observation_dim, action_dim, context_dim, distribution, low, high, log_std_bounds,
                         tanh_log_prob)
        if distribution == "tanh_normal":
            outputs: int | tuple[int, int] = (action_dim, action_dim)
            hyper.setdefault("head_bounds", (0.05, 0.008, 0.001))
        else:
            outputs = action_dim
        self.hyper = HyperNetwork(context_dim, observation_dim, outputs, **hyper)
        if distribution == "normal":
            self.log_std = nn.Parameter(torch.zeros(action_dim))

    def _condition(self, context: Tensor) -> list:
        return self.hyper(context)

    def _heads(self, observation: Tensor, layers: list) -> tuple[Tensor, Tensor]:
        outputs = dynamic_heads_forward(observation, layers, self.hyper.num_outputs)
        if self.distribution == "tanh_normal":
            return outputs[0], outputs[1]
        return outputs[0], self.log_std


class MLPPolicy(MetaPolicy):
    """An MLP policy on the state (``mlp``); :class:`ContextMLPPolicy` adds the context to its input.

    ``hidden`` defaults by distribution (``MLP_HIDDEN``), and so does the initialisation, each as its authors':

    * ``tanh_normal``: PEARL's ``TanhGaussianPolicy`` (3×300 ReLU, rlkit init: hidden weights U(±1/√out), biases
      0.1; mean and log-std heads U(±1e-3) for weights and biases; see
      :func:`~hyperrl.nn.meta_critics.pearl_trunk`);
    * ``normal``: MAML's ``NormalMLPPolicy`` (2×100 ReLU, Xavier-uniform weights, zero biases, ``log σ`` init 0).
    """

    is_hypernetwork = False
    uses_context = False

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        context_dim: int = 0,
        distribution: str = "tanh_normal",
        hidden: Sequence[int] | None = None,
        low=None,
        high=None,
        log_std_bounds: Sequence[float | None] | None = None,
        tanh_log_prob: str | None = None,
    ) -> None:
        super().__init__(observation_dim, action_dim, context_dim, distribution, low, high, log_std_bounds,
                         tanh_log_prob)
        hidden = require_positive_sizes("hidden", MLP_HIDDEN[distribution] if hidden is None else hidden)
        input_dim = observation_dim + (context_dim if self.uses_context else 0)
        feature_dim = hidden[-1] if hidden else input_dim
        if distribution == "tanh_normal":
            self.trunk = pearl_trunk(input_dim, hidden)
            self.mean = pearl_last_layer(feature_dim, action_dim, 1e-3)
            self.log_std_head = pearl_last_layer(feature_dim, action_dim, 1e-3)
        else:
            layers: list[nn.Module] = []
            previous = input_dim
            for width in hidden:
                layers += [nn.Linear(previous, width), nn.ReLU()]
                previous = width
            self.trunk = nn.Sequential(*layers)
            self.mean = nn.Linear(feature_dim, action_dim)
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)
                    nn.init.zeros_(module.bias)
            self.log_std = nn.Parameter(torch.zeros(action_dim))

    def _condition(self, context: Tensor | None) -> Tensor | None:
        return context

    def _heads(self, observation: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x = observation if context is None else broadcast_cat(observation, context)
        h = self.trunk(x)
        log_std = self.log_std_head(h) if self.distribution == "tanh_normal" else self.log_std
        return self.mean(h), log_std


class ContextMLPPolicy(MLPPolicy):
    """An MLP policy on ``[s, c]`` (``context_mlp``): as :class:`MLPPolicy`, with ``context_dim`` more inputs."""

    uses_context = True


#: name -> (class, default keyword arguments), as :data:`~hyperrl.nn.critics.CRITICS`.
POLICIES: dict[str, tuple[type[MetaPolicy], dict[str, Any]]] = {
    "hyper": (HyperPolicy, {}),
    "mlp": (MLPPolicy, {}),
    "context_mlp": (ContextMLPPolicy, {}),
}


#: the policy a meta-RL algorithm takes (:mod:`hyperrl.nn.registry`); the algorithm decides the ``distribution``
POLICY = NetworkKind("policy", MetaPolicy, POLICIES, ("observation_dim", "action_dim", "context_dim", "distribution"))
#: the annotation of a policy setting: a name, or ``class_path``/``init_args`` of a class called with
#: ``(observation_dim, action_dim, context_dim, distribution)``
PolicyChoice = Union[Literal[tuple(POLICIES)], Callable[[int, int, int, str], MetaPolicy]]  # noqa: UP007


def policy_class(name: str) -> type[MetaPolicy]:
    return POLICY.resolve(name)[0]


def policy_options(name: str) -> list[str]:
    """The keyword overrides that policy ``name`` accepts (``hyper``: also every HyperNetwork option)."""
    return POLICY.options(policy_class(name))


def make_policy(policy: Any, observation_dim: int, action_dim: int, context_dim: int = 0,
                distribution: str = "tanh_normal", owned: dict[str, Any] | None = None,
                **overrides: Any) -> MetaPolicy:
    """Build a policy by name (``hyper``, ``mlp``, ``context_mlp``) or any form of
    :class:`~hyperrl.nn.registry.NetworkKind`, e.g. ``make_policy("hyper", 20, 6, context_dim=1,
    distribution="normal")``; ``owned``: settings the calling algorithm decides (``NetworkKind.build``).

    ``mlp`` accepts and ignores a ``context_dim``, so an algorithm can pass the same arguments to every policy.
    An unknown name or option raises :class:`~hyperrl.errors.ConfigurationError`.
    """
    return POLICY.build(policy, observation_dim, action_dim, context_dim, distribution, owned=owned, **overrides)
