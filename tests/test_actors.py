"""Unit tests for the policies of ``hyperrl.nn`` and their TensorDict / TorchRL wrappers."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import InteractionType, set_interaction_type
from torchrl.modules import TanhNormal

from hyperrl.errors import ConfigurationError
from hyperrl.nn import DeterministicPolicy, TanhGaussianPolicy, make_critic
from hyperrl.nn.modules import ActingPolicy, critic_module, policy_module

OBS, ACT = 3, 2
LOW, HIGH = [-2.0, 0.0], [1.0, 3.0]  # asymmetric bounds: centre (-0.5, 1.5), radius (1.5, 1.5)
DETERMINISTIC_TYPES = [InteractionType.DETERMINISTIC, InteractionType.MODE, InteractionType.MEAN]


def tensor(values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype)


def gaussian_policy(dtype=torch.float32, low=LOW, high=HIGH, seed=0) -> TanhGaussianPolicy:
    torch.manual_seed(seed)
    return TanhGaussianPolicy(OBS, ACT, low=low, high=high, hidden=(32, 32)).to(dtype)


def deterministic_policy(low=LOW, high=HIGH, seed=0) -> DeterministicPolicy:
    torch.manual_seed(seed)
    return DeterministicPolicy(OBS, ACT, low=low, high=high, hidden=(32, 32))


def set_log_std(policy: TanhGaussianPolicy, value: float) -> None:
    """Make the log-std head output ``value`` for every observation."""
    with torch.no_grad():
        policy.log_std.weight.zero_()
        policy.log_std.bias.fill_(value)


# ----------------------------------------------------------------------------------------------------------------------
# TanhGaussianPolicy


def test_gaussian_sample_shapes():
    """sample gives actions (..., A) and log-probs (..., 1), batched or not."""
    policy = gaussian_policy()
    action, log_prob = policy.sample(torch.randn(5, 4, OBS))
    assert action.shape == (5, 4, ACT) and log_prob.shape == (5, 4, 1)
    action, log_prob = policy.sample(torch.randn(OBS))
    assert action.shape == (ACT,) and log_prob.shape == (1,)


def test_gaussian_samples_fill_asymmetric_bounds():
    """Samples lie within [low, high] per dimension and reach close to both ends."""
    policy = gaussian_policy()
    set_log_std(policy, 2.0)  # wide: many samples saturate
    with torch.no_grad():
        action, _ = policy.sample(torch.randn(4000, OBS))
    low, high = tensor(LOW), tensor(HIGH)
    assert (action >= low).all() and (action <= high).all()
    assert (action.min(0).values < low + 0.05).all()
    assert (action.max(0).values > high - 0.05).all()


def test_gaussian_log_prob_matches_torchrl_tanh_normal():
    """log π(a|s) from sample equals TorchRL's TanhNormal(loc, scale, low, high).log_prob(a) (float64)."""
    policy = gaussian_policy(torch.float64)
    set_log_std(policy, math.log(0.5))  # moderate u: no tanh saturation
    obs = 0.5 * torch.randn(64, OBS, dtype=torch.float64)
    with torch.no_grad():
        loc, scale = policy(obs)
        action, log_prob = policy.sample(obs)
        dist = TanhNormal(loc, scale, low=tensor(LOW, torch.float64), high=tensor(HIGH, torch.float64))
        expected = dist.log_prob(action)
    assert loc.abs().max() < 3
    torch.testing.assert_close(log_prob.squeeze(-1), expected)


def test_gaussian_log_prob_matches_change_of_variables():
    """log π = Σ [log N(u; μ, σ) − log(1 − tanh²u) − log r] with u = atanh((a − c)/r)."""
    policy = gaussian_policy(torch.float64)
    set_log_std(policy, math.log(0.5))
    obs = 0.5 * torch.randn(32, OBS, dtype=torch.float64)
    low, high = tensor(LOW, torch.float64), tensor(HIGH, torch.float64)
    centre, radius = (high + low) / 2, (high - low) / 2
    with torch.no_grad():
        loc, scale = policy(obs)
        action, log_prob = policy.sample(obs)
        u = torch.atanh((action - centre) / radius)
        expected = torch.distributions.Normal(loc, scale).log_prob(u) - torch.log1p(-torch.tanh(u) ** 2) - radius.log()
    torch.testing.assert_close(log_prob, expected.sum(-1, keepdim=True))


def test_gaussian_sample_matches_torchrl_rsample_with_same_seed():
    """With the same torch seed, policy.sample draws the same action as TanhNormal(...).rsample()."""
    policy = gaussian_policy(torch.float64)
    obs = torch.randn(256, OBS, dtype=torch.float64)
    with torch.no_grad():
        loc, scale = policy(obs)
        torch.manual_seed(123)
        action, _ = policy.sample(obs)
        dist = TanhNormal(loc, scale, low=tensor(LOW, torch.float64), high=tensor(HIGH, torch.float64))
        torch.manual_seed(123)
        expected = dist.rsample()
    torch.testing.assert_close(action, expected)


