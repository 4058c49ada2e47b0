"""Context-conditioned critics for meta-RL: PEARL's ``Q(s, a, c)`` and ``V(s, c)`` (``hyperrl-paper.md`` §6.2).

``c`` is the task context: the oracle task descriptor (oracle SAC, context-MAML) or PEARL's latent ``z``. Every
network here is built from the same :class:`~hyperrl.nn.hyper.HyperNetwork` as the SAC critics; what changes is
which inputs go to the primary network (meta) and which to the dynamic network (base):

=============  ==================  ====================  ===================================
network        meta (primary)      base (dynamic)        paper
=============  ==================  ====================  ===================================
Q ``hyper``    ``s``               ``[a, c]``            eq. 9, the authors' PEARL default
Q ``combine``  ``[s, c]``          ``a``                 ``--use_combine``
Q ``mlp``      —                   MLP on ``[s, a, c]``  PEARL's ``FlattenMlp`` (3×300)
V ``hyper``    ``s``               ``c``                 ``Hyper_QNetwork(action_dim=0)``
V ``mlp``      —                   MLP on ``[s, c]``     PEARL's ``FlattenMlp`` (3×300)
=============  ==================  ====================  ===================================

Interface (the batch shapes ``...`` of the inputs broadcast; every output is ``(..., 1)``):

* meta-Q: ``condition(observation, context)``, ``evaluate(condition, action, context)``,
  ``forward(observation, action, context) == evaluate(condition(observation, context), action, context)``;
* meta-V: ``condition(observation, context)``, ``evaluate(condition, context)``,
  ``forward(observation, context) == evaluate(condition(observation, context), context)``.

``condition`` is everything that does not depend on the action (for ``hyper``: the primary network and the heads,
run once per state), so PEARL's V target ``min_k Q_k(s, ã, c)`` and the policy loss can share it. The class
attributes ``condition_inputs`` / ``evaluate_inputs`` (indices into ``forward``'s arguments) let a
:class:`~hyperrl.nn.ensemble.CriticEnsemble` run twin meta-Qs as one batched network.

Parameter counts for HalfCheetah (observation 20, action 6), paper sizes, as asserted by the tests:
Q ``hyper`` 8,800,514 (context 1) / 9,850,114 (context 5); ``combine`` 8,539,394 (context 5);
V ``hyper`` 7,226,114 (context 1) / 8,275,714 (context 5); Q ``mlp`` 190,501 (context 5).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, Union

import torch
from torch import Tensor, nn

from hyperrl.errors import require_positive, require_positive_sizes
from hyperrl.nn.hyper import HyperNetwork, dynamic_forward
from hyperrl.nn.registry import NetworkKind


def broadcast_cat(*tensors: Tensor) -> Tensor:
    """Concatenate along the last dimension after broadcasting the batch shapes: ``(..., d_1), ... -> (..., Σ d_i)``."""
    batch = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(*batch, t.shape[-1]) for t in tensors], dim=-1)


# ----------------------------------------------------------------------------------------------------------------------
# PEARL's (rlkit's) MLP initialisation


def pearl_trunk(input_dim: int, hidden: Sequence[int], bias: float = 0.1) -> nn.Sequential:
    """rlkit's ``Mlp`` hidden layers: ``Linear-ReLU`` per width, biases ``bias`` (0.1), weights rlkit's ``fanin_init``.

    rlkit's ``fanin_init`` takes ``fan_in = weight.size(0)``, which for an ``nn.Linear`` is ``out_features``: the
    bound is U(±1/√out), e.g. 1/√300 for every 300-wide layer. We reproduce that (PEARL's networks are the
    reference), rather than the textbook ``1/√in_features``.
    """
    layers: list[nn.Module] = []
    previous = input_dim
    for width in hidden:
        linear = nn.Linear(previous, width)
        bound = 1.0 / math.sqrt(linear.weight.shape[0])
        nn.init.uniform_(linear.weight, -bound, bound)
        nn.init.constant_(linear.bias, bias)
        layers += [linear, nn.ReLU()]
        previous = width
    return nn.Sequential(*layers)


def pearl_last_layer(input_dim: int, output_dim: int, bound: float) -> nn.Linear:
    """rlkit's last layer: weight and bias U(±bound) (3e-3 for Q/V, 1e-3 for the policy's mean and log-std)."""
    linear = nn.Linear(input_dim, output_dim)
    nn.init.uniform_(linear.weight, -bound, bound)
    nn.init.uniform_(linear.bias, -bound, bound)
    return linear


def pearl_mlp(input_dim: int, hidden: Sequence[int], last_bound: float = 3e-3) -> nn.Sequential:
    """PEARL's ``FlattenMlp`` value network ``input -> 1``: :func:`pearl_trunk` + :func:`pearl_last_layer`."""
    hidden = require_positive_sizes("hidden", hidden)
    trunk = pearl_trunk(input_dim, hidden)
    return nn.Sequential(*trunk, pearl_last_layer(hidden[-1] if hidden else input_dim, 1, last_bound))


