"""Meta-RL networks of ``hyperrl.nn``: policies ``π(a|s,c)``, meta-critics ``Q(s,a,c)`` / ``V(s,c)``, the hypernetwork's
multi-head and initialisation options (``hyperrl-paper.md`` §5.1, §6.2; Beck et al. 2022 for ``bias_hyperinit``)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution

from hyperrl.errors import ConfigurationError
from hyperrl.nn.actors import tanh_normal_log_prob
from hyperrl.nn import (
    META_CRITIC,
    META_CRITICS,
    META_VALUE,
    POLICY,
    META_VALUES,
    POLICIES,
    CriticEnsemble,
    HyperNetwork,
    TaskCondition,
    critic_options,
    dynamic_forward,
    dynamic_heads_forward,
    make_critic,
    make_meta_critic,
    make_meta_value,
    make_policy,
    meta_critic_options,
    meta_value_options,
    policy_options,
)

OBS, ACT, CTX = 5, 3, 2
HYPER_SMALL = {"primary_widths": (16, 32), "blocks_per_stage": 1, "dynamic_hidden": (8,)}
POLICY_SMALL = {"hyper": HYPER_SMALL, "mlp": {"hidden": (8, 8)}, "context_mlp": {"hidden": (8, 8)}}
CRITIC_SMALL = {"hyper": HYPER_SMALL, "combine": HYPER_SMALL, "mlp": {"hidden": (8, 8)}}
POLICY_CASES = [(name, dist) for name in sorted(POLICIES) for dist in ("tanh_normal", "normal")]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def small_policy(name: str, distribution: str = "tanh_normal", seed: int = 0, **extra):
    torch.manual_seed(seed)
    return make_policy(name, OBS, ACT, CTX, distribution=distribution, **{**POLICY_SMALL[name], **extra}).double()


def small_q(name: str, seed: int = 0, **extra):
    torch.manual_seed(seed)
    return make_meta_critic(name, OBS, ACT, CTX, **{**CRITIC_SMALL[name], **extra}).double()


def small_v(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return make_meta_value(name, OBS, CTX, **CRITIC_SMALL[name]).double()


def amax(tensor: torch.Tensor) -> float:
    return float(tensor.detach().abs().max())


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ----------------------------------------------------------------------------------------------------------------------
# 1. Exact parameter counts (meta device: no memory, no init time)

TRUNK = 6_169_344  # primary network without its first layer's 256·m
HIDDEN_HEAD = (262_400, 524_800)  # per base input, constant
OUTPUT_HEAD = 264_450  # per output unit


@pytest.mark.parametrize(
    ("obs", "act", "ctx", "expected"),
    [(20, 6, 1, 13_529_106), (27, 8, 1, 15_894_808), (2, 2, 2, 7_748_358)],
    ids=["HalfCheetah", "Ant", "2D-Nav"],
)
def test_maml_hyper_policy_parameter_count(obs, act, ctx, expected):
    """MAML's hyper policy (distribution='normal'): the authors' exact counts (§5.1)."""
    assert 256 * ctx + TRUNK + HIDDEN_HEAD[0] * obs + HIDDEN_HEAD[1] + OUTPUT_HEAD * act + act == expected
    with torch.device("meta"):
        policy = make_policy("hyper", obs, act, ctx, distribution="normal")
    assert n_params(policy) == expected


def test_pearl_hyper_policy_parameter_count():
    """PEARL's hyper policy (tanh_normal, mean and log-std heads) for obs 20, act 6, latent 5: 15,116,824 ≈ 15.12M."""
    expected = 256 * 5 + TRUNK + HIDDEN_HEAD[0] * 20 + HIDDEN_HEAD[1] + 2 * OUTPUT_HEAD * 6
    assert expected == 15_116_824 and round(expected / 1e6, 2) == 15.12
    with torch.device("meta"):
        policy = make_policy("hyper", 20, 6, 5)
    assert n_params(policy) == expected


@pytest.mark.parametrize(
    ("obs", "act", "ctx", "expected"), [(20, 6, 1, 12_812), (27, 8, 1, 13_716), (2, 2, 2, 10_604)]
)
def test_maml_mlp_policy_parameter_counts(obs, act, ctx, expected):
    """MAML's NormalMLPPolicy 2×100 (default for 'normal'); the context-MLP adds 100 per context dim."""
    with torch.device("meta"):
        assert n_params(make_policy("mlp", obs, act, ctx, distribution="normal")) == expected
        assert n_params(make_policy("context_mlp", obs, act, ctx, distribution="normal")) == expected + 100 * ctx


