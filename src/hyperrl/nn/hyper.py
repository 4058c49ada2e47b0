"""The hypernetwork: a primary network emits, per sample, the weights of a small dynamic network.

Notation (``hyperrl-paper.md`` §1): the *meta* input ``m`` (e.g. the state) goes through the primary network
to an embedding ``z``; the weight heads map ``z`` to the parameters ``(W_l, b_l, g_l = 1 + s_l)`` of every layer
``l`` of the dynamic network; the dynamic network consumes the *base* input ``x`` (e.g. the action)::

    h_0 = x
    h_l = φ((W_l(z) h_{l-1}) ⊙ g_l(z) + b_l(z))        φ = ReLU for hidden layers, identity for the output

A dynamic network may have several output layers that all read the last hidden layer (PEARL's hyper policy:
a mean head and a log-std head), ``y_k = (W_k(z) h_L) ⊙ g_k(z) + b_k(z)``; their generators are rows of the same
single fused linear map as the hidden layers'.

All shapes carry any number of leading batch dimensions ``...``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hyperrl.errors import ConfigurationError, require_positive, require_positive_sizes, require_sequence

#: Per-sample parameters of one dynamic layer: weight ``(..., out, in)``, bias ``(..., out)``, gain ``(..., out)``.
DynamicLayer = tuple[Tensor, Tensor, Tensor]

#: How the weight heads start: the paper's small uniform rows, or Beck et al. (2022)'s Bias-HyperInit.
HEAD_INITS = ("paper", "bias_hyperinit")


def uniform_fan_in_(linear: nn.Linear, scale: float = 0.5) -> None:
    """Weights ~ U(±scale/√fan_in); the paper's primary network uses ``scale = 1/2`` (half PyTorch's bound).

    Biases keep PyTorch's default U(±1/√fan_in), as in the authors' code.
    """
    bound = scale / math.sqrt(linear.in_features)
    nn.init.uniform_(linear.weight, -bound, bound)


class ResidualBlock(nn.Module):
    """Pre-activation residual block ``x + L2(ReLU(L1(ReLU(x))))``: no norm, no activation after the sum."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(width, width)
        self.linear2 = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.linear2(torch.relu(self.linear1(torch.relu(x))))


class PrimaryNetwork(nn.Module):
    """Residual MLP ``m -> z`` (the paper's ``Meta_Embadding``), no final activation.

    Each stage is a projection ``Linear(prev, width)`` followed by ``blocks_per_stage`` residual blocks of that
    width; the last width is the size of ``z``. Paper default: widths (256, 512, 1024), 2 blocks each, which has
    ``256·m + 6,169,344`` parameters. Every weight is initialised U(±init_scale/√fan_in): ``init_scale = 1/2`` in
    the TD3, PEARL and MAML code, ``1/√2`` (bound ``1/√(2·fan_in)``) in the authors' SAC code.
    """

    def __init__(
        self,
        input_dim: int,
        widths: Sequence[int] = (256, 512, 1024),
        blocks_per_stage: int = 2,
        init_scale: float = 0.5,
    ) -> None:
        super().__init__()
        require_positive("input_dim", input_dim, integer=True)
        require_positive("init_scale", init_scale)
        widths = require_positive_sizes("primary_widths", widths)
        if not widths:
            raise ConfigurationError("primary_widths=() is not allowed: expected at least one width")
        if isinstance(blocks_per_stage, bool) or not isinstance(blocks_per_stage, int) or blocks_per_stage < 0:
            raise ConfigurationError(f"blocks_per_stage={blocks_per_stage!r} is not allowed: expected an integer >= 0")
        layers: list[nn.Module] = []
        previous = input_dim
        for width in widths:
            layers.append(nn.Linear(previous, width))
            layers.extend(ResidualBlock(width) for _ in range(blocks_per_stage))
            previous = width
        self.layers = nn.Sequential(*layers)
        self.output_dim = previous
        for module in self.modules():
            if isinstance(module, nn.Linear):
                uniform_fan_in_(module, init_scale)

    def forward(self, meta: Tensor) -> Tensor:
        """``(..., m) -> (..., z_dim)``."""
        return self.layers(meta)


