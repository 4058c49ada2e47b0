"""An ensemble of ``E`` same-architecture Q-networks (SAC's and TD3's twin critics) run as ONE network.

Member ``k``'s affine layers ``y = x Wₖᵀ + bₖ`` are stored stacked, weight ``(E, in, out)`` and bias ``(E, 1, out)``,
and applied as one batched matrix multiply ``baddbmm(b, x, W)`` over ``x`` of shape ``(E, N, in)``. Every other
parameter of the members (e.g. the random-hyper critic's embedding) is stacked along a new leading dimension.
The critics' own ``condition``/``evaluate`` code runs unchanged: it is written for any leading batch shape, and
here the leading dimension is the member index.

Why: on a CPU, one batched multiply of the twin critics runs each member's matrix product on its own thread, and on
a GPU it halves the number of kernel launches (the measured gains are in ``docs/benchmarks.md``).
The ``(E, in, out)`` weight layout lets the backward pass compute ``∂L/∂W = xᵀ ∂L/∂y`` without a transposed copy.

Members are independent networks: ``ensemble(o, a)[k] == members[k](o, a)`` exactly, the parameters of member
``k`` get exactly the gradient that member would get on its own, and :meth:`CriticEnsemble.member` gives member
``k`` back as a plain :class:`~hyperrl.nn.critics.QNetwork`.

Members may also be the meta-RL critics of :mod:`hyperrl.nn.meta_critics` (PEARL's twin ``Q(s, a, c)``, or an
ensemble of ``V(s, c)``): a member class says which of its ``forward`` inputs feed ``condition`` and which feed
``evaluate`` through the class attributes ``condition_inputs`` / ``evaluate_inputs`` (indices into the
``forward`` arguments; a plain ``QNetwork``, which has neither, is ``(0,)`` / ``(1,)``: ``condition(o)``,
``evaluate(condition, a)``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hyperrl.nn.critics import QNetwork


class EnsembleLinear(nn.Module):
    """``E`` independent ``nn.Linear(in_features, out_features)``: ``(E, ..., in) -> (E, ..., out)``.

    ``weight`` has shape ``(E, in, out)`` (member ``k``'s ``nn.Linear`` weight is ``weight[k].T``), ``bias`` has
    shape ``(E, 1, out)``. Build it from existing linears with :meth:`from_linears` (that is how members keep their
    own initialisation).
    """

    def __init__(self, ensemble_size: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_features))

    @classmethod
    def from_linears(cls, linears: Sequence[nn.Linear]) -> EnsembleLinear:
        first = linears[0]
        if first.bias is None:
            raise ValueError("EnsembleLinear needs linears with a bias")
        layer = cls(len(linears), first.in_features, first.out_features).to(first.weight.device, first.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(torch.stack([lin.weight.transpose(0, 1) for lin in linears]))
            layer.bias.copy_(torch.stack([lin.bias for lin in linears]).unsqueeze(1))
        return layer

    def forward(self, x: Tensor) -> Tensor:
        size = self.weight.shape[0]
        if x.dim() < 2 or x.shape[0] != size:
            raise ValueError(
                f"EnsembleLinear of {size} members expects input (E={size}, ..., {self.in_features}), "
                f"got {tuple(x.shape)}"
            )
        batch = x.shape[1:-1]
        y = torch.baddbmm(self.bias, x.reshape(size, -1, self.in_features), self.weight)
        return y.reshape(size, *batch, self.out_features)

    def extra_repr(self) -> str:
        return f"members={self.weight.shape[0]}, in_features={self.in_features}, out_features={self.out_features}"


class CriticEnsemble(nn.Module):
    """``E`` Q-networks of one architecture, evaluated together: ``(o, a) -> Q`` of shape ``(E, ..., 1)``.

    Built from ``E`` existing critics (their weights are copied, so each member keeps its own initialisation)::

        twin = CriticEnsemble([make_critic("sa_hyper", 17, 6) for _ in range(2)])
        q = twin(observation, action)          # (2, B, 1); q.min(0).values is SAC's min over the twin
        q1 = twin.member(0)                    # member 0 as a plain QNetwork (a copy)

    Like a :class:`~hyperrl.nn.critics.QNetwork` it splits into ``condition(o)`` (the state-only part, shape
    ``(E, ...)``) and ``evaluate(condition, a)``, so losses can reuse the state-only work. Inputs are shared by the
    members: ``observation (..., obs_dim)`` and ``action (..., act_dim)``, whose batch shapes broadcast (e.g. one
    state against many actions: ``(B, obs_dim)`` with ``(N, B, act_dim)``). :meth:`evaluate` on its own needs an
    action with as many dimensions as the observation that :meth:`condition` was given (add leading singleton
    dimensions to the observation first, as :meth:`forward` does).

    Meta-critics work the same way with more inputs, each shared by the members and given the member dimension::

        twin = CriticEnsemble([make_meta_critic("hyper", 20, 6, 5) for _ in range(2)])
        q = twin(observation, action, context)                      # (2, ..., 1)
        q = twin.evaluate(twin.condition(observation, context), action, context)
    """

    def __init__(self, critics: Sequence[QNetwork]) -> None:
        super().__init__()
        critics = list(critics)
        if not critics:
            raise ValueError("CriticEnsemble needs at least one critic")
        shapes = [[(n, p.shape) for n, p in c.named_parameters()] for c in critics]
        if any(type(c) is not type(critics[0]) or s != shapes[0] for c, s in zip(critics, shapes)):
            raise ValueError("CriticEnsemble members must be critics of one class with identical parameter shapes")
        self.size = len(critics)
        net = copy.deepcopy(critics[0])
        linear_names = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)]
        for name in linear_names:
            _set_submodule(net, name, EnsembleLinear.from_linears([c.get_submodule(name) for c in critics]))
        #: names (relative to the member) of the non-linear parameters, stacked along a new leading dimension
        self.stacked_names = [n for n, _ in net.named_parameters() if not _owner_is_ensemble_linear(net, n)]
        for name in self.stacked_names:
            owner, leaf = _split(net, name)
            with torch.no_grad():
                stacked = torch.stack([c.get_parameter(name).detach() for c in critics]).clone()
            setattr(owner, leaf, nn.Parameter(stacked))
        self.linear_names = linear_names
        self.net = net

    # -------------------------------------------------------------------------------------------- properties
    @property
    def is_hypernetwork(self) -> bool:
        return self.net.is_hypernetwork

    def __len__(self) -> int:
        return self.size

    def parameters_per_member(self) -> int:
        return sum(p.numel() for p in self.parameters()) // self.size

    # -------------------------------------------------------------------------------------------- forward
    def _expand(self, x: Tensor) -> Tensor:
        """Give a shared input the leading member dimension (a view: no copy)."""
        return x.expand(self.size, *x.shape)

    def condition(self, *meta_inputs: Tensor) -> Any:
        """The meta-input-only part of every member, with leading dimension ``E``: ``condition(observation)`` for a
        :class:`~hyperrl.nn.critics.QNetwork`, ``condition(observation, context)`` for a meta-critic."""
        return self.net.condition(*(self._expand(x) for x in meta_inputs))

    def evaluate(self, condition: Any, *inputs: Tensor) -> Tensor:
        """The value of every member from its condition, ``(E, ..., 1)``: ``evaluate(condition, action)`` for a
        QNetwork, ``evaluate(condition, action, context)`` for a meta-Q, ``evaluate(condition, context)`` for a
        meta-V."""
        return self.net.evaluate(condition, *(self._expand(x) for x in inputs))

    def forward(self, *inputs: Tensor) -> Tensor:
        """The members' ``forward(*inputs)`` stacked: ``(..., obs_dim), (..., act_dim) -> (E, ..., 1)`` for a QNetwork
        (``(o, a, c)`` for a meta-Q, ``(o, c)`` for a meta-V), with ``...`` the broadcast batch shape."""
        # equal ranks first, so that the member dimension lines up in every input (views, no copies; the
        # meta-input-only part still runs once per distinct meta input)
        rank = max(x.dim() for x in inputs)
        inputs = tuple(x.reshape((1,) * (rank - x.dim()) + tuple(x.shape)) for x in inputs)
        meta = getattr(self.net, "condition_inputs", (0,))
        base = getattr(self.net, "evaluate_inputs", (1,))
        return self.evaluate(self.condition(*(inputs[i] for i in meta)), *(inputs[i] for i in base))

    # -------------------------------------------------------------------------------------------- members
    def member_tensors(self, stacked: Mapping[str, Tensor], k: int) -> dict[str, Tensor]:
        """Map tensors named and shaped like this ensemble's parameters (the parameters themselves, their gradients,
        ...) to member ``k``'s, named and shaped like a plain critic's ``named_parameters()``."""
        out: dict[str, Tensor] = {}
        for name, tensor in stacked.items():
            if not name.startswith("net."):
                raise KeyError(f"{name!r} is not a parameter of this ensemble")
            name = name[len("net."):]
            module, _, leaf = name.rpartition(".")
            if module in self.linear_names:
                out[name] = tensor[k].transpose(0, 1) if leaf == "weight" else tensor[k, 0]
            else:
                out[name] = tensor[k]
        return out

    def member(self, k: int) -> QNetwork:
        """Member ``k`` as a standalone :class:`~hyperrl.nn.critics.QNetwork` (a copy of its weights)."""
        if not 0 <= k < self.size:
            raise IndexError(f"member {k} of an ensemble of {self.size}")
        net = copy.deepcopy(self.net)
        for name in self.linear_names:
            layer = net.get_submodule(name)
            _set_submodule(
                net, name,
                nn.Linear(layer.in_features, layer.out_features, device=layer.weight.device, dtype=layer.weight.dtype),
            )  # fmt: skip
        for name in self.stacked_names:
            owner, leaf = _split(net, name)
            setattr(owner, leaf, nn.Parameter(torch.empty_like(getattr(owner, leaf)[0])))
        values = self.member_tensors({n: p.detach() for n, p in self.named_parameters()}, k)
        with torch.no_grad():
            for name, p in net.named_parameters():
                p.copy_(values[name])
        return net

    def load_member(self, k: int, critic: QNetwork) -> None:
        """Overwrite member ``k``'s weights with ``critic``'s (same class and shapes)."""
        views = self.member_tensors(dict(self.named_parameters()), k)
        source = dict(critic.named_parameters())
        if set(source) != set(views):
            raise ValueError("load_member: the critic's parameters do not match this ensemble's members")
        with torch.no_grad():
            for name, view in views.items():
                view.copy_(source[name])


def _split(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    owner, _, leaf = name.rpartition(".")
    return (root.get_submodule(owner) if owner else root), leaf


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    owner, leaf = _split(root, name)
    setattr(owner, leaf, module)


def _owner_is_ensemble_linear(root: nn.Module, parameter_name: str) -> bool:
    owner, _ = _split(root, parameter_name)
    return isinstance(owner, EnsembleLinear)