def test_pearl_mlp_policy_parameter_count():
    """PEARL's TanhGaussianPolicy 3×300 on [s, z] (default for 'tanh_normal'): 192,012 ≈ 192K for (20, 6, 5)."""
    with torch.device("meta"):
        policy = make_policy("context_mlp", 20, 6, 5)
    assert n_params(policy) == 25 * 300 + 300 + 2 * (300 * 300 + 300) + 2 * (300 * 6 + 6) == 192_012


@pytest.mark.parametrize(
    ("kind", "name", "ctx", "expected", "paper_millions"),
    [
        ("q", "hyper", 1, 8_800_514, 8.80),
        ("q", "hyper", 5, 9_850_114, 9.85),
        ("q", "combine", 5, 8_539_394, 8.54),
        ("q", "combine", 1, 8_538_370, 8.54),
        ("v", "hyper", 5, 8_275_714, 8.28),
        ("v", "hyper", 1, 7_226_114, 7.23),
    ],
)
def test_pearl_meta_critic_parameter_counts(kind, name, ctx, expected, paper_millions):
    """PEARL's hyper Q/V counts for HalfCheetah (obs 20, act 6) from the formulas; they round to §6.2's values."""
    base = {("q", "hyper"): 6 + ctx, ("q", "combine"): 6, ("v", "hyper"): ctx}[kind, name]
    meta = 20 + ctx if name == "combine" else 20
    assert 256 * meta + TRUNK + HIDDEN_HEAD[0] * base + HIDDEN_HEAD[1] + OUTPUT_HEAD == expected
    assert round(expected / 1e6, 2) == paper_millions
    with torch.device("meta"):
        net = make_meta_critic(name, 20, 6, ctx) if kind == "q" else make_meta_value(name, 20, ctx)
    assert n_params(net) == expected


def test_pearl_mlp_q_and_v_parameter_counts():
    """FlattenMlp 3×300: Q on [s, a, z] 190,501 ≈ 190.5K; V on [s, z] 188,701 (obs 20, act 6, latent 5)."""
    with torch.device("meta"):
        q, v = make_meta_critic("mlp", 20, 6, 5), make_meta_value("mlp", 20, 5)
    assert n_params(q) == 31 * 300 + 300 + 2 * 90_300 + 301 == 190_501 and round(190_501 / 1e3, 1) == 190.5
    assert n_params(v) == 25 * 300 + 300 + 2 * 90_300 + 301 == 188_701


def test_bias_hyperinit_and_init_scale_keep_the_counts():
    """The init options change values, never shapes: SA-Hyper (17, 6) keeps 8,537,346 parameters."""
    with torch.device("meta"):
        critic = make_critic("sa_hyper", 17, 6, init="bias_hyperinit", init_scale=1 / math.sqrt(2))
    assert n_params(critic) == 8_537_346


# ----------------------------------------------------------------------------------------------------------------------
# 2. Policy shapes and the one interface


@pytest.mark.parametrize("batch", [(7,), (3, 4)], ids=["N", "TxN"])
@pytest.mark.parametrize(("name", "distribution"), POLICY_CASES)
def test_policy_interface_shapes(name, distribution, batch):
    """forward -> (loc, scale) (..., A); sample -> (..., A), (..., 1); log_prob (..., 1); mode (..., A)."""
    policy = small_policy(name, distribution)
    obs, ctx = randn(*batch, OBS), randn(*batch, CTX, seed=1)
    loc, scale = policy(obs, ctx)
    assert loc.shape == scale.shape == (*batch, ACT) and bool((scale > 0).all())
    action, log_prob = policy.sample(obs, ctx)
    assert action.shape == (*batch, ACT) and log_prob.shape == (*batch, 1)
    assert policy.log_prob(obs, action, ctx).shape == (*batch, 1)
    assert policy.mode(obs, ctx).shape == (*batch, ACT)
    mu, log_std = policy.loc_and_log_std(obs, ctx)
    assert mu.shape == log_std.shape == (*batch, ACT)


