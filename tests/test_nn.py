"""Unit tests for the critics and the hypernetwork of ``hyperrl.nn`` (``hyperrl-paper.md`` §1, §2, §9)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hyperrl.errors import ConfigurationError
from hyperrl.nn import (
    CRITICS,
    HyperNetwork,
    PrimaryNetwork,
    ResidualBlock,
    SAHyperCritic,
    WeightHeads,
    dynamic_forward,
    make_critic,
)

OBS, ACT = 17, 6
HYPER_SMALL = {"primary_widths": (32, 32, 64), "blocks_per_stage": 1, "dynamic_hidden": (16,)}
#: Small versions of every critic (same code paths, tiny widths) for the forward-pass tests.
SMALL = {
    "sa_hyper": HYPER_SMALL,
    "as_hyper": HYPER_SMALL,
    "random_hyper": HYPER_SMALL,
    "mlp": {"hidden": (16, 16)},
    "mlp_small": {"hidden": (16,)},
    "mlp_large": {"hidden": (32, 32)},
    "d2rl": {"width": 16},
    "deep_resnet": {"width": 16, "blocks": 2},
    "resnet_features": HYPER_SMALL,
}
ALL_CRITICS = sorted(SMALL)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def small_critic(name: str, obs_dim: int = OBS, act_dim: int = ACT, seed: int = 0, **extra) -> nn.Module:
    torch.manual_seed(seed)
    return make_critic(name, obs_dim, act_dim, **{**SMALL[name], **extra}).double()


@pytest.fixture(scope="module")
def paper_critic() -> SAHyperCritic:
    """The paper-size SA-Hyper critic for (17, 6), seed 0. Tests must not modify it."""
    torch.manual_seed(0)
    return make_critic("sa_hyper", OBS, ACT)


# ----------------------------------------------------------------------------------------------------------------------
# 1. Parameter counts (built on the meta device: exact counts, no memory, no init time)

PAPER_COUNTS_17_6 = {
    "sa_hyper": 8_537_346,
    "as_hyper": 11_420_930,
    "random_hyper": 12_995_074 + 5,  # the paper's count + the 5-dim embedding that each Q keeps
    "mlp": 72_193,
    "mlp_small": 6_401,
    "mlp_large": 8_485_401,
    "d2rl": 221_441,
    "deep_resnet": 4_611_841,
    "resnet_features": 6_437_889,
}


def test_registry_has_the_nine_critics():
    """The registry holds exactly the paper's critic names."""
    assert set(CRITICS) == set(PAPER_COUNTS_17_6)


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS_17_6))
def test_paper_parameter_count_17_6(name):
    """Each Q-network has the paper's exact parameter count for HalfCheetah (17, 6)."""
    with torch.device("meta"):
        critic = make_critic(name, OBS, ACT)
    assert n_params(critic) == PAPER_COUNTS_17_6[name]


@pytest.mark.parametrize(("m", "n", "expected"), [(17, 6, 8_537_346), (11, 3, 7_748_610), (111, 8, 9_086_210)])
def test_sa_hyper_parameter_formula(m, n, expected):
    """SA-Hyper has 256·m + 262,400·n + 6,958,594 parameters (and the table's values)."""
    assert 256 * m + 262_400 * n + 6_958_594 == expected
    with torch.device("meta"):
        critic = make_critic("sa_hyper", m, n)
    assert n_params(critic) == expected


@pytest.mark.parametrize("m", [11, 17, 111])
def test_primary_network_parameter_formula(m):
    """The paper-size primary network alone has 256·m + 6,169,344 parameters."""
    with torch.device("meta"):
        trunk = PrimaryNetwork(m)
    assert n_params(trunk) == 256 * m + 6_169_344


def test_deep_resnet_70_blocks_parameter_count():
    """Deep-ResNet with 70 blocks (TD3's ``Deep_Critic``) has 9,217,281 parameters."""
    with torch.device("meta"):
        critic = make_critic("deep_resnet", OBS, ACT, blocks=70)
    assert n_params(critic) == 9_217_281


# ----------------------------------------------------------------------------------------------------------------------
# 2. Shapes


