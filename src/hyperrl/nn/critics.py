"""Every Q-network of the paper, behind one interface.

A critic is a plain ``nn.Module`` with ``forward(observation, action) -> Q`` of shape ``(..., 1)`` for any leading
batch shape. It is split in two so that losses can reuse the state-only work (``hyperrl-paper.md`` §8.12):

* ``condition(observation)``: everything that depends on the state alone (for SA-Hyper: the primary network and
  the weight heads, i.e. the whole dynamic network's weights);
* ``evaluate(condition, action)``: the rest.

``forward(o, a) == evaluate(condition(o), a)`` always holds.

The hypernetwork critics (``sa_hyper``, ``as_hyper``, ``random_hyper``) forward every keyword option of
:class:`~hyperrl.nn.hyper.HyperNetwork` (``primary_widths``, ``blocks_per_stage``, ``dynamic_hidden``,
``head_bounds``, ``init``, ``init_scale``) as ``**hyper``: the defaults live in that one signature.

Parameter counts per Q-network for observation 17 / action 6 (HalfCheetah), as asserted by the tests:
``sa_hyper`` 8,537,346; ``as_hyper`` 11,420,930; ``random_hyper`` 12,995,079; ``mlp`` 72,193; ``mlp_small`` 6,401;
``mlp_large`` 8,485,401; ``d2rl`` 221,441; ``deep_resnet`` 4,611,841; ``resnet_features`` 6,437,889.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, Union

import torch
from torch import Tensor, nn

from hyperrl.errors import require_positive, require_positive_sizes
from hyperrl.nn.hyper import (
    HyperNetwork,
    PrimaryNetwork,
    ResidualBlock,
    dynamic_forward,
)
from hyperrl.nn.registry import NetworkKind


def mlp(input_dim: int, hidden: Sequence[int], output_dim: int) -> nn.Sequential:
    """``Linear-ReLU-...-Linear`` with PyTorch's default initialisation."""
    layers: list[nn.Module] = []
    previous = input_dim
    for width in hidden:
        layers += [nn.Linear(previous, width), nn.ReLU()]
        previous = width
    layers.append(nn.Linear(previous, output_dim))
    return nn.Sequential(*layers)


def _broadcast_cat(observation: Tensor, action: Tensor) -> Tensor:
    batch = torch.broadcast_shapes(observation.shape[:-1], action.shape[:-1])
    return torch.cat(
        (observation.expand(*batch, observation.shape[-1]), action.expand(*batch, action.shape[-1])), dim=-1
    )


class QNetwork(nn.Module):
    """Base class: ``Q(o, a) = evaluate(condition(o), a)``. Subclasses set ``is_hypernetwork``."""

    is_hypernetwork: bool = False

    def __init__(self, observation_dim: int, action_dim: int) -> None:
        super().__init__()
        require_positive("observation_dim", observation_dim, integer=True)
        require_positive("action_dim", action_dim, integer=True)
        self.observation_dim = observation_dim
        self.action_dim = action_dim

    def condition(self, observation: Tensor) -> Any:
        """The state-only part of the computation (default: the observation itself)."""
        return observation

    def evaluate(self, condition: Any, action: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, observation: Tensor, action: Tensor) -> Tensor:
        return self.evaluate(self.condition(observation), action)


class SAHyperCritic(QNetwork):
    """The paper's critic: the state generates the weights of a small network on the action (meta=s, base=a).

    ``Q(s, a) = (W_2(z) ReLU((W_1(z) a) ⊙ g_1(z) + b_1(z))) ⊙ g_2(z) + b_2(z)`` with ``z = primary(s)``, so
    ``∇_a Q = W_1ᵀ diag(g_1 ⊙ 1[pre > 0]) (g_2 W_2)ᵀ`` is a state-dependent linear map (``hyperrl-paper.md`` §1.3).
    """

    is_hypernetwork = True

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        **hyper: Any,
    ) -> None:
        super().__init__(observation_dim, action_dim)
        self.hyper = HyperNetwork(observation_dim, action_dim, 1, **hyper)

    def condition(self, observation: Tensor) -> list:
        return self.hyper(observation)

    def evaluate(self, condition: list, action: Tensor) -> Tensor:
        return dynamic_forward(action, condition)