@pytest.mark.parametrize(("name", "distribution"), POLICY_CASES)
def test_sample_log_prob_matches_log_prob_of_the_sampled_action(name, distribution):
    """log_prob(o, a, c) of a sampled action equals the log-density that sample() returned."""
    policy = small_policy(name, distribution)
    obs, ctx = randn(6, OBS), randn(6, CTX, seed=1)
    torch.manual_seed(3)
    action, log_prob = policy.sample(obs, ctx)
    torch.testing.assert_close(policy.log_prob(obs, action, ctx), log_prob, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize(("name", "distribution"), POLICY_CASES)
def test_sample_with_params_is_sample_plus_the_gaussian_it_drew_from(name, distribution):
    """sample_with_params: the same action and log-density as sample() from the same random state, and (μ, log σ)
    equal to loc_and_log_std (MetaSAC's losses read all four from one pass)."""
    policy = small_policy(name, distribution)
    obs, ctx = randn(6, OBS), randn(6, CTX, seed=1)
    torch.manual_seed(5)
    action, log_prob = policy.sample(obs, ctx)
    torch.manual_seed(5)
    action2, log_prob2, loc, log_std = policy.sample_with_params(obs, ctx)
    torch.testing.assert_close(action2, action, rtol=0, atol=0)
    torch.testing.assert_close(log_prob2, log_prob, rtol=0, atol=0)
    mu, expected_log_std = policy.loc_and_log_std(obs, ctx)
    torch.testing.assert_close(loc, mu, rtol=0, atol=0)
    torch.testing.assert_close(log_std, expected_log_std, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_tanh_normal_log_prob_equals_torch_distributions(name):
    """tanh_normal with bounds [low, high]: log π equals TransformedDistribution(Normal, [Tanh, Affine]) summed."""
    low, high = torch.tensor([-2.0, 0.0, -1.0]), torch.tensor([1.0, 3.0, 1.0])
    policy = small_policy(name, "tanh_normal", low=low, high=high)
    obs, ctx = randn(9, OBS), randn(9, CTX, seed=1)
    torch.manual_seed(4)
    action, log_prob = policy.sample(obs, ctx)
    loc, scale = policy(obs, ctx)
    centre, radius = ((high + low) / 2).double(), ((high - low) / 2).double()
    reference = TransformedDistribution(Normal(loc, scale), [TanhTransform(), AffineTransform(centre, radius)])
    assert bool(((action > low) & (action < high)).all())
    torch.testing.assert_close(log_prob, reference.log_prob(action).sum(-1, keepdim=True), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(policy.mode(obs, ctx), centre + radius * torch.tanh(loc))


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_the_pearl_tanh_log_prob_is_rlkits_formula(name):
    """``tanh_log_prob="pearl"``: log π = Σ [log N(u; μ, σ) − log(1 − tanh²u + 1e-6)] (rlkit's TanhNormal, as PEARL
    and the authors' code use) for sampled and for given actions; the same draw as the exact form, whose density it
    matches for moderate u and exceeds where tanh saturates (the +1e-6 floors the correction at log 1e-6)."""
    obs, ctx = randn(9, OBS), randn(9, CTX, seed=1)
    pearl, exact = small_policy(name, tanh_log_prob="pearl"), small_policy(name)
    torch.manual_seed(4)
    action, log_prob = pearl.sample(obs, ctx)
    torch.manual_seed(4)
    same_action, exact_log_prob = exact.sample(obs, ctx)
    loc, scale = pearl(obs, ctx)
    u = torch.atanh(action)
    rlkit = (Normal(loc, scale).log_prob(u) - torch.log(1 - action * action + 1e-6)).sum(-1, keepdim=True)
    torch.testing.assert_close(log_prob, rlkit)
    torch.testing.assert_close(pearl.log_prob(obs, action, ctx), rlkit)
    torch.testing.assert_close(action, same_action, rtol=0, atol=0)
    torch.testing.assert_close(log_prob, exact_log_prob, rtol=0, atol=1e-4)  # |u| small at init: 1e-6 is all
    u = torch.tensor([[0.0, 3.0, 20.0]], dtype=torch.float64)
    zero, scale = torch.zeros_like(u), torch.ones_like(u)
    radius = torch.ones(3, dtype=torch.float64)
    gap = tanh_normal_log_prob(u, zero, scale, radius, "exact") - tanh_normal_log_prob(u, zero, scale, radius, "pearl")
    assert 2 * 20 - 2 * math.log(2) + math.log(1e-6) - 0.1 < float(gap) < 2 * 20  # saturated: ~25 nats at u = 20


def test_the_tanh_log_prob_option_is_checked_and_reaches_metasac_s_policy():
    with pytest.raises(ConfigurationError, match="tanh_log_prob='rlkit' is not allowed: expected one of exact, pearl"):
        small_policy("hyper", tanh_log_prob="rlkit")
    with pytest.raises(ConfigurationError, match="distribution='normal'"):
        small_policy("mlp", "normal", tanh_log_prob="pearl")
    from hyperrl.algos import MetaSAC

    kwargs = dict(env="hyperrl/Navigation2D-v0", tasks={"n_train_tasks": 2, "n_test_tasks": 1}, policy=POLICY.with_settings("mlp", {"hidden": [4]}), critic=META_CRITIC.with_settings("mlp", {"hidden": [4]}), value=META_VALUE.with_settings("mlp", {"hidden": [4]}), replay={"batch_size": 4, "buffer_size": 10})
    assert MetaSAC(**kwargs).policy.tanh_log_prob == "exact"
    assert MetaSAC(**kwargs, tanh_log_prob="pearl").policy.tanh_log_prob == "pearl"
    with pytest.raises(ConfigurationError, match="tanh_log_prob='x' is not allowed"):
        MetaSAC(**kwargs, tanh_log_prob="x")


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_normal_log_prob_equals_torch_normal(name):
    """distribution='normal': log π(a) = Σ log N(a; μ, σ); mode is μ; σ = exp(log σ) with log σ init 0 (σ = 1)."""
    policy = small_policy(name, "normal")
    obs, ctx, action = randn(9, OBS), randn(9, CTX, seed=1), randn(9, ACT, seed=2) * 3
    loc, scale = policy(obs, ctx)
    torch.testing.assert_close(scale, torch.ones_like(scale), rtol=0, atol=0)
    expected = Normal(loc, scale).log_prob(action).sum(-1, keepdim=True)
    torch.testing.assert_close(policy.log_prob(obs, action, ctx), expected)
    torch.testing.assert_close(policy.mode(obs, ctx), loc)


def test_tanh_normal_sample_is_reparameterised():
    """The sampled action carries the gradient of the policy's parameters (the SAC actor loss needs it)."""
    policy = small_policy("hyper", "tanh_normal")
    action, log_prob = policy.sample(randn(4, OBS), randn(4, CTX, seed=1))
    (action.sum() + log_prob.sum()).backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in policy.hyper.heads.parameters())


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_log_std_clamp_tanh_normal(name):
    """tanh_normal: log σ is clamped to [-20, 2] (the PEARL/SAC bounds)."""
    policy = small_policy(name, "tanh_normal")
    for value, expected in ((1e3, 2.0), (-1e3, -20.0)):
        with torch.no_grad():
            if name == "hyper":  # the log-std head is the last block of generator rows: [W (A·H), b (A), g (A)]
                generator, hidden = policy.hyper.heads.generator, HYPER_SMALL["dynamic_hidden"][0]
                block = slice(generator.out_features - (ACT * hidden + 2 * ACT), None)
                generator.weight[block] = 0
                generator.bias[block] = 0
                generator.bias[generator.out_features - 2 * ACT : generator.out_features - ACT] = value
            else:
                policy.log_std_head.weight.zero_()
                policy.log_std_head.bias.fill_(value)
        _, log_std = policy.loc_and_log_std(randn(4, OBS), randn(4, CTX, seed=1))
        assert bool((log_std == expected).all())


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_log_std_clamp_normal(name):
    """normal: σ = exp(max(log σ, log 1e-6)), unbounded above."""
    policy = small_policy(name, "normal")
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-50.0, 0.0, 5.0]))
    _, scale = policy(randn(4, OBS), randn(4, CTX, seed=1))
    torch.testing.assert_close(scale[0], torch.tensor([1e-6, 1.0, math.exp(5.0)], dtype=scale.dtype))