def test_gaussian_pre_tanh_samples_are_normal():
    """Before squashing, samples for one state have mean μ and std σ (20,000 draws, float64)."""
    policy = gaussian_policy(torch.float64)
    set_log_std(policy, math.log(0.3))
    obs = torch.full((20_000, OBS), 0.2, dtype=torch.float64)
    low, high = tensor(LOW, torch.float64), tensor(HIGH, torch.float64)
    torch.manual_seed(0)
    with torch.no_grad():
        loc, _ = policy(obs[:1])
        action, _ = policy.sample(obs)
    u = torch.atanh((action - (high + low) / 2) / ((high - low) / 2))
    torch.testing.assert_close(u.mean(0), loc[0], rtol=0, atol=0.01)
    torch.testing.assert_close(u.std(0), torch.full((ACT,), 0.3, dtype=torch.float64), rtol=0.03, atol=0)


def test_gaussian_sample_is_reparameterised():
    """Gradients flow from the sampled action to the mean and log-std heads."""
    policy = gaussian_policy()
    action, _ = policy.sample(torch.randn(8, OBS))
    action.sum().backward()
    assert policy.mean.weight.grad.abs().sum() > 0
    assert policy.log_std.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("raw", "expected"), [(50.0, 2.0), (-50.0, -20.0), (0.5, 0.5), (-19.0, -19.0)])
def test_gaussian_log_std_is_clamped(raw, expected):
    """log σ is clamped to [−20, 2]; values inside the range pass through."""
    policy = gaussian_policy()
    set_log_std(policy, raw)
    _, scale = policy(torch.randn(4, OBS))
    torch.testing.assert_close(scale.log(), torch.full_like(scale, expected))


def test_gaussian_mode_is_squashed_mean():
    """mode(s) = c + r·tanh(μ(s)) with c, r from the bounds."""
    policy = gaussian_policy()
    obs = 3 * torch.randn(10, OBS)
    low, high = tensor(LOW), tensor(HIGH)
    loc, _ = policy(obs)
    torch.testing.assert_close(policy.mode(obs), (high + low) / 2 + (high - low) / 2 * torch.tanh(loc))


# ----------------------------------------------------------------------------------------------------------------------
# DeterministicPolicy


def test_deterministic_policy_paper_parameter_count():
    """TD3's actor (2×256) has 71,942 parameters for (17, 6)."""
    policy = DeterministicPolicy(17, 6)
    assert sum(p.numel() for p in policy.parameters()) == 71_942


def test_deterministic_policy_is_squashed_raw_output():
    """a = c + r·tanh(raw(s)), and stays within [low, high] even for huge observations."""
    policy = deterministic_policy()
    obs = 100 * torch.randn(50, OBS)
    low, high = tensor(LOW), tensor(HIGH)
    with torch.no_grad():
        action = policy(obs)
        raw = policy.out(policy.trunk(obs))
    assert (action >= low).all() and (action <= high).all()
    torch.testing.assert_close(action, (high + low) / 2 + (high - low) / 2 * torch.tanh(raw))
    torch.testing.assert_close(policy.mode(obs), action)


@pytest.mark.parametrize("cls", [TanhGaussianPolicy, DeterministicPolicy])
@pytest.mark.parametrize(("low", "high"), [([0.0, 0.0], [0.0, 1.0]), ([1.0, 0.0], [-1.0, 1.0]), ([0.0, 0.0], [1.0, math.inf])])
def test_invalid_bounds_are_rejected(cls, low, high):
    """Bounds must be finite with low < high in every dimension."""
    with pytest.raises(ConfigurationError):
        cls(OBS, ACT, low=low, high=high, hidden=(8,))