class ASHyperCritic(QNetwork):
    """Ablation "AS-Hyper": the action generates the weights of a network on the state (meta=a, base=s)."""

    is_hypernetwork = True

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        **hyper: Any,
    ) -> None:
        super().__init__(observation_dim, action_dim)
        self.hyper = HyperNetwork(action_dim, observation_dim, 1, **hyper)

    def evaluate(self, condition: Tensor, action: Tensor) -> Tensor:
        return dynamic_forward(condition, self.hyper(action))


class RandomHyperCritic(QNetwork):
    """Ablation "random": a learned constant meta-input generates ONE weight set for a network on ``[s, a]``.

    Keeps the parameter count and optimisation geometry of a hypernetwork but removes the state conditioning.
    The embedding (``embedding_dim`` = 5, init U[0, 1)) is a parameter of each Q-network (the authors share one
    between the twin critics; see ``docs/deviations.md``). Since the meta-input is constant, the weights are
    generated once per call and broadcast over the batch.
    """

    is_hypernetwork = True

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        embedding_dim: int = 5,
        **hyper: Any,
    ) -> None:
        super().__init__(observation_dim, action_dim)
        require_positive("embedding_dim", embedding_dim, integer=True)
        self.embedding = nn.Parameter(torch.rand(embedding_dim))
        self.hyper = HyperNetwork(embedding_dim, observation_dim + action_dim, 1, **hyper)

    def evaluate(self, condition: Tensor, action: Tensor) -> Tensor:
        sa = _broadcast_cat(condition, action)
        # one weight set, broadcast over the batch: singleton batch dims after any leading dims of the embedding
        # (a CriticEnsemble stacks the members' embeddings along dim 0)
        meta = self.embedding.reshape(*self.embedding.shape[:-1], *(1,) * (sa.dim() - self.embedding.dim()), -1)
        return dynamic_forward(sa, self.hyper(meta))