def test_mlp_policy_ignores_the_context_and_context_mlp_reads_it():
    """'mlp' is state-only (any or no context gives the same output); 'context_mlp' depends on the context."""
    obs, c1, c2 = randn(5, OBS), randn(5, CTX, seed=1), randn(5, CTX, seed=2)
    mlp = small_policy("mlp")
    assert torch.equal(mlp(obs, c1)[0], mlp(obs)[0]) and torch.equal(mlp(obs, c2)[0], mlp(obs)[0])
    context_mlp = small_policy("context_mlp")
    assert not torch.allclose(context_mlp(obs, c1)[0], context_mlp(obs, c2)[0])
    with pytest.raises(ValueError, match="context"):
        context_mlp(obs)


def test_mlp_policy_initialisation_follows_the_authors():
    """tanh_normal MLP = PEARL (hidden |W| ≤ 1/√out, bias 0.1; heads within ±1e-3); normal MLP = MAML (Xavier,
    zero biases, log σ = 0)."""
    pearl = make_policy("context_mlp", 20, 6, 5)
    for linear in (m for m in pearl.trunk if isinstance(m, nn.Linear)):
        assert amax(linear.weight) <= 1 / math.sqrt(linear.out_features)
        assert bool((linear.bias == 0.1).all())
    for head in (pearl.mean, pearl.log_std_head):
        assert amax(head.weight) <= 1e-3 and amax(head.bias) <= 1e-3
    maml = make_policy("mlp", 20, 6, distribution="normal")
    first = maml.trunk[0]
    assert amax(first.weight) <= math.sqrt(6 / (20 + 100))
    assert bool((first.bias == 0).all()) and bool((maml.mean.bias == 0).all()) and bool((maml.log_std == 0).all())