@pytest.mark.parametrize("cls", [TanhGaussianPolicy, DeterministicPolicy])
@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_non_positive_policy_sizes_are_rejected(cls, bad):
    """Observation / action dims and hidden widths must be positive integers."""
    for args, kwargs in [((bad, ACT), {}), ((OBS, bad), {}), ((OBS, ACT), {"hidden": (8, bad)})]:
        with pytest.raises(ConfigurationError):
            cls(*args, **kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# ActingPolicy


@pytest.mark.parametrize("kind", DETERMINISTIC_TYPES)
@pytest.mark.parametrize("make", [gaussian_policy, deterministic_policy], ids=["tanh_gaussian", "deterministic"])
def test_acting_policy_returns_mode_when_deterministic(make, kind):
    """Under a deterministic interaction type the acting policy returns the policy's mode."""
    policy = make()
    acting = ActingPolicy(policy, exploration_noise=0.5)
    obs = torch.randn(6, OBS)
    with torch.no_grad(), set_interaction_type(kind):
        torch.testing.assert_close(acting(obs), policy.mode(obs))


@pytest.mark.parametrize("kind", [None, InteractionType.RANDOM])
def test_acting_gaussian_policy_samples(kind):
    """Outside deterministic mode a tanh-Gaussian policy samples: two calls differ, both within bounds."""
    acting = ActingPolicy(gaussian_policy())
    obs = torch.randn(6, OBS)
    with torch.no_grad(), set_interaction_type(kind):
        first, second = acting(obs), acting(obs)
    assert not torch.allclose(first, second)
    for action in (first, second):
        assert (action >= tensor(LOW)).all() and (action <= tensor(HIGH)).all()


def test_acting_deterministic_policy_noise_scales_with_radius():
    """Exploration noise around the mode has std ≈ exploration_noise · radius per dimension, mean ≈ 0."""
    low, high = [-2.0, 0.0], [2.0, 10.0]  # radius (2, 5)
    policy = deterministic_policy(low=low, high=high)
    acting = ActingPolicy(policy, exploration_noise=0.1)
    obs = torch.zeros(20_000, OBS)
    torch.manual_seed(0)
    with torch.no_grad(), set_interaction_type(InteractionType.RANDOM):
        noise = acting(obs) - policy(obs)
    expected_std = tensor([0.2, 0.5])
    torch.testing.assert_close(noise.std(0), expected_std, rtol=0.1, atol=0)
    assert (noise.mean(0).abs() < 0.05 * expected_std).all()


def test_acting_deterministic_policy_clips_noisy_actions_to_bounds():
    """With the mode at the upper bound, noisy actions are clipped: never above high, about half exactly at it."""
    policy = deterministic_policy()
    with torch.no_grad():
        policy.out.bias.fill_(100.0)  # tanh saturates: mode == high
    acting = ActingPolicy(policy, exploration_noise=0.3)
    obs = torch.zeros(4000, OBS)
    with torch.no_grad():
        action = acting(obs)
    high, low = tensor(HIGH), tensor(LOW)
    assert (action <= high).all() and (action >= low).all()
    at_bound = (action == high).float().mean(0)
    assert ((at_bound > 0.4) & (at_bound < 0.6)).all()


# ----------------------------------------------------------------------------------------------------------------------
# TensorDict modules


def test_critic_module_writes_state_action_value():
    """critic_module reads observation/action from a TensorDict and writes state_action_value = Q(o, a)."""
    torch.manual_seed(0)
    critic = make_critic("sa_hyper", OBS, ACT, primary_widths=(32, 32, 64), blocks_per_stage=1, dynamic_hidden=(16,))
    td = TensorDict({"observation": torch.randn(5, OBS), "action": torch.randn(5, ACT)}, batch_size=[5])
    out = critic_module(critic)(td)
    assert out["state_action_value"].shape == (5, 1)
    torch.testing.assert_close(out["state_action_value"], critic(td["observation"], td["action"]))


@pytest.mark.parametrize("make", [gaussian_policy, deterministic_policy], ids=["tanh_gaussian", "deterministic"])
def test_policy_module_writes_action(make):
    """policy_module reads observation and writes an in-bounds action; deterministic mode writes the mode."""
    policy = make()
    module = policy_module(policy, exploration_noise=0.1)
    td = TensorDict({"observation": torch.randn(5, OBS)}, batch_size=[5])
    with torch.no_grad():
        explored = module(td.clone())["action"]
        with set_interaction_type(InteractionType.DETERMINISTIC):
            greedy = module(td.clone())["action"]
    assert explored.shape == greedy.shape == (5, ACT)
    assert (explored >= tensor(LOW)).all() and (explored <= tensor(HIGH)).all()
    assert not torch.allclose(explored, greedy)
    torch.testing.assert_close(greedy, policy.mode(td["observation"]))


def test_gaussian_log_prob_arithmetic_stays_fp32_under_bf16_autocast():
    """Under bf16 autocast only the linears run in bf16: loc/scale come out as fp32 and the sampled action and its
    log-density are computed in fp32 from them (a bf16 computation would be off by ~1e-2 here)."""
    policy = gaussian_policy()
    obs = torch.randn(64, OBS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loc, scale = policy(obs)
        torch.manual_seed(5)
        action, log_prob = policy.sample(obs)
    assert loc.dtype == scale.dtype == action.dtype == log_prob.dtype == torch.float32
    torch.manual_seed(5)
    noise = torch.randn_like(loc)
    loc64, scale64 = loc.double(), scale.double()
    u = loc64 + scale64 * noise.double()
    expected = TanhNormal(loc64, scale64, low=tensor(LOW).double(), high=tensor(HIGH).double()).log_prob(
        policy.squash(u.float()).double()
    )
    torch.testing.assert_close(action.double(), policy.squash(u.float()).double(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(log_prob.squeeze(-1).double(), expected, rtol=1e-4, atol=1e-4)