class MLPCritic(QNetwork):
    """``MLP([s, a])`` with ReLU hidden layers: ``mlp`` (2×256), ``mlp_small`` (1×256), ``mlp_large`` (2×2900)."""

    def __init__(self, observation_dim: int, action_dim: int, hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__(observation_dim, action_dim)
        self.net = mlp(observation_dim + action_dim, require_positive_sizes("hidden", hidden), 1)

    def evaluate(self, condition: Tensor, action: Tensor) -> Tensor:
        return self.net(_broadcast_cat(condition, action))


class D2RLCritic(QNetwork):
    """D2RL (Sinha et al. 2020): hidden layers of ``width``; the raw ``[s, a]`` is concatenated to the input of
    every hidden layer after the first (dense input skips)."""

    def __init__(self, observation_dim: int, action_dim: int, width: int = 256, depth: int = 4) -> None:
        super().__init__(observation_dim, action_dim)
        require_positive("width", width, integer=True)
        require_positive("depth", depth, integer=True)
        sa = observation_dim + action_dim
        self.hidden = nn.ModuleList([nn.Linear(sa, width)] + [nn.Linear(width + sa, width) for _ in range(depth - 1)])
        self.output = nn.Linear(width, 1)

    def evaluate(self, condition: Tensor, action: Tensor) -> Tensor:
        sa = _broadcast_cat(condition, action)
        h = torch.relu(self.hidden[0](sa))
        for layer in self.hidden[1:]:
            h = torch.relu(layer(torch.cat((h, sa), dim=-1)))
        return self.output(h)


class DeepResNetCritic(QNetwork):
    """``Linear([s, a] -> width)``, ``blocks`` pre-activation residual blocks, ReLU, ``Linear(width -> 1)``."""

    def __init__(self, observation_dim: int, action_dim: int, width: int = 256, blocks: int = 35) -> None:
        super().__init__(observation_dim, action_dim)
        require_positive("width", width, integer=True)
        require_positive("blocks", blocks, integer=True)
        self.net = nn.Sequential(
            nn.Linear(observation_dim + action_dim, width),
            *(ResidualBlock(width) for _ in range(blocks)),
            nn.ReLU(),
            nn.Linear(width, 1),
        )

    def evaluate(self, condition: Tensor, action: Tensor) -> Tensor:
        return self.net(_broadcast_cat(condition, action))


class ResNetFeaturesCritic(QNetwork):
    """"ResNet-Features": the primary network's state features ``z = primary(s)``, then an MLP with the dynamic
    network's architecture (``dynamic_hidden``) on ``[z, a]``. Same state pathway as SA-Hyper, no generated weights.
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        primary_widths: Sequence[int] = (256, 512, 1024),
        blocks_per_stage: int = 2,
        dynamic_hidden: Sequence[int] = (256,),
        init_scale: float = 0.5,
    ) -> None:
        super().__init__(observation_dim, action_dim)
        self.primary = PrimaryNetwork(observation_dim, primary_widths, blocks_per_stage, init_scale)
        self.head = mlp(self.primary.output_dim + action_dim, require_positive_sizes("dynamic_hidden", dynamic_hidden), 1)

    def condition(self, observation: Tensor) -> Tensor:
        return self.primary(observation)

    def evaluate(self, condition: Tensor, action: Tensor) -> Tensor:
        return self.head(_broadcast_cat(condition, action))


#: name -> (class, default keyword arguments): the paper's critics (:mod:`hyperrl.nn.registry`).
CRITICS: dict[str, tuple[type[QNetwork], dict[str, Any]]] = {
    "sa_hyper": (SAHyperCritic, {}),
    "as_hyper": (ASHyperCritic, {}),
    "random_hyper": (RandomHyperCritic, {}),
    "mlp": (MLPCritic, {"hidden": (256, 256)}),
    "mlp_small": (MLPCritic, {"hidden": (256,)}),
    "mlp_large": (MLPCritic, {"hidden": (2900, 2900)}),
    "resnet_features": (ResNetFeaturesCritic, {}),
    "deep_resnet": (DeepResNetCritic, {"width": 256, "blocks": 35}),
    "d2rl": (D2RLCritic, {"width": 256, "depth": 4}),
}
#: the critic an off-policy algorithm takes: a name of :data:`CRITICS` or a :class:`QNetwork` class and settings
CRITIC = NetworkKind("critic", QNetwork, CRITICS, ("observation_dim", "action_dim"))
#: the annotation of a critic setting: jsonargparse accepts a name, or ``class_path``/``init_args`` of a class
#: called with ``(observation_dim, action_dim)``
CriticChoice = Union[Literal[tuple(CRITICS)], Callable[[int, int], QNetwork]]  # noqa: UP007


def critic_options(name: str) -> list[str]:
    """The keyword overrides that critic ``name`` accepts (a hypernetwork critic: every :class:`HyperNetwork` option,
    e.g. ``primary_widths``, ``dynamic_hidden``, ``head_bounds``, ``init``, ``init_scale``)."""
    return CRITIC.options(CRITIC.resolve(name)[0])


def critic_class(name: str) -> type[QNetwork]:
    return CRITIC.resolve(name)[0]


def make_critic(critic: Any, observation_dim: int, action_dim: int, **overrides: Any) -> QNetwork:
    """Build one Q-network, e.g. ``make_critic("sa_hyper", 17, 6)``; ``critic`` is a name of :data:`CRITICS` or any
    form :class:`~hyperrl.nn.registry.NetworkKind` takes (``{"class_path": ..., "init_args": ...}``, a class).

    ``overrides`` change the architecture (e.g. ``primary_widths=(32, 32, 64), dynamic_hidden=(16,)`` for a small
    SA-Hyper). An unknown name or option raises :class:`~hyperrl.errors.ConfigurationError`.
    """
    return CRITIC.build(critic, observation_dim, action_dim, **overrides)