# ----------------------------------------------------------------------------------------------------------------------
# Q(s, a, c)


class MetaQNetwork(nn.Module):
    """Base class: ``Q(o, a, c) = evaluate(condition(o, c), a, c)``, output ``(..., 1)``."""

    is_hypernetwork: bool = False
    #: indices into ``forward``'s ``(observation, action, context)`` of the inputs of ``condition`` / ``evaluate``
    condition_inputs = (0, 2)
    evaluate_inputs = (1, 2)

    def __init__(self, observation_dim: int, action_dim: int, context_dim: int) -> None:
        super().__init__()
        require_positive("observation_dim", observation_dim, integer=True)
        require_positive("action_dim", action_dim, integer=True)
        require_positive("context_dim", context_dim, integer=True)
        self.observation_dim, self.action_dim, self.context_dim = observation_dim, action_dim, context_dim

    def condition(self, observation: Tensor, context: Tensor) -> Any:
        """The action-independent part (default: the inputs themselves)."""
        return observation, context

    def evaluate(self, condition: Any, action: Tensor, context: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, observation: Tensor, action: Tensor, context: Tensor) -> Tensor:
        """``(..., obs_dim), (..., act_dim), (..., context_dim) -> (..., 1)``."""
        return self.evaluate(self.condition(observation, context), action, context)


class HyperMetaQ(MetaQNetwork):
    """The paper's meta-Q (eq. 9): the state generates the weights of a network on ``[a, c]`` (meta=s, base=[a, c]).

    ``Q(s, a, c) = dynamic([a, c]; H(P(s)))``: ``256·s + 262,400·(a + c) + 6,958,594`` parameters at paper size.
    ``**hyper``: any :class:`~hyperrl.nn.hyper.HyperNetwork` option.
    """

    is_hypernetwork = True

    def __init__(self, observation_dim: int, action_dim: int, context_dim: int, **hyper: Any) -> None:
        super().__init__(observation_dim, action_dim, context_dim)
        self.hyper = HyperNetwork(observation_dim, action_dim + context_dim, 1, **hyper)

    def condition(self, observation: Tensor, context: Tensor) -> list:
        return self.hyper(observation)

    def evaluate(self, condition: list, action: Tensor, context: Tensor) -> Tensor:
        return dynamic_forward(broadcast_cat(action, context), condition)


class CombineHyperMetaQ(MetaQNetwork):
    """PEARL's ``--use_combine`` meta-Q: ``[s, c]`` generates the weights of a network on the action.

    ``256·(s + c) + 262,400·a + 6,958,594`` parameters at paper size. ``**hyper``: any HyperNetwork option.
    """

    is_hypernetwork = True

    def __init__(self, observation_dim: int, action_dim: int, context_dim: int, **hyper: Any) -> None:
        super().__init__(observation_dim, action_dim, context_dim)
        self.hyper = HyperNetwork(observation_dim + context_dim, action_dim, 1, **hyper)

    def condition(self, observation: Tensor, context: Tensor) -> list:
        return self.hyper(broadcast_cat(observation, context))

    def evaluate(self, condition: list, action: Tensor, context: Tensor) -> Tensor:
        return dynamic_forward(action, condition)


class MLPMetaQ(MetaQNetwork):
    """PEARL's ``FlattenMlp`` Q: an MLP on ``[s, a, c]`` (3×300 ReLU, rlkit init, see :func:`pearl_mlp`)."""

    def __init__(
        self, observation_dim: int, action_dim: int, context_dim: int, hidden: Sequence[int] = (300, 300, 300)
    ) -> None:
        super().__init__(observation_dim, action_dim, context_dim)
        self.net = pearl_mlp(observation_dim + action_dim + context_dim, hidden)

    def evaluate(self, condition: tuple[Tensor, Tensor], action: Tensor, context: Tensor) -> Tensor:
        observation, _ = condition
        return self.net(broadcast_cat(observation, action, context))


# ----------------------------------------------------------------------------------------------------------------------
# V(s, c)