class WeightHeads(nn.Module):
    """Maps ``z`` to the per-sample ``(W, b, g)`` of every dynamic layer with ONE fused linear map.

    The paper uses three linears per dynamic layer (``W``, ``b``, ``s`` generators, gain ``g = 1 + s``); fusing all of
    them into one ``Linear(z_dim, Σ_l (out_l·in_l + 2·out_l))`` has exactly the same parameters and initial
    distribution, and runs as one matrix multiply. ``layer_sizes`` lists ``(out, in)`` per dynamic layer (hidden
    layers and output heads alike) and ``bounds`` one init bound per layer.

    Initialisation (``init``):

    * ``"paper"``: the rows that generate layer ``l`` are U(±bounds[l]) (0.05 for the first dynamic layer, 0.008
      for the output layer, 0.001 for PEARL's policy log-std head), all biases zero: the gains start ≈ 1 and the
      generated weights small and meta-input dependent.
    * ``"bias_hyperinit"`` (Beck et al. 2022, "Hypernetworks in Meta-Reinforcement Learning"): every generator
      weight is zero, and the generator biases of layer ``l`` hold PyTorch's standard ``nn.Linear`` init of that
      dynamic layer, U(±1/√in_l) for its ``W`` and its ``b``. So at initialisation the generated layers ARE a
      standard fan-in initialised network, the same one whatever the meta input. The gain generator's weights and
      biases are zero, so ``g = 1`` exactly. ``bounds`` are not used.
    """

    def __init__(
        self, z_dim: int, layer_sizes: Sequence[tuple[int, int]], bounds: Sequence[float], init: str = "paper"
    ) -> None:
        super().__init__()
        if len(bounds) != len(layer_sizes):
            raise ValueError(f"need one init bound per dynamic layer: got {len(bounds)} for {len(layer_sizes)}")
        if init not in HEAD_INITS:
            raise ConfigurationError(f"init={init!r} is not allowed: expected one of {', '.join(HEAD_INITS)}")
        self.init = init
        self.layer_sizes = [(int(o), int(i)) for o, i in layer_sizes]
        self._splits = [n for o, i in self.layer_sizes for n in (o * i, o, o)]
        self.generator = nn.Linear(z_dim, sum(self._splits))
        with torch.no_grad():
            self.generator.bias.zero_()
            row = 0
            if init == "paper":
                for (o, i), bound in zip(self.layer_sizes, bounds):
                    rows = o * i + 2 * o
                    self.generator.weight[row : row + rows].uniform_(-bound, bound)
                    row += rows
            else:
                self.generator.weight.zero_()
                for o, i in self.layer_sizes:
                    fan_in_bound = 1.0 / math.sqrt(i)
                    self.generator.bias[row : row + o * i + o].uniform_(-fan_in_bound, fan_in_bound)  # W and b
                    row += o * i + 2 * o  # the gain rows stay 0: g = 1 + 0

    def forward(self, z: Tensor) -> list[DynamicLayer]:
        """``(..., z_dim) ->`` a list of ``(W (..., out, in), b (..., out), g (..., out))``, one per layer."""
        flat = self.generator(z).split(self._splits, dim=-1)
        batch = z.shape[:-1]
        layers = []
        for k, (o, i) in enumerate(self.layer_sizes):
            weight, bias, gain = flat[3 * k : 3 * k + 3]
            layers.append((weight.reshape(*batch, o, i), bias, 1.0 + gain))
        return layers


def dynamic_forward(x: Tensor, layers: Sequence[DynamicLayer]) -> Tensor:
    """Run the dynamic network: ``h_l = φ((W_l h) ⊙ g_l + b_l)``, ReLU between layers, none at the output.

    ``x`` is ``(..., in)``; per-sample parameters broadcast against it (so one weight set, shape ``(out, in)``,
    can serve a whole batch).
    """
    h = x
    last = len(layers) - 1
    for k, (weight, bias, gain) in enumerate(layers):
        h = torch.matmul(weight, h.unsqueeze(-1)).squeeze(-1) * gain + bias
        if k < last:
            h = torch.relu(h)
    return h