def test_primary_network_output_shape_paper_size(paper_critic):
    """For B states the paper-size primary network gives z of shape (B, 1024)."""
    with torch.no_grad():
        z = paper_critic.hyper.primary(torch.randn(4, OBS))
    assert z.shape == (4, 1024)


def test_weight_heads_shapes_paper_size(paper_critic):
    """Layer 1: W (B,256,|A|), b and g (B,256); output layer: W (B,1,256), b and g (B,1)."""
    with torch.no_grad():
        (w1, b1, g1), (w2, b2, g2) = paper_critic.hyper(torch.randn(4, OBS))
    assert w1.shape == (4, 256, ACT)
    assert b1.shape == g1.shape == (4, 256)
    assert w2.shape == (4, 1, 256)
    assert b2.shape == g2.shape == (4, 1)


def test_hypernetwork_shapes_follow_dynamic_hidden():
    """A deeper dynamic network gets one (W, b, g) per layer, chained out × in, with leading dims kept."""
    hyper = HyperNetwork(5, 3, 2, primary_widths=(8,), blocks_per_stage=1, dynamic_hidden=(7, 4))
    layers = hyper(torch.randn(2, 3, 5))
    assert [tuple(w.shape) for w, _, _ in layers] == [(2, 3, 7, 3), (2, 3, 4, 7), (2, 3, 2, 4)]
    assert [tuple(b.shape) for _, b, _ in layers] == [(2, 3, 7), (2, 3, 4), (2, 3, 2)]
    assert [tuple(g.shape) for _, _, g in layers] == [(2, 3, 7), (2, 3, 4), (2, 3, 2)]


@pytest.mark.parametrize("batch", [(), (5,), (3, 4)], ids=["unbatched", "B", "TxB"])
@pytest.mark.parametrize("name", ALL_CRITICS)
def test_critic_output_shape(name, batch):
    """Every critic maps (..., obs), (..., act) to Q of shape (..., 1)."""
    critic = small_critic(name)
    q = critic(torch.randn(*batch, OBS, dtype=torch.float64), torch.randn(*batch, ACT, dtype=torch.float64))
    assert q.shape == (*batch, 1)


@pytest.mark.parametrize("name", ALL_CRITICS)
def test_one_observation_broadcasts_against_many_actions(name):
    """Q(o, A) for one observation o and N actions equals Q(o repeated N times, A), shape (N, 1)."""
    critic = small_critic(name)
    obs = torch.randn(OBS, dtype=torch.float64)
    actions = torch.randn(7, ACT, dtype=torch.float64)
    q = critic(obs, actions)
    assert q.shape == (7, 1)
    torch.testing.assert_close(q, critic(obs.expand(7, OBS), actions))


def test_residual_block_is_pre_activation():
    """ResidualBlock(x) = x + L2(ReLU(L1(ReLU(x)))): no norm, no activation after the sum."""
    torch.manual_seed(0)
    block = ResidualBlock(8)
    x = torch.randn(5, 8)
    expected = x + block.linear2(torch.relu(block.linear1(torch.relu(x))))
    torch.testing.assert_close(block(x), expected)


def test_primary_network_layout_paper_size(paper_critic):
    """Paper trunk: Linear(m,256), 2 blocks, Linear(256,512), 2 blocks, Linear(512,1024), 2 blocks, no final activation."""
    layers = list(paper_critic.hyper.primary.layers)
    assert [type(layer) for layer in layers] == [nn.Linear, ResidualBlock, ResidualBlock] * 3
    assert [(layers[i].in_features, layers[i].out_features) for i in (0, 3, 6)] == [(OBS, 256), (256, 512), (512, 1024)]
    assert [layers[i].linear1.in_features for i in (1, 2, 4, 5, 7, 8)] == [256, 256, 512, 512, 1024, 1024]


# ----------------------------------------------------------------------------------------------------------------------
# 3. Equivalence


