"""The hypernetwork: a primary network emits, per sample, the weights of a small dynamic network.

Notation (``hyperrl-paper.md`` §1): the *meta* input ``m`` (e.g. the state) goes through the primary network
to an embedding ``z``; the weight heads map ``z`` to the parameters ``(W_l, b_l, g_l = 1 + s_l)`` of every layer
``l`` of the dynamic network; the dynamic network consumes the *base* input ``x`` (e.g. the action)::

    h_0 = x
    h_l = φ((W_l(z) h_{l-1}) ⊙ g_l(z) + b_l(z))        φ = ReLU for hidden layers, identity for the output

All shapes carry any number of leading batch dimensions ``...``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from hyperrl.errors import ConfigurationError, require_positive, require_positive_sizes, require_sequence

#: Per-sample parameters of one dynamic layer: weight ``(..., out, in)``, bias ``(..., out)``, gain ``(..., out)``.
DynamicLayer = tuple[Tensor, Tensor, Tensor]


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
    ``256·m + 6,169,344`` parameters. Every weight is initialised U(±1/(2√fan_in)).
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
    distribution, and runs as one matrix multiply. Initialisation: the rows that generate layer ``l`` are
    U(±bounds[l]) (0.05 for the first dynamic layer, 0.008 for the output layer in the paper), all biases zero.
    """

    def __init__(self, z_dim: int, layer_sizes: Sequence[tuple[int, int]], bounds: Sequence[float]) -> None:
        super().__init__()
        if len(bounds) != len(layer_sizes):
            raise ValueError(f"need one init bound per dynamic layer: got {len(bounds)} for {len(layer_sizes)}")
        self.layer_sizes = [(int(o), int(i)) for o, i in layer_sizes]
        self._splits = [n for o, i in self.layer_sizes for n in (o * i, o, o)]
        self.generator = nn.Linear(z_dim, sum(self._splits))
        with torch.no_grad():
            self.generator.bias.zero_()
            row = 0
            for (o, i), bound in zip(self.layer_sizes, bounds):
                rows = o * i + 2 * o
                self.generator.weight[row : row + rows].uniform_(-bound, bound)
                row += rows

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


class HyperNetwork(nn.Module):
    """Primary network + weight heads: ``meta -> [(W_l, b_l, g_l)]``; :func:`dynamic_forward` applies them.

    Args:
        meta_dim: size of the input of the primary network (the state for the SA-Hyper critic).
        base_dim: size of the input of the dynamic network (the action for the SA-Hyper critic).
        output_dim: size of the dynamic network's output (1 for a Q-network).
        primary_widths, blocks_per_stage: the primary network (see :class:`PrimaryNetwork`).
        dynamic_hidden: hidden widths of the dynamic network (paper: one hidden layer of 256).
        head_bounds: ``(first, rest)`` uniform init bounds of the head rows; the output layer gets ``rest``,
            every hidden layer ``first`` (paper: 0.05 and 0.008).

    Parameter count (paper defaults): ``256·m + 6,169,344 + 262,400·n + 524,800 + 264,450·o``.
    """

    def __init__(
        self,
        meta_dim: int,
        base_dim: int,
        output_dim: int,
        primary_widths: Sequence[int] = (256, 512, 1024),
        blocks_per_stage: int = 2,
        dynamic_hidden: Sequence[int] = (256,),
        head_bounds: tuple[float, float] = (0.05, 0.008),
    ) -> None:
        super().__init__()
        for name, value in (("meta_dim", meta_dim), ("base_dim", base_dim), ("output_dim", output_dim)):
            require_positive(name, value, integer=True)
        dynamic_hidden = require_positive_sizes("dynamic_hidden", dynamic_hidden)
        head_bounds = require_sequence("head_bounds", head_bounds, "two positive numbers (first, rest)")
        if len(head_bounds) != 2:
            raise ConfigurationError(f"head_bounds={head_bounds!r} is not allowed: expected two bounds (first, rest)")
        for bound in head_bounds:
            require_positive("head_bounds entry", bound)
        self.primary = PrimaryNetwork(int(meta_dim), primary_widths, blocks_per_stage)
        sizes = list(zip((*dynamic_hidden, int(output_dim)), (int(base_dim), *dynamic_hidden)))
        bounds = [head_bounds[0]] * len(dynamic_hidden) + [head_bounds[1]]
        self.heads = WeightHeads(self.primary.output_dim, sizes, bounds)

    def forward(self, meta: Tensor) -> list[DynamicLayer]:
        """``(..., meta_dim) ->`` the dynamic network's per-sample layers."""
        return self.heads(self.primary(meta))