def _shared_weight_matmul(weight: Tensor, h: Tensor) -> Tensor:
    """``W h`` for ``weight (*wb, out, in)`` and ``h (*hb, in)`` with broadcasting batch shapes ``wb`` and ``hb``.

    The trailing batch dimensions in which the weight is shared (size 1 in ``wb``, e.g. N transitions of one task)
    are folded into the rows of one matrix product per weight set, instead of being expanded into N copies of
    the weight as ``torch.matmul(weight, h[..., None])`` would do.
    """
    out_dim, in_dim = weight.shape[-2:]
    batch = torch.broadcast_shapes(weight.shape[:-2], h.shape[:-1])
    wb = (1,) * (len(batch) - (weight.dim() - 2)) + tuple(weight.shape[:-2])
    lead = len(batch)
    while lead > 0 and wb[lead - 1] == 1:
        lead -= 1
    if lead == len(batch):  # no shared dimension: one weight set per sample
        return torch.matmul(weight, h.unsqueeze(-1)).squeeze(-1)
    w = weight.reshape(*wb[:lead], out_dim, in_dim)
    rows = h.expand(*batch, in_dim).reshape(*batch[:lead], -1, in_dim)
    return torch.matmul(rows, w.transpose(-1, -2)).reshape(*batch, out_dim)


def dynamic_heads_forward(x: Tensor, layers: Sequence[DynamicLayer], num_outputs: int) -> tuple[Tensor, ...]:
    """A dynamic network with ``num_outputs`` output layers, each reading the last hidden layer.

    ``layers[:-num_outputs]`` are the hidden layers (ReLU after each), ``layers[-num_outputs:]`` the output heads
    (no activation). ``dynamic_heads_forward(x, layers, 1)[0]`` equals ``dynamic_forward(x, layers)``. Weights
    shared along trailing batch dimensions (e.g. per-task weights of batch shape ``(T, 1)`` against states of
    shape ``(T, N, in)``) are applied without being copied per sample.
    """
    if not 1 <= num_outputs <= len(layers):
        raise ValueError(f"num_outputs={num_outputs} for a dynamic network of {len(layers)} layers")
    h = x
    for weight, bias, gain in layers[:-num_outputs]:
        h = torch.relu(_shared_weight_matmul(weight, h) * gain + bias)
    return tuple(_shared_weight_matmul(weight, h) * gain + bias for weight, bias, gain in layers[-num_outputs:])