def test_hyper_policy_head_bounds_per_head():
    """PEARL's hyper policy: hidden-layer rows U(±0.05), mean-head rows U(±0.008), log-std-head rows U(±0.001)."""
    torch.manual_seed(0)
    policy = make_policy("hyper", OBS, ACT, CTX, primary_widths=(16, 64), blocks_per_stage=0, dynamic_hidden=(32,))
    weight = policy.hyper.heads.generator.weight
    hidden_rows, head_rows = 32 * OBS + 2 * 32, ACT * 32 + 2 * ACT
    blocks = weight.split([hidden_rows, head_rows, head_rows])
    for block, bound in zip(blocks, (0.05, 0.008, 0.001)):
        assert bound * 0.9 < amax(block) <= bound
    assert bool((policy.hyper.heads.generator.bias == 0).all())


# ----------------------------------------------------------------------------------------------------------------------
# 3. The primary network runs once per task


@pytest.mark.parametrize("distribution", ["tanh_normal", "normal"])
def test_primary_network_runs_once_per_task(distribution):
    """Context (T, 1, c) against observations (T, N, s): the primary network sees T rows, not T·N, and the result
    equals the per-transition computation (context expanded to (T, N, c))."""
    T, N = 3, 11
    policy = small_policy("hyper", distribution)
    rows: list[int] = []
    policy.hyper.primary.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[:-1].numel()))
    obs, ctx = randn(T, N, OBS), randn(T, 1, CTX, seed=1)
    per_task = policy(obs, ctx)
    assert rows == [T]
    per_transition = policy(obs, ctx.expand(T, N, CTX))
    assert rows == [T, T * N]
    for a, b in zip(per_task, per_transition):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # the condition is computed once and reused: no further primary-network call
    cond = policy.condition(ctx)
    assert isinstance(cond, TaskCondition) and rows == [T, T * N, T]
    torch.manual_seed(5)
    from_condition = policy.sample(obs, cond)
    torch.manual_seed(5)
    from_context = policy.sample(obs, ctx)
    assert rows == [T, T * N, T, T]
    for a, b in zip(from_condition, from_context):
        assert torch.equal(a, b)
    policy.mode(obs, cond), policy.log_prob(obs, from_condition[0], cond)
    assert rows == [T, T * N, T, T]


def test_single_task_context_serves_a_batch():
    """An unbatched context (c,) conditions a whole batch of states with one primary-network row."""
    policy = small_policy("hyper")
    obs, ctx = randn(8, OBS), randn(CTX, seed=1)
    torch.testing.assert_close(policy(obs, ctx)[0], policy(obs, ctx.expand(8, CTX))[0], rtol=1e-12, atol=1e-12)


def test_dynamic_heads_forward_with_one_head_is_dynamic_forward():
    """dynamic_heads_forward(x, layers, 1)[0] == dynamic_forward(x, layers), per-sample and shared weights alike."""
    hyper = HyperNetwork(4, 3, 2, primary_widths=(8,), blocks_per_stage=1, dynamic_hidden=(7, 5)).double()
    x = randn(6, 9, 3)
    for meta in (randn(6, 9, 4, seed=1), randn(6, 1, 4, seed=1), randn(4, seed=1)):
        layers = hyper(meta)
        torch.testing.assert_close(dynamic_heads_forward(x, layers, 1)[0], dynamic_forward(x, layers))


# ----------------------------------------------------------------------------------------------------------------------
# 4. Hypernetwork initialisation options (every hypernetwork)


def _assert_bias_hyperinit(heads, layers_a, layers_b):
    """Generated layers equal for two meta inputs, equal to the head biases, fan-in bounded, gains exactly 1."""
    bias = heads.generator.bias.detach().split(heads._splits)
    for k, ((wa, ba, ga), (wb, bb, gb)) in enumerate(zip(layers_a, layers_b)):
        out, fan_in = heads.layer_sizes[k]
        assert torch.equal(wa, wb) and torch.equal(ba, bb)
        assert torch.equal(wa[0], bias[3 * k].reshape(out, fan_in)) and torch.equal(ba[0], bias[3 * k + 1])
        assert bool((ga == 1).all()) and bool((gb == 1).all())
        bound = 1 / math.sqrt(fan_in)
        assert amax(wa) <= bound and amax(ba) <= bound
        assert amax(wa) > 0.5 * bound  # a real fan-in init, not zeros
    assert bool((heads.generator.weight == 0).all())


def test_bias_hyperinit_on_a_critic():
    """make_critic('sa_hyper', init='bias_hyperinit'): generated weights are a standard fan-in init, the same for
    every state (Beck et al. 2022)."""
    torch.manual_seed(0)
    critic = make_critic("sa_hyper", 17, 6, primary_widths=(16, 32), blocks_per_stage=1, dynamic_hidden=(64,),
                         init="bias_hyperinit")  # fmt: skip
    with torch.no_grad():
        _assert_bias_hyperinit(critic.hyper.heads, critic.condition(torch.randn(3, 17)),
                               critic.condition(torch.randn(3, 17) * 5))  # fmt: skip