def explicit_linear_pair(w1, b1, g1, w2, b2, g2) -> nn.Sequential:
    """``Linear-ReLU-Linear`` whose weights are diag(g)·W and whose biases are b (one sample's dynamic network)."""
    first = nn.Linear(w1.shape[1], w1.shape[0]).double()
    last = nn.Linear(w2.shape[1], w2.shape[0]).double()
    with torch.no_grad():
        first.weight.copy_(g1[:, None] * w1)
        first.bias.copy_(b1)
        last.weight.copy_(g2[:, None] * w2)
        last.bias.copy_(b2)
    return nn.Sequential(first, nn.ReLU(), last)


def test_sa_hyper_batched_forward_equals_per_sample_linear_layers():
    """Batched SA-Hyper Q equals, sample by sample, an nn.Linear pair built from the generated (W, b, g)."""
    critic = small_critic("sa_hyper")
    obs = torch.randn(5, OBS, dtype=torch.float64)
    actions = torch.randn(5, ACT, dtype=torch.float64)
    with torch.no_grad():
        q = critic(obs, actions)
        (w1, b1, g1), (w2, b2, g2) = critic.hyper(obs)
        for i in range(5):
            net = explicit_linear_pair(w1[i], b1[i], g1[i], w2[i], b2[i], g2[i])
            torch.testing.assert_close(q[i], net(actions[i]))


def test_sa_hyper_one_state_is_a_fixed_network_over_actions():
    """For one state, Q(s, ·) on many actions equals one explicit nn.Linear pair applied to those actions."""
    critic = small_critic("sa_hyper")
    obs = torch.randn(OBS, dtype=torch.float64)
    actions = torch.randn(11, ACT, dtype=torch.float64)
    with torch.no_grad():
        net = explicit_linear_pair(*critic.hyper(obs)[0], *critic.hyper(obs)[1])
        torch.testing.assert_close(critic(obs, actions), net(actions))


def test_dynamic_forward_has_relu_between_layers_and_none_at_the_output():
    """A 3-layer dynamic network equals the explicit gated MLP with ReLU on hidden layers only."""
    torch.manual_seed(0)
    shapes = [(7, 3), (4, 7), (2, 4)]
    layers = [(torch.randn(5, o, i), torch.randn(5, o), torch.rand(5, o) + 0.5) for o, i in shapes]
    x = torch.randn(5, 3)
    expected = x
    for k, (w, b, g) in enumerate(layers):
        expected = torch.einsum("boi,bi->bo", w, expected) * g + b
        if k < 2:
            expected = expected.relu()
    out = dynamic_forward(x, layers)
    assert (out < 0).any()  # the output layer must not be rectified
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("name", ALL_CRITICS)
def test_forward_equals_evaluate_of_condition(name):
    """forward(o, a) == evaluate(condition(o), a), and one condition serves several action batches."""
    critic = small_critic(name)
    obs = torch.randn(4, OBS, dtype=torch.float64)
    a1, a2 = torch.randn(2, 4, ACT, dtype=torch.float64)
    cond = critic.condition(obs)
    torch.testing.assert_close(critic(obs, a1), critic.evaluate(cond, a1))
    torch.testing.assert_close(critic(obs, a2), critic.evaluate(cond, a2))