class HyperNetwork(nn.Module):
    """Primary network + weight heads: ``meta -> [(W_l, b_l, g_l)]``; :func:`dynamic_forward` applies them.

    Args:
        meta_dim: size of the input of the primary network (the state for the SA-Hyper critic).
        base_dim: size of the input of the dynamic network (the action for the SA-Hyper critic).
        output_dim: size of the dynamic network's output (1 for a Q-network), or a sequence of sizes for several
            output heads that all read the last hidden layer (``(|A|, |A|)`` for PEARL's mean and log-std heads).
        primary_widths, blocks_per_stage: the primary network (see :class:`PrimaryNetwork`).
        dynamic_hidden: hidden widths of the dynamic network (paper: one hidden layer of 256).
        head_bounds: uniform init bounds of the head rows, ``(first, rest)``: every hidden layer gets ``first``,
            every output head ``rest`` (paper: 0.05 and 0.008); or ``(first, out_1, ..., out_K)`` with one bound
            per output head (PEARL's policy: 0.05, 0.008, 0.001).
        init: ``"paper"`` or ``"bias_hyperinit"`` (see :class:`WeightHeads`; the latter ignores ``head_bounds``).
        init_scale: the primary network's weight bound is ``init_scale/√fan_in`` (``0.5``: the paper; ``1/√2``:
            the authors' SAC code).

    Parameter count (paper defaults): ``256·m + 6,169,344 + 262,400·n + 524,800 + 264,450·Σ_k o_k``.
    """

    def __init__(
        self,
        meta_dim: int,
        base_dim: int,
        output_dim: int | Sequence[int],
        primary_widths: Sequence[int] = (256, 512, 1024),
        blocks_per_stage: int = 2,
        dynamic_hidden: Sequence[int] = (256,),
        head_bounds: Sequence[float] = (0.05, 0.008),
        init: str = "paper",
        init_scale: float = 0.5,
    ) -> None:
        super().__init__()
        for name, value in (("meta_dim", meta_dim), ("base_dim", base_dim)):
            require_positive(name, value, integer=True)
        if isinstance(output_dim, int) and not isinstance(output_dim, bool):
            output_dim = (output_dim,)
        output_dims = require_positive_sizes("output_dim", output_dim)
        if not output_dims:
            raise ConfigurationError("output_dim=() is not allowed: expected at least one output size")
        dynamic_hidden = require_positive_sizes("dynamic_hidden", dynamic_hidden)
        head_bounds = require_sequence("head_bounds", head_bounds, "positive numbers (first, rest)")
        allowed_lengths = {2, 1 + len(output_dims)}
        if len(head_bounds) not in allowed_lengths:
            expected = " or ".join(str(n) for n in sorted(allowed_lengths))
            raise ConfigurationError(
                f"head_bounds={head_bounds!r} is not allowed: expected {expected} bounds (first, rest)"
                + (" or (first, one per output head)" if len(output_dims) > 1 else "")
            )
        for bound in head_bounds:
            require_positive("head_bounds entry", bound)
        if init not in HEAD_INITS:
            raise ConfigurationError(f"init={init!r} is not allowed: expected one of {', '.join(HEAD_INITS)}")
        self.output_dims = tuple(int(o) for o in output_dims)
        self.primary = PrimaryNetwork(int(meta_dim), primary_widths, blocks_per_stage, init_scale)
        last_hidden = dynamic_hidden[-1] if dynamic_hidden else int(base_dim)
        sizes = list(zip(dynamic_hidden, (int(base_dim), *dynamic_hidden[:-1])))
        sizes += [(o, last_hidden) for o in self.output_dims]
        per_output = len(head_bounds) == 1 + len(output_dims)
        output_bounds = head_bounds[1:] if per_output else head_bounds[1:] * len(output_dims)
        bounds = [head_bounds[0]] * len(dynamic_hidden) + list(output_bounds)
        self.heads = WeightHeads(self.primary.output_dim, sizes, bounds, init)

    @property
    def num_outputs(self) -> int:
        """Number of output heads of the dynamic network."""
        return len(self.output_dims)

    def forward(self, meta: Tensor) -> list[DynamicLayer]:
        """``(..., meta_dim) ->`` the dynamic network's per-sample layers (hidden layers, then output heads)."""
        return self.heads(self.primary(meta))


def hyper_options() -> list[str]:
    """The keyword options of :class:`HyperNetwork` (everything after the three sizes)."""
    names = list(inspect.signature(HyperNetwork.__init__).parameters)
    return names[names.index("output_dim") + 1 :]


def option_parameters(cls: type, positional: Sequence[str]) -> dict[str, inspect.Parameter]:
    """The keyword options a network class accepts, with their defaults: its own ``__init__`` parameters except
    ``positional``, and, when it forwards ``**hyper`` to :class:`HyperNetwork`, every :func:`hyper_options` it does
    not set itself."""
    options: dict[str, inspect.Parameter] = {}
    forwards = False
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            forwards = True
        elif name != "self" and name not in positional:
            options[name] = parameter
    if forwards:
        hyper = inspect.signature(HyperNetwork.__init__).parameters
        options.update({name: hyper[name] for name in hyper_options() if name not in options})
    return options


def accepted_options(cls: type, positional: Sequence[str]) -> list[str]:
    """The names of :func:`option_parameters`."""
    return list(option_parameters(cls, positional))


def check_options(kind: str, name: str, allowed: Sequence[str], overrides: dict[str, Any]) -> None:
    """Raise a one-line :class:`ConfigurationError` for the first override of ``kind`` ``name`` not in ``allowed``."""
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ConfigurationError(
            f"unknown option {unknown[0]!r} for {kind} {name!r}; allowed: {', '.join(allowed) or 'none'}"
        )