@pytest.mark.parametrize("kind", ["policy", "meta_q", "meta_v"])
def test_bias_hyperinit_on_meta_networks(kind):
    """The same option on the hyper policy (three heads), meta-Q and meta-V."""
    torch.manual_seed(0)
    opts = {"primary_widths": (16,), "blocks_per_stage": 0, "dynamic_hidden": (64,), "init": "bias_hyperinit"}
    net = {"policy": lambda: make_policy("hyper", OBS, ACT, CTX, **opts),
           "meta_q": lambda: make_meta_critic("hyper", OBS, ACT, CTX, **opts),
           "meta_v": lambda: make_meta_value("hyper", OBS, CTX, **opts)}[kind]()  # fmt: skip
    meta_dim = CTX if kind == "policy" else OBS
    with torch.no_grad():
        _assert_bias_hyperinit(net.hyper.heads, net.hyper(torch.randn(2, meta_dim)), net.hyper(torch.randn(2, meta_dim)))


def test_paper_init_is_meta_input_dependent_and_unchanged():
    """Default init='paper': head biases zero, generated weights differ between states; seeded values unchanged by
    passing the defaults explicitly."""
    torch.manual_seed(0)
    default = make_critic("sa_hyper", 17, 6, **{"primary_widths": (16, 32), "dynamic_hidden": (8,)})
    torch.manual_seed(0)
    explicit = make_critic("sa_hyper", 17, 6, primary_widths=(16, 32), dynamic_hidden=(8,), init="paper",
                           init_scale=0.5, head_bounds=(0.05, 0.008))  # fmt: skip
    for (n, p), (_, q) in zip(default.named_parameters(), explicit.named_parameters()):
        assert torch.equal(p, q), n
    assert bool((default.hyper.heads.generator.bias == 0).all())
    with torch.no_grad():
        (w1, _, _), _ = default.condition(torch.randn(2, 17))
    assert not torch.equal(w1[0], w1[1])