def test_sa_hyper_action_gradient_matches_closed_form():
    """Autograd's ∇ₐQ equals W1ᵀ·diag(g1 ⊙ 1[pre>0])·(g2·W2)ᵀ (float64)."""
    critic = small_critic("sa_hyper")
    obs = torch.randn(6, OBS, dtype=torch.float64)
    actions = torch.randn(6, ACT, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(critic(obs, actions).sum(), actions)
    with torch.no_grad():
        (w1, b1, g1), (w2, b2, g2) = critic.hyper(obs)
        pre = torch.einsum("bha,ba->bh", w1, actions) * g1 + b1
        assert (pre > 0).any() and (pre < 0).any()  # both branches of the ReLU are exercised
        back = g1 * (pre > 0) * (g2 * w2[:, 0, :])  # (B, H)
        closed_form = torch.einsum("bha,bh->ba", w1, back)
    torch.testing.assert_close(grad, closed_form)


def test_d2rl_concatenates_raw_input_to_every_later_hidden_layer():
    """D2RL: h1 = ReLU(L1([s,a])), h_k = ReLU(L_k([h_{k-1}, s, a])), Q = Lout(h_4)."""
    critic = small_critic("d2rl")
    obs, actions = torch.randn(4, OBS, dtype=torch.float64), torch.randn(4, ACT, dtype=torch.float64)
    sa = torch.cat((obs, actions), dim=-1)
    h = torch.relu(critic.hidden[0](sa))
    for layer in critic.hidden[1:]:
        h = torch.relu(layer(torch.cat((h, sa), dim=-1)))
    assert len(critic.hidden) == 4
    torch.testing.assert_close(critic(obs, actions), critic.output(h))


def test_deep_resnet_has_relu_before_output():
    """Deep-ResNet: Linear([s,a] -> w), residual blocks, ReLU, Linear(w -> 1)."""
    critic = small_critic("deep_resnet")
    obs, actions = torch.randn(4, OBS, dtype=torch.float64), torch.randn(4, ACT, dtype=torch.float64)
    first, *blocks, relu, last = critic.net
    assert len(blocks) == 2 and all(isinstance(b, ResidualBlock) for b in blocks) and isinstance(relu, nn.ReLU)
    h = first(torch.cat((obs, actions), dim=-1))
    for block in blocks:
        h = block(h)
    torch.testing.assert_close(critic(obs, actions), last(torch.relu(h)))


# ----------------------------------------------------------------------------------------------------------------------
# 4. Initialisation


def test_weight_heads_generator_bias_is_zero(paper_critic):
    """All head biases start exactly at zero."""
    assert torch.count_nonzero(paper_critic.hyper.heads.generator.bias) == 0


def test_weight_heads_rows_use_the_paper_bounds(paper_critic):
    """W, b and s generator rows are U(±0.05) for layer 1 and U(±0.008) for the output layer, and fill the range."""
    weight = paper_critic.hyper.heads.generator.weight.detach()
    hidden, out = 256, 1
    blocks = [
        (hidden * ACT, 0.05),  # W1
        (hidden, 0.05),  # b1
        (hidden, 0.05),  # s1
        (out * hidden, 0.008),  # W2
        (out, 0.008),  # b2
        (out, 0.008),  # s2
    ]
    assert weight.shape[0] == sum(rows for rows, _ in blocks)
    row = 0
    for rows, bound in blocks:
        block = weight[row : row + rows]
        assert block.abs().max() <= bound
        assert block.abs().max() > 0.9 * bound
        row += rows


def test_weight_heads_bounds_for_custom_layers():
    """WeightHeads gives each dynamic layer's rows their own bound."""
    torch.manual_seed(0)
    heads = WeightHeads(64, [(8, 3), (2, 8)], [0.3, 0.01])
    weight = heads.generator.weight.detach()
    first, second = weight[: 8 * 3 + 16], weight[8 * 3 + 16 :]
    assert second.shape[0] == 2 * 8 + 4
    assert 0.27 < first.abs().max() <= 0.3
    assert 0.009 < second.abs().max() <= 0.01


def test_primary_network_weights_are_half_the_default_bound(paper_critic):
    """Every trunk Linear weight is within ±1/(2√fan_in) and spreads over that range."""
    linears = [m for m in paper_critic.hyper.primary.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 15
    for linear in linears:
        bound = 1 / (2 * math.sqrt(linear.in_features))
        assert linear.weight.abs().max() <= bound
        assert linear.weight.abs().max() > 0.9 * bound


def test_initial_gains_are_about_one(paper_critic):
    """The generated gains g = 1 + s start at mean ≈ 1 with a small spread."""
    with torch.no_grad():
        (_, _, g1), (_, _, g2) = paper_critic.hyper(torch.randn(64, OBS))
    assert abs(g1.mean().item() - 1) < 0.01 and g1.std() < 0.1
    assert abs(g2.mean().item() - 1) < 0.01 and g2.std() < 0.02


def test_initial_q_is_almost_zero(paper_critic):
    """At init Q ≈ 0 for unit-scale inputs (paper, seed 0: mean −0.003, std 0.006)."""
    torch.manual_seed(1)
    obs = torch.randn(64, OBS)
    actions = torch.rand(64, ACT) * 2 - 1
    with torch.no_grad():
        q = paper_critic(obs, actions)
    assert q.std() < 1e-2  # the state/action-dependent part
    assert q.abs().mean() < 2e-2  # includes the random constant offset b2(z) (std ≈ 0.008 over inits)
    assert q.abs().max() < 5e-2


# ----------------------------------------------------------------------------------------------------------------------
# 5. Variant wiring


def record_hyper_calls(critic) -> list:
    """Record (input, generated layers) of every call of ``critic.hyper``."""
    calls = []
    critic.hyper.register_forward_hook(lambda module, args, output: calls.append((args[0], output)))
    return calls


def assert_same_layers(layers_a, layers_b):
    for (wa, ba, ga), (wb, bb, gb) in zip(layers_a, layers_b, strict=True):
        torch.testing.assert_close((wa, ba, ga), (wb, bb, gb))


def test_sa_hyper_weights_come_from_the_observation():
    """SA-Hyper feeds the observation to the hypernetwork and the action to the dynamic network."""
    critic = small_critic("sa_hyper", obs_dim=5, act_dim=3)
    calls = record_hyper_calls(critic)
    obs, actions = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    q = critic(obs, actions)
    assert len(calls) == 1 and calls[0][0] is obs
    torch.testing.assert_close(q, dynamic_forward(actions, calls[0][1]))


def test_sa_hyper_weights_do_not_depend_on_the_action():
    """Same observation, different actions: identical generated weights; different observation: different ones."""
    critic = small_critic("sa_hyper", obs_dim=5, act_dim=3)
    calls = record_hyper_calls(critic)
    obs = torch.randn(4, 5, dtype=torch.float64)
    critic(obs, torch.randn(4, 3, dtype=torch.float64))
    critic(obs, torch.randn(4, 3, dtype=torch.float64))
    critic(obs + 1, torch.randn(4, 3, dtype=torch.float64))
    assert_same_layers(calls[0][1], calls[1][1])
    assert not torch.allclose(calls[0][1][0][0], calls[2][1][0][0])


def test_as_hyper_weights_come_from_the_action():
    """AS-Hyper feeds the action to the hypernetwork and the observation to the dynamic network."""
    critic = small_critic("as_hyper", obs_dim=5, act_dim=3)
    calls = record_hyper_calls(critic)
    obs = torch.randn(4, 5, dtype=torch.float64)
    a1, a2 = torch.randn(2, 4, 3, dtype=torch.float64)
    q = critic(obs, a1)
    critic(obs, a2)
    assert calls[0][0] is a1 and calls[1][0] is a2
    assert calls[0][1][0][0].shape == (4, 16, 5)  # W1 acts on the observation
    assert not torch.allclose(calls[0][1][0][0], calls[1][1][0][0])
    torch.testing.assert_close(q, dynamic_forward(obs, calls[0][1]))


def test_random_hyper_uses_one_weight_set_for_all_samples():
    """RandomHyper generates one unbatched weight set from its embedding; Q is that fixed MLP on [s, a]."""
    critic = small_critic("random_hyper", obs_dim=5, act_dim=3)
    calls = record_hyper_calls(critic)
    obs, actions = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    q = critic(obs, actions)
    assert torch.equal(calls[0][0], critic.embedding.view(1, -1))  # the embedding, one singleton batch dim
    (w1, b1, g1), (w2, b2, g2) = calls[0][1]
    assert w1.shape == (1, 16, 5 + 3) and w2.shape == (1, 1, 16)  # one weight set, broadcast over the batch
    (w1, b1, g1), (w2, b2, g2) = [tuple(t[0] for t in layer) for layer in calls[0][1]]
    with torch.no_grad():
        net = explicit_linear_pair(w1, b1, g1, w2, b2, g2)
        torch.testing.assert_close(q, net(torch.cat((obs, actions), dim=-1)))


def test_random_hyper_output_depends_on_its_embedding():
    """Changing the learned embedding changes Q."""
    critic = small_critic("random_hyper")
    obs, actions = torch.randn(4, OBS, dtype=torch.float64), torch.randn(4, ACT, dtype=torch.float64)
    with torch.no_grad():
        before = critic(obs, actions)
        critic.embedding.add_(1.0)
        after = critic(obs, actions)
    assert not torch.allclose(before, after)


def test_random_hyper_embedding_is_a_learned_parameter():
    """The 5-dim embedding is an nn.Parameter initialised in [0, 1) and receives gradients."""
    critic = small_critic("random_hyper")
    assert isinstance(critic.embedding, nn.Parameter) and critic.embedding.shape == (5,)
    assert ((critic.embedding >= 0) & (critic.embedding < 1)).all()
    critic(torch.randn(3, OBS, dtype=torch.float64), torch.randn(3, ACT, dtype=torch.float64)).sum().backward()
    assert critic.embedding.grad is not None and critic.embedding.grad.abs().sum() > 0


def test_resnet_features_condition_is_the_z_embedding():
    """ResNet-Features conditions on the primary network's z (last primary width)."""
    critic = small_critic("resnet_features")
    cond = critic.condition(torch.randn(4, OBS, dtype=torch.float64))
    assert cond.shape == (4, 64)


# ----------------------------------------------------------------------------------------------------------------------
# 6. Errors


def test_unknown_critic_name_lists_the_allowed_names():
    """make_critic('nope') raises ConfigurationError naming 'nope' and every allowed critic."""
    with pytest.raises(ConfigurationError) as info:
        make_critic("nope", OBS, ACT)
    message = str(info.value)
    assert "nope" in message
    for name in CRITICS:
        assert name in message


@pytest.mark.parametrize(("name", "option"), [("mlp", "widht"), ("sa_hyper", "hidden"), ("d2rl", "dynamic_hidden")])
def test_unknown_option_is_named(name, option):
    """An override the critic does not accept raises ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match=f"'{option}'"):
        make_critic(name, OBS, ACT, **{option: 3})


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
@pytest.mark.parametrize("which", ["observation", "action"])
@pytest.mark.parametrize("name", ALL_CRITICS)
def test_non_positive_dims_are_rejected(name, which, bad):
    """Observation / action dims that are not positive integers raise ConfigurationError."""
    dims = (bad, ACT) if which == "observation" else (OBS, bad)
    with pytest.raises(ConfigurationError):
        make_critic(name, *dims, **SMALL[name])


BAD_WIDTH_CASES = [
    ("sa_hyper", "primary_widths", lambda b: (32, b)),
    ("sa_hyper", "dynamic_hidden", lambda b: (b,)),
    ("as_hyper", "dynamic_hidden", lambda b: (16, b)),
    ("random_hyper", "embedding_dim", lambda b: b),
    ("random_hyper", "primary_widths", lambda b: (b,)),
    ("resnet_features", "primary_widths", lambda b: (b, 32)),
    ("resnet_features", "dynamic_hidden", lambda b: (b,)),
    ("mlp", "hidden", lambda b: (16, b)),
    ("mlp_large", "hidden", lambda b: (b,)),
    ("d2rl", "width", lambda b: b),
    ("d2rl", "depth", lambda b: b),
    ("deep_resnet", "width", lambda b: b),
    ("deep_resnet", "blocks", lambda b: b),
]


@pytest.mark.parametrize("bad", [0, -3, 2.5])
@pytest.mark.parametrize(("name", "option", "value"), BAD_WIDTH_CASES, ids=[f"{n}-{o}" for n, o, _ in BAD_WIDTH_CASES])
def test_non_positive_widths_are_rejected(name, option, value, bad):
    """Widths, depths and sizes that are not positive integers raise ConfigurationError naming the option."""
    with pytest.raises(ConfigurationError, match=option):
        make_critic(name, OBS, ACT, **{**SMALL[name], option: value(bad)})


def test_empty_primary_widths_and_negative_blocks_are_rejected():
    """A primary network needs at least one width and blocks_per_stage >= 0."""
    with pytest.raises(ConfigurationError, match="primary_widths"):
        make_critic("sa_hyper", OBS, ACT, **{**HYPER_SMALL, "primary_widths": ()})
    with pytest.raises(ConfigurationError, match="blocks_per_stage"):
        make_critic("sa_hyper", OBS, ACT, **{**HYPER_SMALL, "blocks_per_stage": -1})
