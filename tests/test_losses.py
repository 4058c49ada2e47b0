"""The SAC and TD3 losses of ``hyperrl.algos`` against TorchRL's own loss modules, plus their gradient routing.

Each comparison builds TorchRL's ``SACLoss`` / ``TD3Loss`` on a deep copy of our networks, copies our twin critics,
target critics (and TD3's target actor) into the loss module's stacked parameters, seeds the RNG identically and
calls TorchRL's pieces in the order in which ours draws random numbers:

* SAC: the target first samples ``a' ~ π(·|s')`` (``qvalue_v2_loss``), then the actor samples ``ã ~ π(·|s)``
  (``actor_loss``); both draw one ``randn`` of shape ``(B, |A|)``, TorchRL through ``TanhNormal.rsample``.
* TD3: the target-smoothing noise is the only draw, made first by both (``value_loss``).

No stubbing is needed: the draws line up exactly, so values agree to float32 round-off.
"""

from __future__ import annotations

import copy

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import ProbabilisticActor, TanhNormal
from torchrl.objectives import SACLoss, TD3Loss, ValueEstimators

from hyperrl.algos import SAC, TD3
from hyperrl.algos.base import polyak_update
from hyperrl.nn import CRITIC, critic_module

B = 16
GAMMA = 0.9
HYPER_SMALL = {"primary_widths": [16, 16, 32], "blocks_per_stage": 1, "dynamic_hidden": [8]}
CRITICS = {"mlp": {"hidden": [32, 32]}, "sa_hyper": HYPER_SMALL}
RTOL, ATOL = 1e-5, 1e-6

# TorchRL warns that no target-network updater is attached: the targets here are loaded by hand on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:No target network updater:UserWarning")


# ----------------------------------------------------------------------------------------------------------------------
# helpers


def make_sac(critic: str, env: str = "HalfCheetah-v5", **kwargs) -> SAC:
    module = SAC(
        env=env, critic=CRITIC.with_settings(critic, CRITICS[critic]), actor_hidden=[32, 32], replay={"batch_size": B},
        optim={"gamma": GAMMA}, **kwargs,
    )  # fmt: skip
    perturb_targets(module)
    return module


def make_td3(critic: str) -> TD3:
    module = TD3(
        env="HalfCheetah-v5", critic=CRITIC.with_settings(critic, CRITICS[critic]), actor_hidden=[32, 32],
        replay={"batch_size": B}, optim={"gamma": GAMMA},
    )  # fmt: skip
    perturb_targets(module)
    with torch.no_grad():
        for p in module.target_actor.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return module


def perturb_targets(module) -> None:
    """Make the target critics differ from the online ones, so that mixing them up cannot go unnoticed."""
    torch.manual_seed(123)
    with torch.no_grad():
        for p in module.target_critics.parameters():
            p.add_(0.05 * torch.randn_like(p))


def make_batch(module, seed: int = 7) -> TensorDict:
    """A random transition batch; rows 0-3 terminated, rows 4-7 truncated (done but not terminated)."""
    g = torch.Generator().manual_seed(seed)
    spec = module.env_spec
    low, high = torch.tensor(spec.action_low), torch.tensor(spec.action_high)
    terminated = torch.zeros(B, 1, dtype=torch.bool)
    terminated[:4] = True
    done = terminated.clone()
    done[4:8] = True
    action = low + (high - low) * torch.rand(B, spec.action_dim, generator=g)
    return TensorDict(
        {
            "observation": torch.randn(B, spec.observation_dim, generator=g),
            "action": action.float(),
            "next": {
                "observation": torch.randn(B, spec.observation_dim, generator=g),
                "reward": torch.randn(B, 1, generator=g),
                "terminated": terminated,
                "done": done,
            },
        },
        batch_size=[B],
    )


def stacked_params(ensemble) -> TensorDict:
    """The members of our critic ensemble as plain Q-networks, their parameters stacked along a leading dim and
    keyed like ``critic_module(member)`` (the layout of TorchRL's loss modules)."""
    members = [ensemble.member(k) for k in range(len(ensemble))]
    return torch.stack([TensorDict.from_module(critic_module(net)) for net in members], 0)


def load_critics(loss, module) -> None:
    """Copy our critics into the loss module's stacked online params and our target critics into its targets."""
    loss.qvalue_network_params.data.update_(stacked_params(module.critics))
    loss.target_qvalue_network_params.data.update_(stacked_params(module.target_critics))


def torchrl_key(name: str) -> tuple[str, ...]:
    """Our parameter name inside a wrapped network (``hyper.primary...``) -> the loss module's nested key."""
    return ("module", *name.split("."))