@pytest.mark.parametrize("build", ["hyper", "critic", "policy"])
def test_init_scale_sets_the_primary_bound_exactly(build):
    """init_scale=1/√2 (the authors' SAC trunk, bound 1/√(2·fan_in)) reaches the primary network's every weight."""
    scale = 1 / math.sqrt(2)
    opts = {"primary_widths": (512,), "blocks_per_stage": 1, "init_scale": scale}
    torch.manual_seed(0)
    net = {"hyper": lambda: HyperNetwork(17, 6, 1, **opts), "critic": lambda: make_critic("sa_hyper", 17, 6, **opts),
           "policy": lambda: make_policy("hyper", 17, 6, 2, **opts)}[build]()  # fmt: skip
    hyper = net if build == "hyper" else net.hyper
    linears = [m for m in hyper.primary.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 3
    for linear in linears:
        bound = scale / math.sqrt(linear.in_features)
        assert 0.99 * bound < amax(linear.weight) <= bound


def test_init_scale_on_resnet_features():
    """resnet_features shares the primary network, so it takes init_scale too."""
    torch.manual_seed(0)
    critic = make_critic("resnet_features", 17, 6, primary_widths=(256,), blocks_per_stage=0, init_scale=0.1)
    assert amax(critic.primary.layers[0].weight) <= 0.1 / math.sqrt(17)


def test_critic_options_list_every_hypernetwork_option():
    """critic_options (CLI/tests) still lists every accepted option, including the new init and init_scale."""
    hyper = ["primary_widths", "blocks_per_stage", "dynamic_hidden", "head_bounds", "init", "init_scale"]
    assert critic_options("sa_hyper") == hyper and critic_options("as_hyper") == hyper
    assert critic_options("random_hyper") == ["embedding_dim", *hyper]
    assert critic_options("resnet_features") == ["primary_widths", "blocks_per_stage", "dynamic_hidden", "init_scale"]
    assert meta_critic_options("hyper") == hyper and meta_critic_options("combine") == hyper
    assert meta_critic_options("mlp") == ["hidden"] and meta_value_options("hyper") == hyper
    # the distribution is the algorithm's (MAML: normal, MetaSAC: tanh_normal), a positional argument
    assert policy_options("hyper") == ["low", "high", "log_std_bounds", "tanh_log_prob", *hyper]
    assert policy_options("mlp") == policy_options("context_mlp") == [
        "hidden", "low", "high", "log_std_bounds", "tanh_log_prob"
    ]  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# 5. Meta-critic wiring and shapes


@pytest.mark.parametrize("batch", [(7,), (3, 4)], ids=["N", "TxN"])
@pytest.mark.parametrize("name", sorted(META_CRITICS))
def test_meta_q_shapes_and_split(name, batch):
    """Q(o, a, c) is (..., 1) and equals evaluate(condition(o, c), a, c); a per-task context (T, 1, c) broadcasts."""
    q = small_q(name)
    obs, act, ctx = randn(*batch, OBS), randn(*batch, ACT, seed=1), randn(*batch, CTX, seed=2)
    value = q(obs, act, ctx)
    assert value.shape == (*batch, 1)
    assert torch.equal(q.evaluate(q.condition(obs, ctx), act, ctx), value)
    per_task = ctx[..., :1, :]
    torch.testing.assert_close(q(obs, act, per_task), q(obs, act, per_task.expand_as(ctx)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("batch", [(7,), (3, 4)], ids=["N", "TxN"])
@pytest.mark.parametrize("name", sorted(META_VALUES))
def test_meta_v_shapes_and_split(name, batch):
    """V(o, c) is (..., 1) and equals evaluate(condition(o, c), c)."""
    v = small_v(name)
    obs, ctx = randn(*batch, OBS), randn(*batch, CTX, seed=2)
    value = v(obs, ctx)
    assert value.shape == (*batch, 1)
    assert torch.equal(v.evaluate(v.condition(obs, ctx), ctx), value)


def _primary_inputs(net) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    net.hyper.primary.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    return seen


def test_hyper_meta_q_wiring():
    """hyper meta-Q (eq. 9): the primary network sees the state only; the context enters the dynamic network, so
    changing it changes Q but not the condition."""
    q = small_q("hyper")
    seen = _primary_inputs(q)
    obs, act, c1, c2 = randn(6, OBS), randn(6, ACT, seed=1), randn(6, CTX, seed=2), randn(6, CTX, seed=3)
    cond1, cond2 = q.condition(obs, c1), q.condition(obs, c2)
    assert all(torch.equal(x, obs) for x in seen)
    for l1, l2 in zip(cond1, cond2):
        assert all(torch.equal(a, b) for a, b in zip(l1, l2))
    assert not torch.allclose(q.evaluate(cond1, act, c1), q.evaluate(cond1, act, c2))
    assert q.hyper.heads.layer_sizes[0][1] == ACT + CTX  # the dynamic network's input is [a, c]


def test_combine_meta_q_wiring():
    """combine meta-Q: the primary network sees [s, c]; the dynamic network only the action."""
    q = small_q("combine")
    seen = _primary_inputs(q)
    obs, act, ctx = randn(6, OBS), randn(6, ACT, seed=1), randn(6, CTX, seed=2)
    q(obs, act, ctx)
    assert len(seen) == 1 and torch.equal(seen[0], torch.cat((obs, ctx), -1))
    assert q.hyper.heads.layer_sizes[0][1] == ACT


def test_hyper_meta_v_and_mlp_wiring():
    """hyper V: meta = state, base = context; MLP Q/V read [s, a, c] / [s, c] (first-layer widths)."""
    v = small_v("hyper")
    seen = _primary_inputs(v)
    obs, c1, c2 = randn(6, OBS), randn(6, CTX, seed=2), randn(6, CTX, seed=3)
    assert not torch.allclose(v(obs, c1), v(obs, c2))
    assert all(torch.equal(x, obs) for x in seen) and v.hyper.heads.layer_sizes[0][1] == CTX
    assert small_q("mlp").net[0].in_features == OBS + ACT + CTX and small_v("mlp").net[0].in_features == OBS + CTX
    mlp_q = make_meta_critic("mlp", 20, 6, 5)
    assert bool((mlp_q.net[0].bias == 0.1).all()) and amax(mlp_q.net[-1].weight) <= 3e-3


# ----------------------------------------------------------------------------------------------------------------------
# 6. CriticEnsemble of meta-critics


@pytest.mark.parametrize("name", sorted(META_CRITICS))
def test_ensemble_of_meta_q_equals_its_members(name):
    """Twin meta-Q as one CriticEnsemble: member k of ensemble(o, a, c) equals Q_k(o, a, c), also for a per-task
    context (T, 1, c) and one state against N actions; condition/evaluate split holds."""
    critics = [small_q(name, seed=k) for k in range(2)]
    twin = CriticEnsemble(critics)
    obs, act, ctx = randn(3, 4, OBS), randn(3, 4, ACT, seed=1), randn(3, 1, CTX, seed=2)
    value = twin(obs, act, ctx)
    assert value.shape == (2, 3, 4, 1)
    for k, critic in enumerate(critics):
        torch.testing.assert_close(value[k], critic(obs, act, ctx), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(twin.evaluate(twin.condition(obs, ctx), act, ctx), value, rtol=0, atol=0)
    many = randn(5, 3, 4, ACT, seed=3)
    value = twin(obs, many, ctx)
    assert value.shape == (2, 5, 3, 4, 1)
    for k, critic in enumerate(critics):
        torch.testing.assert_close(value[k], critic(obs, many, ctx), rtol=1e-12, atol=1e-12)
    member = twin.member(1)
    torch.testing.assert_close(member(obs, act, ctx), critics[1](obs, act, ctx), rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(META_VALUES))
def test_ensemble_of_meta_v_equals_its_members(name):
    """An ensemble of V(s, c) equals its members, including their gradients."""
    critics = [small_v(name, seed=k) for k in range(2)]
    ensemble = CriticEnsemble(critics)
    obs, ctx = randn(3, 4, OBS), randn(3, 1, CTX, seed=2)
    value = ensemble(obs, ctx)
    assert value.shape == (2, 3, 4, 1)
    value.square().sum().backward()
    for k, critic in enumerate(critics):
        torch.testing.assert_close(value[k], critic(obs, ctx), rtol=1e-12, atol=1e-12)
        critic(obs, ctx).square().sum().backward()
        grads = ensemble.member_tensors({n: p.grad for n, p in ensemble.named_parameters()}, k)
        for n, p in critic.named_parameters():
            torch.testing.assert_close(grads[n], p.grad, rtol=1e-10, atol=1e-12, msg=n)


# ----------------------------------------------------------------------------------------------------------------------
# 7. User mistakes: one-line ConfigurationError naming the value and what is allowed


@pytest.mark.parametrize(
    ("build", "needles"),
    [
        (lambda: make_policy("nope", OBS, ACT, CTX), ["nope", "hyper", "mlp", "context_mlp"]),
        (lambda: make_meta_critic("nope", OBS, ACT, CTX), ["nope", "hyper", "combine", "mlp"]),
        (lambda: make_meta_value("combine", OBS, CTX), ["combine", "hyper", "mlp"]),
        (lambda: make_policy("hyper", OBS, ACT, CTX, hidden=(8,)), ["'hidden'", "dynamic_hidden", "tanh_log_prob"]),
        (lambda: make_policy("mlp", OBS, ACT, dynamic_hidden=(8,)), ["'dynamic_hidden'", "hidden"]),
        (lambda: make_meta_critic("mlp", OBS, ACT, CTX, init="paper"), ["'init'", "hidden"]),
        (lambda: make_meta_value("hyper", OBS, CTX, widths=3), ["'widths'", "primary_widths"]),
        (lambda: make_policy("hyper", OBS, ACT, CTX, distribution="beta"), ["beta", "tanh_normal", "normal"]),
        (lambda: make_policy("mlp", OBS, ACT, distribution="normal", low=-2), ["low=-2", "tanh_normal"]),
        (lambda: make_policy("hyper", OBS, ACT, 0), ["context_dim=0"]),
        (lambda: make_policy("context_mlp", OBS, ACT), ["context_dim=0"]),
        (lambda: make_meta_critic("hyper", OBS, ACT, 0), ["context_dim=0"]),
        (lambda: make_critic("sa_hyper", 17, 6, init="xavier"), ["xavier", "paper", "bias_hyperinit"]),
        (lambda: make_critic("sa_hyper", 17, 6, init_scale=0), ["init_scale=0"]),
        (lambda: make_critic("sa_hyper", 17, 6, head_bounds=(0.05, 0.008, 0.001)), ["head_bounds", "2"]),
        (lambda: make_policy("hyper", OBS, ACT, CTX, head_bounds=(0.1,)), ["head_bounds", "2 or 3"]),
        (lambda: make_policy("mlp", OBS, ACT, log_std_bounds=(2, -20)), ["log_std_bounds"]),
        (lambda: make_policy("mlp", OBS, ACT, hidden=(8, 0)), ["hidden"]),
    ],
)
def test_user_mistakes_raise_one_line_configuration_errors(build, needles):
    with pytest.raises(ConfigurationError) as info:
        build()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_mlp_policy_accepts_a_context_dim_it_ignores():
    """An algorithm can call make_policy(name, s, a, context_dim=c) for every name: 'mlp' ignores c."""
    with torch.device("meta"):
        assert n_params(make_policy("mlp", 20, 6, 5, distribution="normal")) == 12_812


def test_two_entry_head_bounds_apply_to_every_output_head():
    """head_bounds=(first, rest) on the two-headed policy gives both output heads the 'rest' bound."""
    torch.manual_seed(0)
    policy = make_policy("hyper", OBS, ACT, CTX, primary_widths=(64,), blocks_per_stage=0, dynamic_hidden=(32,),
                         head_bounds=(0.05, 0.02))  # fmt: skip
    rows = ACT * 32 + 2 * ACT
    log_std_rows = policy.hyper.heads.generator.weight[-rows:]
    assert 0.018 < amax(log_std_rows) <= 0.02