class MetaVNetwork(nn.Module):
    """Base class: ``V(o, c) = evaluate(condition(o, c), c)``, output ``(..., 1)`` (PEARL's SAC has a V network)."""

    is_hypernetwork: bool = False
    condition_inputs = (0, 1)
    evaluate_inputs = (1,)

    def __init__(self, observation_dim: int, context_dim: int) -> None:
        super().__init__()
        require_positive("observation_dim", observation_dim, integer=True)
        require_positive("context_dim", context_dim, integer=True)
        self.observation_dim, self.context_dim = observation_dim, context_dim

    def condition(self, observation: Tensor, context: Tensor) -> Any:
        return observation, context

    def evaluate(self, condition: Any, context: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, observation: Tensor, context: Tensor) -> Tensor:
        """``(..., obs_dim), (..., context_dim) -> (..., 1)``."""
        return self.evaluate(self.condition(observation, context), context)


class HyperMetaV(MetaVNetwork):
    """The hyper V: the state generates the weights of a network on the context (meta=s, base=c).

    ``256·s + 262,400·c + 6,958,594`` parameters at paper size. ``**hyper``: any HyperNetwork option.
    """

    is_hypernetwork = True

    def __init__(self, observation_dim: int, context_dim: int, **hyper: Any) -> None:
        super().__init__(observation_dim, context_dim)
        self.hyper = HyperNetwork(observation_dim, context_dim, 1, **hyper)

    def condition(self, observation: Tensor, context: Tensor) -> list:
        return self.hyper(observation)

    def evaluate(self, condition: list, context: Tensor) -> Tensor:
        return dynamic_forward(context, condition)


class MLPMetaV(MetaVNetwork):
    """PEARL's ``FlattenMlp`` V: an MLP on ``[s, c]`` (3×300 ReLU, rlkit init)."""

    def __init__(self, observation_dim: int, context_dim: int, hidden: Sequence[int] = (300, 300, 300)) -> None:
        super().__init__(observation_dim, context_dim)
        self.net = pearl_mlp(observation_dim + context_dim, hidden)

    def evaluate(self, condition: tuple[Tensor, Tensor], context: Tensor) -> Tensor:
        observation, _ = condition
        return self.net(broadcast_cat(observation, context))


# ----------------------------------------------------------------------------------------------------------------------
# registries

#: name -> (class, default keyword arguments), as :data:`~hyperrl.nn.critics.CRITICS`.
META_CRITICS: dict[str, tuple[type[MetaQNetwork], dict[str, Any]]] = {
    "hyper": (HyperMetaQ, {}),
    "combine": (CombineHyperMetaQ, {}),
    "mlp": (MLPMetaQ, {}),
}
META_VALUES: dict[str, tuple[type[MetaVNetwork], dict[str, Any]]] = {
    "hyper": (HyperMetaV, {}),
    "mlp": (MLPMetaV, {}),
}


#: the meta-critic and meta-value a context SAC takes (:mod:`hyperrl.nn.registry`)
META_CRITIC = NetworkKind("meta-critic", MetaQNetwork, META_CRITICS, ("observation_dim", "action_dim", "context_dim"))
META_VALUE = NetworkKind("meta-value", MetaVNetwork, META_VALUES, ("observation_dim", "context_dim"))
#: the annotations of those settings: a name, or ``class_path``/``init_args`` of a class called with the sizes
MetaCriticChoice = Union[Literal[tuple(META_CRITICS)], Callable[[int, int, int], MetaQNetwork]]  # noqa: UP007
MetaValueChoice = Union[Literal[tuple(META_VALUES)], Callable[[int, int], MetaVNetwork]]  # noqa: UP007


def meta_critic_options(name: str) -> list[str]:
    """The keyword overrides that meta-Q ``name`` accepts."""
    return META_CRITIC.options(META_CRITIC.resolve(name)[0])


def make_meta_critic(
    critic: Any, observation_dim: int, action_dim: int, context_dim: int, **overrides: Any
) -> MetaQNetwork:
    """Build one meta-Q ``Q(s, a, c)`` by name (``hyper``, ``combine``, ``mlp``) or any form of
    :class:`~hyperrl.nn.registry.NetworkKind`, e.g. ``make_meta_critic("hyper", 20, 6, 5)``. An unknown name or
    option raises ``ConfigurationError``."""
    return META_CRITIC.build(critic, observation_dim, action_dim, context_dim, **overrides)


def meta_value_options(name: str) -> list[str]:
    """The keyword overrides that meta-V ``name`` accepts."""
    return META_VALUE.options(META_VALUE.resolve(name)[0])


def make_meta_value(value: Any, observation_dim: int, context_dim: int, **overrides: Any) -> MetaVNetwork:
    """Build one meta-V ``V(s, c)`` by name (``hyper``, ``mlp``) or any form of
    :class:`~hyperrl.nn.registry.NetworkKind`, e.g. ``make_meta_value("hyper", 20, 5)``."""
    return META_VALUE.build(value, observation_dim, context_dim, **overrides)