def grads(output: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    values = torch.autograd.grad(output, list(params.values()), retain_graph=True)
    return dict(zip(params, values))


def assert_critic_grads_match(ours: torch.Tensor, module, theirs: torch.Tensor, loss) -> None:
    """d(ours)/d(our critic i) == d(theirs)/d(TorchRL's stacked params)[i], parameter by parameter."""
    g_stacked = grads(ours, dict(module.critics.named_parameters()))
    names = [n for n, _ in module.critics.member(0).named_parameters()]
    stacked = {n: loss.qvalue_network_params.get(torchrl_key(n)) for n in names}
    g_theirs = grads(theirs, stacked)
    for i in range(len(module.critics)):
        g_ours = module.critics.member_tensors(g_stacked, i)  # member i's gradient, in nn.Linear layout
        assert set(g_ours) == set(names)
        for n in names:
            torch.testing.assert_close(g_ours[n], g_theirs[n][i], rtol=RTOL, atol=ATOL, msg=f"{i}.{n}")


def assert_actor_grads_match(ours: torch.Tensor, module, theirs: torch.Tensor, loss, prefix: tuple) -> None:
    ours_params = dict(module.actor.named_parameters())
    g_ours = grads(ours, ours_params)
    theirs_params = {n: loss.actor_network_params.get((*prefix, *n.split("."))) for n in ours_params}
    g_theirs = grads(theirs, theirs_params)
    for n in ours_params:
        torch.testing.assert_close(g_ours[n], g_theirs[n], rtol=RTOL, atol=ATOL, msg=n)


def sac_loss_module(module: SAC) -> SACLoss:
    """TorchRL's SACLoss on a deep copy of ``module``'s networks, loaded with our critics and target critics."""
    ref = copy.deepcopy(module)
    actor = ProbabilisticActor(
        TensorDictModule(ref.actor, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": ref.actor.low, "high": ref.actor.high},
        return_log_prob=True,
    )
    loss = SACLoss(
        actor,
        critic_module(ref.critics.member(0)),
        num_qvalue_nets=2,
        loss_function="l2",
        alpha_init=float(module.alpha),
        fixed_alpha=not module.autotune,
        target_entropy=-float(module.env_spec.action_dim),
        delay_qvalue=True,
    )
    loss.make_value_estimator(ValueEstimators.TD0, gamma=GAMMA)
    load_critics(loss, module)
    return loss


def td3_loss_module(module: TD3) -> TD3Loss:
    """TorchRL's TD3Loss on a deep copy of ``module``'s networks, loaded with our critics and targets."""
    ref = copy.deepcopy(module)
    act_dim = module.env_spec.action_dim
    loss = TD3Loss(
        TensorDictModule(ref.actor, in_keys=["observation"], out_keys=["action"]),
        critic_module(ref.critics.member(0)),
        action_spec=Bounded(low=-torch.ones(act_dim), high=torch.ones(act_dim), shape=(act_dim,)),
        num_qvalue_nets=2,
        policy_noise=0.2,
        noise_clip=0.5,
        loss_function="l2",
        delay_actor=True,
        delay_qvalue=True,
    )
    loss.make_value_estimator(ValueEstimators.TD0, gamma=GAMMA)
    load_critics(loss, module)
    loss.target_actor_network_params.data.update_(
        TensorDict.from_module(TensorDictModule(module.target_actor, in_keys=["observation"], out_keys=["action"]))
    )
    return loss


# ----------------------------------------------------------------------------------------------------------------------
# SAC against TorchRL's SACLoss

SAC_CASES = [
    pytest.param("mlp", "HalfCheetah-v5", None, id="mlp-cheetah-learned_alpha"),
    pytest.param("sa_hyper", "HalfCheetah-v5", None, id="sa_hyper-cheetah-learned_alpha"),
    pytest.param("mlp", "InvertedPendulum-v5", 0.2, id="mlp-pendulum3-fixed_alpha"),
    pytest.param("sa_hyper", "InvertedPendulum-v5", 0.2, id="sa_hyper-pendulum3-fixed_alpha"),
]


def sac_both(critic: str, env: str, alpha):
    """Our SAC losses and TorchRL's on the same networks, batch and random draws."""
    module = make_sac(critic, env, alpha=alpha, initial_alpha=0.5)
    loss = sac_loss_module(module)
    batch = make_batch(module)
    torch.manual_seed(0)
    ours = module.losses(batch, 0)
    torch.manual_seed(0)
    td = batch.clone()
    q_loss, _ = loss.qvalue_v2_loss(td)  # draws a' ~ π(·|s') first, like our critic_target
    actor_loss, meta = loss.actor_loss(td)  # then ã ~ π(·|s)
    alpha_loss = loss.alpha_loss(meta["log_prob"]).mean()
    return module, loss, ours, {"critic_loss": q_loss, "actor_loss": actor_loss, "alpha_loss": alpha_loss}


@pytest.mark.parametrize("critic, env, alpha", SAC_CASES)
def test_sac_loss_values_match_torchrl(critic, env, alpha):
    """SAC critic, actor (and, when tuned, temperature) losses equal TorchRL's SACLoss on the same draws."""
    module, _, ours, theirs = sac_both(critic, env, alpha)
    torch.testing.assert_close(ours["critic_loss"], theirs["critic_loss"], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(ours["actor_loss"], theirs["actor_loss"], rtol=RTOL, atol=ATOL)
    if module.autotune:
        torch.testing.assert_close(ours["alpha_loss"], theirs["alpha_loss"], rtol=RTOL, atol=ATOL)
    else:
        assert "alpha_loss" not in ours


@pytest.mark.parametrize("critic, env, alpha", SAC_CASES)
def test_sac_critic_grads_match_torchrl(critic, env, alpha):
    """The SAC critic loss's gradient w.r.t. each of our critics equals TorchRL's w.r.t. its stacked params."""
    module, loss, ours, theirs = sac_both(critic, env, alpha)
    assert_critic_grads_match(ours["critic_loss"], module, theirs["critic_loss"], loss)


@pytest.mark.parametrize("critic, env, alpha", SAC_CASES)
def test_sac_actor_and_alpha_grads_match_torchrl(critic, env, alpha):
    """The SAC actor loss's actor gradient (and the tuned temperature's gradient) equal TorchRL's."""
    module, loss, ours, theirs = sac_both(critic, env, alpha)
    # ProbabilisticActor -> its TensorDictModule ("module", "0") -> our policy ("module")
    assert_actor_grads_match(ours["actor_loss"], module, theirs["actor_loss"], loss, ("module", "0", "module"))
    if module.autotune:
        (g_ours,) = torch.autograd.grad(ours["alpha_loss"], [module.log_alpha])
        (g_theirs,) = torch.autograd.grad(theirs["alpha_loss"], [loss.log_alpha])
        torch.testing.assert_close(g_ours, g_theirs, rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------------------------------------------------
# TD3 against TorchRL's TD3Loss (HalfCheetah: unit bounds, where TorchRL's absolute noise equals ours)


def td3_both(critic: str):
    module = make_td3(critic)
    loss = td3_loss_module(module)
    batch = make_batch(module)
    torch.manual_seed(0)
    ours = module.losses(batch, 1)  # update 1 updates the actor (policy_delay 2)
    torch.manual_seed(0)
    td = batch.clone()
    q_loss, _ = loss.value_loss(td)  # draws the smoothing noise first, like our critic_target
    actor_loss, _ = loss.actor_loss(td)
    return module, loss, ours, {"critic_loss": q_loss, "actor_loss": actor_loss}


@pytest.mark.parametrize("critic", ["mlp", "sa_hyper"])
def test_td3_loss_values_match_torchrl(critic):
    """TD3 critic and actor losses equal TorchRL's TD3Loss on the same noise draws."""
    module, _, ours, theirs = td3_both(critic)
    assert module.updates_actor(1)
    torch.testing.assert_close(ours["critic_loss"], theirs["critic_loss"], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(ours["actor_loss"], theirs["actor_loss"], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("critic", ["mlp", "sa_hyper"])
def test_td3_critic_grads_match_torchrl(critic):
    """The TD3 critic loss's gradient w.r.t. each of our critics equals TorchRL's w.r.t. its stacked params."""
    module, loss, ours, theirs = td3_both(critic)
    assert_critic_grads_match(ours["critic_loss"], module, theirs["critic_loss"], loss)


@pytest.mark.parametrize("critic", ["mlp", "sa_hyper"])
def test_td3_actor_grads_match_torchrl(critic):
    """The TD3 actor loss's gradient w.r.t. our actor equals TorchRL's w.r.t. its actor params."""
    module, loss, ours, theirs = td3_both(critic)
    assert_actor_grads_match(ours["actor_loss"], module, theirs["actor_loss"], loss, ("module",))


# ----------------------------------------------------------------------------------------------------------------------
# gradient routing, policy delay, bootstrapping, Polyak


def make_algo(algo: str, critic: str):
    return make_sac(critic) if algo == "sac" else make_td3(critic)


def assert_no_grad(params) -> None:
    for p in params:
        assert p.grad is None or not p.grad.any()


ROUTING = [pytest.param(a, c, id=f"{a}-{c}") for a in ("sac", "td3") for c in ("mlp", "sa_hyper")]


@pytest.mark.parametrize("algo, critic", ROUTING)
def test_actor_loss_gives_no_critic_gradient(algo, critic):
    """Backpropagating the actor loss alone moves the actor only: no gradient on any critic, target or SAC's α."""
    module = make_algo(algo, critic)
    losses = module.losses(make_batch(module), 1)
    losses["actor_loss"].backward()
    assert_no_grad(module.critics.parameters())
    assert_no_grad(module.target_critics.parameters())
    if algo == "sac":
        assert_no_grad([module.log_alpha])
    assert any(p.grad is not None and p.grad.any() for p in module.actor.parameters())


@pytest.mark.parametrize("algo, critic", ROUTING)
def test_critic_loss_gives_no_actor_gradient(algo, critic):
    """Backpropagating the critic loss alone leaves every actor parameter (and SAC's temperature) without gradient."""
    module = make_algo(algo, critic)
    losses = module.losses(make_batch(module), 1)
    losses["critic_loss"].backward()
    assert_no_grad(module.actor.parameters())
    assert_no_grad(module.target_critics.parameters())
    if algo == "sac":
        assert_no_grad([module.log_alpha])
    else:
        assert_no_grad(module.target_actor.parameters())
    assert all(p.grad is not None and p.grad.any() for p in module.critics.parameters())


def test_td3_actor_loss_only_on_delayed_updates():
    """TD3 (policy_delay 2) has no actor loss on update 0 (loss == critic loss) and has one on update 1."""
    module = make_td3("mlp")
    batch = make_batch(module)
    first = module.losses(batch, 0)
    assert "actor_loss" not in first
    assert torch.equal(first["loss"], first["critic_loss"])
    second = module.losses(batch, 1)
    assert "actor_loss" in second
    torch.testing.assert_close(second["loss"], second["critic_loss"] + second["actor_loss"])


def members(ensemble) -> list:
    return [ensemble.member(k) for k in range(len(ensemble))]


def hand_target(module, batch: TensorDict) -> torch.Tensor:
    """``r + γ (1 − terminated) V̄(s')`` computed step by step, with the RNG seeded as before ``critic_target``."""
    next_obs = batch["next", "observation"]
    with torch.no_grad():
        torch.manual_seed(0)
        if isinstance(module, SAC):
            next_action, log_prob = module.actor.sample(next_obs)
            value = torch.min(*(q(next_obs, next_action) for q in members(module.target_critics)))
            value = value - module.alpha * log_prob
        else:
            noise = (torch.randn_like(batch["action"]) * 0.2).clamp(-0.5, 0.5)  # unit radius
            next_action = (module.target_actor(next_obs) + noise).clamp(-1.0, 1.0)
            value = torch.min(*(q(next_obs, next_action) for q in members(module.target_critics)))
    bootstrap = (~batch["next", "terminated"]).float()
    return batch["next", "reward"] + GAMMA * bootstrap * value


@pytest.mark.parametrize("algo", ["sac", "td3"])
def test_terminated_rows_do_not_bootstrap(algo):
    """critic_target is exactly the reward on terminated rows."""
    module = make_algo(algo, "mlp")
    batch = make_batch(module)
    torch.manual_seed(0)
    target = module.critic_target(batch)
    terminated = batch["next", "terminated"].squeeze(-1)
    assert target.shape == (B, 1)
    assert torch.equal(target[terminated], batch["next", "reward"][terminated])


@pytest.mark.parametrize("algo", ["sac", "td3"])
def test_truncated_rows_bootstrap(algo):
    """critic_target matches the hand computation; truncated (done, not terminated) rows add γ·V̄(s')."""
    module = make_algo(algo, "mlp")
    batch = make_batch(module)
    torch.manual_seed(0)
    target = module.critic_target(batch)
    torch.testing.assert_close(target, hand_target(module, batch), rtol=RTOL, atol=ATOL)
    truncated = (batch["next", "done"] & ~batch["next", "terminated"]).squeeze(-1)
    assert truncated.sum() == 4
    assert (target[truncated] != batch["next", "reward"][truncated]).all()


def test_polyak_update_interpolates():
    """polyak_update gives (1 − τ) θ̄ + τ θ for every parameter (τ = 1 copies the online parameters exactly)."""
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).double()
    target = copy.deepcopy(online)
    with torch.no_grad():
        for p in target.parameters():
            p.copy_(torch.randn_like(p))
    before = [p.clone() for p in target.parameters()]
    tau = 0.3
    polyak_update(target, online, tau)
    for old, new, theta in zip(before, target.parameters(), online.parameters()):
        torch.testing.assert_close(new, (1 - tau) * old + tau * theta, rtol=0, atol=1e-15)
    polyak_update(target, online, 1.0)
    for new, theta in zip(target.parameters(), online.parameters()):
        assert torch.equal(new, theta)
