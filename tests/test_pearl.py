"""PEARL: the context encoder (product of Gaussians, KL, deterministic variant), gradient routing, the §6.2 wiring,
PEARL's buffers and schedule, adaptation at evaluation, exact resume, errors."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import make_trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from tensordict import TensorDict

from hyperrl.algos import MetaSAC
from hyperrl.algos.pearl import PEARL, PEARLEncoder, gaussian_kl_to_standard, product_of_gaussians
from hyperrl.errors import ConfigurationError
from hyperrl.nn import META_CRITIC, META_VALUE, POLICY, CombineHyperMetaQ, HyperMetaQ, HyperMetaV, HyperPolicy, MLPMetaQ, MLPMetaV

TINY = {"primary_widths": [8, 8, 16], "blocks_per_stage": 1, "dynamic_hidden": [8]}
OBS, ACT, LATENT = 2, 2, 3
FEATURES = OBS + ACT + 1

#: the settings groups the helper below merges onto its own
GROUPS = ("tasks", "replay", "optim", "evaluation")


def pearl_kwargs(**overrides):
    """The tiny PEARL's settings; a group given in OVERRIDES (``replay={...}``) is merged onto this one's."""
    kwargs = dict(
        env="hyperrl/Navigation2D-v0", tasks={"n_train_tasks": 4, "n_test_tasks": 2},
        policy=POLICY.with_settings("hyper", TINY), critic=META_CRITIC.with_settings("hyper", TINY),
        value=META_VALUE.with_settings("hyper", TINY),
        replay={"meta_batch_size": 3, "batch_size": 8, "buffer_size": 500, "initial_steps": 15,
                "tasks_per_iteration": 2,
                "num_steps_prior": 6, "num_steps_posterior": 4, "num_extra_rl_steps_posterior": 10,
                "updates_per_iteration": 4, "embedding_batch_size": 6, "embedding_mini_batch_size": 3},
        optim={"reward_scale": 100.0}, latent_dim=LATENT, encoder_hidden=[8],
        evaluation={"num_steps_per_eval": 30, "num_exp_traj_eval": 1},
    )  # fmt: skip
    for key, value in overrides.items():
        kwargs[key] = {**kwargs.get(key, {}), **value} if key in GROUPS and isinstance(value, dict) else value
    return kwargs


def flat_params(module):
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def random_batch(t=3, b=8, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDict(
        {
            "observation": torch.randn(t, b, OBS, generator=g),
            "action": torch.rand(t, b, ACT, generator=g) * 0.2 - 0.1,
            "encoder_context": torch.randn(t, n, FEATURES, generator=g),
            "next": {
                "observation": torch.randn(t, b, OBS, generator=g),
                "reward": -torch.rand(t, b, 1, generator=g),
                "terminated": torch.rand(t, b, 1, generator=g) < 0.2,
                "done": torch.zeros(t, b, 1, dtype=torch.bool),
            },
        },
        batch_size=[t],
    )


# ---------------------------------------------------------------------------------------------- the encoder
def test_the_posterior_is_the_normalised_product_of_the_gaussian_factors():
    """Closed form against a direct computation: the mean and variance of exp(Σ_n log N(z; μ_n, σ_n²)), normalised
    numerically on a fine 1-D grid."""
    mu = torch.tensor([[0.3], [-1.2], [0.8], [2.0]], dtype=torch.float64)
    var = torch.tensor([[0.5], [2.0], [0.25], [4.0]], dtype=torch.float64)
    post_mu, post_var = product_of_gaussians(mu, var)
    grid = torch.linspace(-6, 6, 200_001, dtype=torch.float64)
    log_density = torch.distributions.Normal(mu, var.sqrt()).log_prob(grid).sum(0)
    weights = torch.softmax(log_density, 0)
    mean = (weights * grid).sum()
    variance = (weights * (grid - mean) ** 2).sum()
    assert post_mu.shape == (1,) and torch.allclose(post_mu[0], mean, atol=1e-8)
    assert torch.allclose(post_var[0], variance, atol=1e-8)
    # batched over tasks and latent dims, the same per (task, dim)
    mus, vars_ = torch.randn(3, 7, 4), torch.rand(3, 7, 4) + 0.1
    m, v = product_of_gaussians(mus, vars_)
    assert m.shape == v.shape == (3, 4)
    assert torch.allclose(v[1, 2], 1 / (1 / vars_[1, :, 2]).sum()) and torch.allclose(
        m[1, 2], v[1, 2] * (mus[1, :, 2] / vars_[1, :, 2]).sum())


def test_the_kl_term_equals_torch_distributions_kl_divergence():
    torch.manual_seed(0)
    encoder = PEARLEncoder(OBS, ACT, latent_dim=LATENT, hidden=[16], kl_lambda=0.3)
    batch = random_batch()
    z, terms = encoder.infer(batch)
    mu, var = encoder.posterior(batch.get("encoder_context"))
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, var.sqrt()), torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(var))
    ).sum()
    assert z.shape == (3, 1, LATENT) and set(terms) == {"kl_loss"}
    assert torch.allclose(terms["kl_loss"], 0.3 * expected, rtol=1e-5)
    assert torch.allclose(gaussian_kl_to_standard(mu, var), 0.5 * (var + mu**2 - 1 - var.log()))


def test_without_the_bottleneck_z_is_deterministic_the_mean_of_the_outputs():
    encoder = PEARLEncoder(OBS, ACT, latent_dim=LATENT, hidden=[16], use_information_bottleneck=False)
    batch = random_batch()
    z1, terms = encoder.infer(batch)
    z2, _ = encoder.infer(batch)
    assert terms == {} and torch.equal(z1, z2)
    assert torch.allclose(z1[:, 0], encoder.net(batch.get("encoder_context")).mean(1))
    encoder.clear_z()
    assert torch.equal(encoder.acting(torch.zeros(OBS)), torch.zeros(LATENT))
    stochastic = PEARLEncoder(OBS, ACT, latent_dim=LATENT, hidden=[16])
    assert not torch.equal(stochastic.infer(batch)[0], stochastic.infer(batch)[0])


def test_encoder_input_follows_use_next_obs_in_context():
    assert PEARLEncoder(OBS, ACT, hidden=[4]).input_dim == OBS + ACT + 1
    assert PEARLEncoder(OBS, ACT, hidden=[4], use_next_obs_in_context=True).input_dim == 2 * OBS + ACT + 1
    with pytest.raises(ValueError, match="5 features, the encoder expects 7"):
        PEARLEncoder(OBS, ACT, hidden=[4], use_next_obs_in_context=True).posterior(torch.zeros(1, 3, 5))


# ---------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("critic", ["hyper", "combine", "mlp"])
def test_the_encoder_learns_from_the_critic_loss_and_the_kl_term_only(critic):
    """Each term alone: the encoder gets gradient from L_Q and the KL term and none from L_V, L_pi or the policy
    regulariser; the policy loss moves no encoder and no critic parameter (also for a combine/MLP meta-Q, whose
    action-independent part reads z)."""
    settings = {"hidden": [8]} if critic == "mlp" else dict(TINY)
    module = PEARL(**pearl_kwargs(critic=META_CRITIC.with_settings(critic, settings)))
    batch = random_batch()
    nets = {"encoder": module.context_provider, "critic": module.critics, "value": module.value,
            "policy": module.policy}

    def grads(term):
        module.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same z and policy samples for every term
        losses = module.losses(batch)
        losses[term].backward()
        return {name: [p.grad for p in net.parameters()] for name, net in nets.items()}

    def moved(g):
        return any(x is not None and x.abs().sum() > 0 for x in g)

    by_term = {term: grads(term) for term in ("critic_loss", "kl_loss", "value_loss", "policy_loss", "policy_reg")}
    assert moved(by_term["critic_loss"]["encoder"]) and moved(by_term["kl_loss"]["encoder"])
    for term in ("value_loss", "policy_loss", "policy_reg"):
        assert not moved(by_term[term]["encoder"]), f"{term} reached the encoder"
    assert not moved(by_term["policy_loss"]["critic"]) and not moved(by_term["policy_loss"]["value"])
    assert moved(by_term["policy_loss"]["policy"])
    total = grads("loss")["encoder"]
    for g_total, g_q, g_kl in zip(total, by_term["critic_loss"]["encoder"], by_term["kl_loss"]["encoder"]):
        assert torch.allclose(g_total, g_q + g_kl, atol=1e-6)


# ---------------------------------------------------------------------------------------------- wiring and rates
def test_the_networks_are_wired_as_section_6_2():
    hyper = PEARL(**pearl_kwargs())
    q, v, pi = hyper.critics.member(0), hyper.value, hyper.policy
    assert isinstance(q, HyperMetaQ) and isinstance(v, HyperMetaV) and isinstance(pi, HyperPolicy)
    # Q: meta = state, base = [action, z]; V: meta = state, base = z; policy: meta = z, base = state
    assert q.hyper.primary.layers[0].in_features == OBS and q.hyper.heads.layer_sizes[0] == (8, ACT + LATENT)
    assert v.hyper.primary.layers[0].in_features == OBS and v.hyper.heads.layer_sizes[0] == (8, LATENT)
    assert pi.hyper.primary.layers[0].in_features == LATENT and pi.hyper.heads.layer_sizes[0] == (8, OBS)
    assert pi.hyper.heads.layer_sizes[1:] == [(ACT, 8), (ACT, 8)]  # mean and log-std heads
    combine = PEARL(**pearl_kwargs(critic=META_CRITIC.with_settings("combine", TINY))).critics.member(0)
    assert isinstance(combine, CombineHyperMetaQ)
    assert combine.hyper.primary.layers[0].in_features == OBS + LATENT and combine.hyper.heads.layer_sizes[0] == (8, ACT)
    mlp = PEARL(**pearl_kwargs(policy="context_mlp", critic="mlp", value="mlp"))
    q, v = mlp.critics.member(0), mlp.value
    assert isinstance(q, MLPMetaQ) and isinstance(v, MLPMetaV)
    widths = [m.out_features for m in q.net if isinstance(m, torch.nn.Linear)]
    assert widths == [300, 300, 300, 1] and q.net[0].in_features == OBS + ACT + LATENT
    assert [m.out_features for m in mlp.policy.trunk if isinstance(m, torch.nn.Linear)] == [300, 300, 300]
    assert mlp.policy.trunk[0].in_features == OBS + LATENT
    encoder = mlp.context_provider
    assert [m.out_features for m in encoder.net if isinstance(m, torch.nn.Linear)] == [8, 2 * LATENT]
    assert PEARLEncoder(20, 6).net[0].out_features == 200 and len(PEARLEncoder(20, 6).net) == 7  # 3x200 + last


def test_learning_rates_follow_section_6_3():
    hyper = PEARL(**pearl_kwargs())
    assert hyper.learning_rates() == {"critic": 5e-5, "policy": 1e-4, "context": 3e-4}
    groups = {g["name"]: g["lr"] for g in hyper.param_groups()}
    assert groups == {"critic": 5e-5, "value": 5e-5, "policy": 1e-4, "context": 3e-4}
    encoder_params = {id(p) for p in hyper.context_provider.parameters()}
    context_group = next(g for g in hyper.param_groups() if g["name"] == "context")
    assert {id(p) for p in context_group["params"]} == encoder_params
    mlp = PEARL(**pearl_kwargs(policy=POLICY.with_settings("context_mlp", hidden=[8]),
                               critic=META_CRITIC.with_settings("mlp", hidden=[8]),
                               value=META_VALUE.with_settings("mlp", hidden=[8]), context_lr=1e-3))
    assert mlp.learning_rates() == {"critic": 3e-4, "policy": 3e-4, "context": 1e-3}


# ---------------------------------------------------------------------------------------------- data and schedule
def test_buffers_schedule_and_context_batches():
    """Iteration 0: initial steps on every task into both buffers, then (as every iteration) each sampled task's
    encoder buffer is emptied and refilled by its prior + posterior collections only; the posterior is inferred
    once per posterior/extra episode; a context batch serves embedding_batch_size // mini updates."""
    module = PEARL(**pearl_kwargs())
    data = module.make_data()
    calls = []
    real_infer = data.encoder.infer_posterior
    data.encoder.infer_posterior = lambda c, g=None, rows=None: (calls.append((tuple(c.shape), rows)),
                                                                 real_infer(c, g, rows))
    draws = data.rng.bit_generator.state
    data.collect()
    data.rng.bit_generator.state = draws
    sampled = data.rng.integers(4, size=2).tolist()
    rl = [len(b) for b in data.buffers]
    enc = [len(b) for b in data.encoder_buffers]
    for i in range(4):
        k = sampled.count(i)
        assert rl[i] == 15 + k * (6 + 4 + 10)
        assert enc[i] == (15 if k == 0 else 6 + 4)
    # one posterior episode + one extra episode per sampled task; distinct tasks side by side (one call for both)
    per_call = 1 if sampled[0] == sampled[1] else 2
    assert calls == [((per_call, 6, FEATURES), list(range(per_call)))] * (4 // per_call)
    batch = data.sample()
    assert batch.batch_size == (3,) and batch.get("observation").shape == (3, 8, OBS)
    assert batch.get("encoder_context").shape == (3, 3, FEATURES)
    second = data.sample()
    features = data._context["features"]
    assert torch.equal(batch.get("encoder_context"), features[:, :3])
    assert torch.equal(second.get("encoder_context"), features[:, 3:])
    third = data.sample()  # a fresh context batch
    assert data._context["next"] == 1 and not torch.equal(data._context["features"], features)
    assert third.get("encoder_context").shape == (3, 3, FEATURES)
    data.shutdown()


@pytest.mark.parametrize("steps, warns", [(100, True), (101, False), (0, False)])
def test_a_posterior_phase_too_short_to_reach_the_posterior_warns(steps, warns):
    """Collection re-infers z only after update_post_train episodes: a phase of at most that many 100-step episodes
    acts with prior draws throughout, which is said at setup."""
    import warnings

    module = PEARL(**pearl_kwargs(replay={"num_steps_posterior": 0, "num_extra_rl_steps_posterior": steps,
                                                 "update_post_train": 1}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module.make_data().shutdown()
    messages = [str(w.message) for w in caught if "num_extra_rl_steps_posterior" in str(w.message)]
    if warns:
        assert messages == [
            "replay.num_extra_rl_steps_posterior=100 with update_post_train=1 and 100-step episodes: PEARL infers the "
            "posterior only after 1 episode(s), so unless episodes end early this phase acts with z from the prior "
            "throughout; more than 100 steps collect posterior data"
        ]
    else:
        assert messages == []


def test_evaluation_explores_with_the_prior_then_adapts():
    module = PEARL(**pearl_kwargs(evaluation={"num_steps_per_eval": 250, "num_exp_traj_eval": 2}))
    calls = []
    encoder = module.context_provider
    real = encoder.infer_posterior
    encoder.infer_posterior = lambda c, g=None, rows=None: (calls.append(([len(x) for x in c], rows)),
                                                            real(c, g, rows))
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    env = module._eval_env()
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        returns = module.adapt_on_tasks(env, module.acting_policy(), module.pools.test[:1], torch.Generator())
    assert len(returns) == 1 and len(returns[0]) == 3  # whole episodes of 100 until 250 steps: the third ends at 300
    assert calls == [([200], [0]), ([300], [0])]  # after the 2nd and 3rd episodes, from everything seen on the task
    module.evaluator.steps = 50  # one episode per task: the first is also the last
    results = module.evaluate_pools()
    assert results["test"]["return"] == results["test"]["prior_return"]
    assert set(results) == {"train", "test"} and set(results["test"]) == {"return", "prior_return"}
    assert results == module.evaluate_pools(), "evaluation draws z from its own seeded generator"
    env.close()


def test_sampled_exploration_samples_the_exploration_episodes_only_and_keeps_the_random_stream():
    """``eval_sample_exploration``: the ``num_exp_traj_eval`` exploration episodes act under RANDOM exploration, the
    episodes after adaptation under the evaluation's DETERMINISTIC; evaluating reseeds a fork of torch's generator,
    so it repeats itself and leaves the training's random stream where it was."""
    from torchrl.envs.utils import ExplorationType, exploration_type, set_exploration_type

    types = {}
    for sample in (False, True):
        module = PEARL(**pearl_kwargs(evaluation={"num_steps_per_eval": 300, "num_exp_traj_eval": 2,
                                                  "eval_sample_exploration": sample}))
        policy, seen = module.acting_policy(), []

        def recording(td, policy=policy, seen=seen):
            seen.append(exploration_type())
            return policy(td)

        env = module._eval_env()
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            module.adapt_on_tasks(env, recording, module.pools.test[:1], torch.Generator())
        env.close()
        types[sample] = seen
        before = torch.random.get_rng_state()
        results = module.evaluate_pools()
        assert torch.equal(torch.random.get_rng_state(), before), "evaluation leaves torch's generator as it was"
        assert results == module.evaluate_pools(), "evaluation repeats itself"
        types[sample, "results"] = results
    assert types[False] == [ExplorationType.DETERMINISTIC] * 300  # 3 episodes of 100 steps, one call per step
    assert types[True] == [ExplorationType.RANDOM] * 200 + [ExplorationType.DETERMINISTIC] * 100
    # same weights (same seed), so only the sampled actions make the exploration episodes differ
    assert types[True, "results"]["test"]["prior_return"] != types[False, "results"]["test"]["prior_return"]


def test_tasks_side_by_side_adapt_as_they_do_one_at_a_time():
    """With the deterministic encoder and deterministic actions nothing is random: evaluating two tasks in the rows
    of one env gives each the episodes it gets alone (its own context, its own posterior)."""
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    module = PEARL(**pearl_kwargs(use_information_bottleneck=False,
                                  evaluation={"num_steps_per_eval": 300, "num_exp_traj_eval": 1}))
    env = module._eval_env()
    assert env.batch_size == (4,)  # 2 train + 2 test tasks, one run each
    policy, tasks = module.acting_policy(), module.pools.test[:2]
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        together = module.adapt_on_tasks(env, policy, tasks, torch.Generator())
        alone = [module.adapt_on_tasks(env, policy, [task], torch.Generator())[0] for task in tasks]
    assert together == alone and len(together[0]) == 3
    assert together[0] != together[1], "each row acts on its own task"
    env.close()


def test_evaluation_runs_side_by_side_equal_runs_one_at_a_time():
    """The ``num_evals`` runs of every evaluated task share one env (one row each); with the deterministic encoder
    and deterministic actions every run is the same, so the per-task means equal a single run's, task by task."""
    one = PEARL(**pearl_kwargs(use_information_bottleneck=False,
                               evaluation={"num_steps_per_eval": 200, "num_exp_traj_eval": 1}))
    three = PEARL(**pearl_kwargs(use_information_bottleneck=False,
                                 evaluation={"num_steps_per_eval": 200, "num_exp_traj_eval": 1, "num_evals": 3}))
    three.load_state_dict(one.state_dict())
    assert one._eval_env().batch_size == (4,)  # 2 train + 2 test tasks
    assert three._eval_env().batch_size == (12,)  # 3 runs of each
    assert three.evaluate_pools() == one.evaluate_pools()
    three._envs["eval"] = three._task_env(None, 5)  # chunks of 5, 5 and 2 runs
    assert three.evaluate_pools() == one.evaluate_pools()


def test_evaluation_runs_are_cut_into_equal_chunks():
    # 165 runs
    module = PEARL(**pearl_kwargs(tasks={"n_test_tasks": 30}, evaluation={"eval_train_tasks": 3, "num_evals": 5}))
    assert module.evaluator.rows(module.evaluation_pools()) == 83  # two chunks of at most 128

# ---------------------------------------------------------------------------------------------- resume and errors
def test_interrupted_and_resumed_pearl_run_equals_an_uninterrupted_one(tmp_path):
    """Stop mid-iteration and between two slices of a context batch, resume: RL buffers, encoder buffers, the
    pending context batch, the task sampling state and the networks continue exactly."""
    straight = PEARL(**pearl_kwargs())
    make_trainer(tmp_path / "straight", max_steps=11).fit(straight)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=5, save_top_k=-1)
    make_trainer(tmp_path / "a", max_steps=5, callbacks=[ckpt]).fit(PEARL(**pearl_kwargs()))
    resumed = PEARL(**pearl_kwargs(seed=5))
    holder = {}

    class Keep(Callback):  # the data source's state before teardown shuts it
        def on_train_end(self, trainer, pl_module):
            holder["state"] = pl_module.data.state_dict()

    make_trainer(tmp_path / "b", max_steps=11, callbacks=[Keep()]).fit(
        resumed, ckpt_path=tmp_path / "ckpt" / "epoch=0-step=5.ckpt")
    assert torch.equal(flat_params(resumed), flat_params(straight))
    assert resumed.frames == straight.frames
    state = holder["state"]
    assert state["context"]["next"] in (1, 2) and len(state["encoder_buffers"]) == 4


def test_meta_sac_refuses_the_pearl_provider():
    from test_meta_sac import meta_kwargs

    with pytest.raises(ConfigurationError, match="use class_path hyperrl.algos.PEARL") as info:
        MetaSAC(**meta_kwargs(context="pearl"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name, value", [("context", "oracle"), ("context_kwargs", {"latent_dim": 2}),
                                         ("replay.steps_per_task", 3), ("evaluation.eval_episodes", 2)])
def test_pearl_takes_none_of_metasac_s_own_options(name, value):
    """PEARL composes the shared algorithm with its own encoder, data and evaluation: MetaSAC's context, collection
    and evaluation options are not PEARL's (the CLI lists only PEARL's and the shared ones)."""
    from jsonargparse import ArgumentParser

    group, _, field = name.rpartition(".")
    if group:  # a MetaSAC field in PEARL's group: refused by the group, in one line
        with pytest.raises(ConfigurationError, match=re.escape(name)) as info:
            PEARL(**pearl_kwargs(**{group: {field: value}}))
        assert "\n" not in str(info.value)
    else:
        with pytest.raises(TypeError, match=name):
            PEARL(**pearl_kwargs(**{name: value}))
    parser = ArgumentParser()
    parser.add_class_arguments(PEARL, "model")
    options = set(parser.get_defaults().keys())
    assert f"model.{name}" not in options and "model.latent_dim" in options
    assert "model.replay.meta_batch_size" in options and "model.evaluation.num_evals" in options


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"latent_dim": 0}, "latent_dim=0 is not allowed"),
        ({"kl_lambda": -1.0}, "kl_lambda=-1.0 is not allowed"),
        ({"replay": {"embedding_batch_size": 0}}, "replay.embedding_batch_size=0 is not allowed"),
        ({"replay": {"embedding_mini_batch_size": 4}},
         "replay.embedding_mini_batch_size=4 is not allowed: it must divide"),
        ({"replay": {"num_steps_prior": -1}}, "replay.num_steps_prior=-1 is not allowed"),
        ({"replay": {"update_post_train": 0}}, "replay.update_post_train=0 is not allowed"),
        ({"evaluation": {"num_steps_per_eval": 0}}, "evaluation.num_steps_per_eval=0 is not allowed"),
        ({"use_information_bottleneck": "yes"}, "use_information_bottleneck='yes' is not allowed"),
        ({"critic": "nope"}, "unknown meta-critic 'nope'"),
        ({"context_lr": 0.0}, "context_lr=0.0 is not allowed"),
        ({"evaluation": {"eval_sample_exploration": "yes"}},
         "evaluation.eval_sample_exploration='yes' is not allowed: expected true or false"),
    ],
)
def test_bad_pearl_settings_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigurationError, match=message) as info:
        PEARL(**pearl_kwargs(**overrides))
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------- configs
CONF = __import__("pathlib").Path(__file__).resolve().parents[1] / "conf" / "meta"
#: the authors' numbers (PEARL/configs/<json> over configs/default.py): meta_batch_size, initial, prior, extra,
#: updates per iteration, embedding batch, reward scale, kl_lambda, train/test tasks
AUTHORS = {
    "cheetah_vel": (16, 2000, 400, 600, 2000, 100, 5.0, 0.1, 100, 30),
    "cheetah_vel_medium": (16, 2000, 400, 600, 2000, 100, 5.0, 0.1, 100, 30),
    "cheetah_dir": (4, 2000, 1000, 1000, 2000, 256, 5.0, 0.1, None, None),
    "ant_vel": (16, 2000, 400, 600, 2000, 100, 5.0, 0.1, 100, 30),
    "ant_dir": (4, 2000, 400, 600, 4000, 256, 5.0, 0.1, None, None),
    "ant_goal": (10, 2000, 400, 600, 4000, 256, 5.0, 1.0, 150, 30),
    "navigation": (16, 200, 200, 200, 1000, 64, 100.0, 0.1, 80, 20),
}


def test_paper_configs_hold_the_authors_settings():
    import yaml

    nets = {"hyper": ("hyper", "hyper", "hyper"), "mlp": ("context_mlp", "mlp", "mlp")}
    for family, numbers in AUTHORS.items():
        meta_batch_size, initial, prior, extra, updates, emb, scale, kl, n_train, n_test = numbers
        for name, kind in ((f"pearl_{family}_hyper", "hyper"), (f"pearl_{family}", "mlp"),
                           (f"oracle_{family}_hyper", "hyper"), (f"oracle_{family}_context_mlp", "mlp")):
            config = yaml.safe_load((CONF / f"{name}.yaml").read_text())
            model = config["model"]["init_args"]
            replay, tasks = model["replay"], model["tasks"]
            assert (replay["meta_batch_size"], replay["initial_steps"], replay["updates_per_iteration"],
                    model["optim"]["reward_scale"], replay["batch_size"], replay["tasks_per_iteration"]) == (
                meta_batch_size, initial, updates, scale, 256, 5)
            assert config["trainer"]["max_steps"] == 400 * updates
            assert (tasks.get("n_train_tasks"), tasks.get("n_test_tasks")) == (n_train, n_test), name
            assert (model["policy"], model["critic"], model["value"]) == nets[kind], name
            assert tasks["split"] == ("medium" if family == "cheetah_vel_medium" else "default")
            if name.startswith("pearl"):
                assert config["model"]["class_path"] == "hyperrl.algos.pearl.PEARL"
                assert model["tanh_log_prob"] == "pearl", name  # PEARL's log(1 - tanh^2 + 1e-6)
                assert (replay["num_steps_prior"], replay["num_steps_posterior"],
                        replay["num_extra_rl_steps_posterior"],
                        replay["embedding_batch_size"], replay["embedding_mini_batch_size"], model["kl_lambda"],
                        model["latent_dim"], model["encoder_hidden"]) == (prior, 0, extra, emb, emb, kl, 5, [200] * 3)
            else:
                assert config["model"]["class_path"] == "hyperrl.algos.MetaSAC" and model["context"] == "oracle"
                assert replay["steps_per_task"] == prior + extra


@pytest.mark.parametrize("name", ["pearl_cheetah_vel_medium_hyper", "pearl_quickstart"])
def test_pearl_configs_load_through_the_cli(name, capsys):
    import yaml

    from hyperrl.cli import main

    try:
        main(["fit", "--config", str(CONF / f"{name}.yaml"), "--model.init_args.policy", "mlp", "--print_config"])
    except SystemExit as exc:
        assert not exc.code
    model = yaml.safe_load(capsys.readouterr().out)["model"]
    assert model["class_path"] == "hyperrl.algos.pearl.PEARL" and model["init_args"]["policy"] == "mlp"
    assert "steps_per_task" not in model["init_args"]["replay"] and "context" not in model["init_args"]
    assert "eval_episodes" not in model["init_args"]["evaluation"]


def test_the_cpu_demo_keeps_the_exact_tanh_log_prob_and_the_option_reaches_pearl_through_the_cli(capsys):
    import yaml

    from hyperrl.cli import main

    assert "tanh_log_prob" not in yaml.safe_load((CONF / "pearl_quickstart.yaml").read_text())["model"]["init_args"]
    for name, expected in (("pearl_quickstart", "exact"), ("pearl_navigation_hyper", "pearl")):
        try:
            main(["fit", "--config", str(CONF / f"{name}.yaml"), "--print_config"])
        except SystemExit as exc:
            assert not exc.code
        assert yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["tanh_log_prob"] == expected
    assert PEARL(**pearl_kwargs(tanh_log_prob="pearl")).policy.tanh_log_prob == "pearl"


def test_the_demo_train_goals_leave_no_gap_wider_than_10_degrees_and_keep_the_test_goals():
    """The demo's 40 train goals: consecutive train angles at most 10° apart (20 goals leave two gaps over 25°), the
    20 goals of the 20-goal pool among them, and the same 20 test goals."""
    import math

    import yaml

    from hyperrl.envs import make_task_pools

    args = yaml.safe_load((CONF / "pearl_quickstart.yaml").read_text())["model"]["init_args"]
    tasks = args["tasks"]
    key = (args["env"], tasks["task_seed"], tasks["split"])

    def angles(tasks):
        return sorted(math.degrees(math.atan2(t["goal"][1], t["goal"][0])) for t in tasks)

    def widest_gap(tasks):
        a = angles(tasks)
        return max(y - x for x, y in zip(a, a[1:]))

    demo = make_task_pools(*key, tasks["n_train_tasks"], tasks["n_test_tasks"])
    twenty = make_task_pools(*key, 20, tasks["n_test_tasks"])
    assert len(demo.train) == 40 and len(demo.test) == 20
    assert widest_gap(demo.train) <= 10.0 and widest_gap(twenty.train) > 25.0
    assert set(angles(twenty.train)) <= set(angles(demo.train)) and angles(twenty.test) == angles(demo.test)


def test_the_encoder_capacity_check_builds_contexts_as_the_demo_sees_them():
    """``benchmarks/pearl_encoder_capacity.py`` makes synthetic contexts: they must have the layout and the values of
    real Navigation2D context transitions (``context_features`` of a rollout with rescaled actions)."""
    import os
    import sys

    from hyperrl.data.pearl import context_features
    from hyperrl.envs import make_task_env

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    from pearl_encoder_capacity import contexts

    c, goal = contexts(3, 50, (40.0, 145.0), torch.Generator().manual_seed(0))
    assert c.shape == (3, 50, 7) and goal.shape == (3, 2)
    assert torch.allclose(goal.norm(dim=-1), torch.ones(3)) and (goal[:, 1] >= 0).all()
    s, a, r, s_next = c[..., :2], c[..., 2:4], c[..., 4], c[..., 5:]
    assert a.abs().max() <= 1 + 1e-5 and torch.allclose(s + 0.1 * a, s_next, atol=1e-6)
    assert torch.allclose(r, -(s_next - goal[:, None]).norm(dim=-1), atol=1e-6)

    # one step of the real env from the origin, action (1, 0.5) in the networks' [-1, 1]: the same layout
    g = tuple(goal[0].tolist())
    env = make_task_env("hyperrl/Navigation2D-v0", seed=0, task={"goal": g}, rescale_actions=True)
    td = env.reset()
    td["action"] = torch.tensor([1.0, 0.5])
    step = env.step(td)
    real = context_features(step, use_next_obs=True)
    expected_next = torch.tensor([0.1, 0.05])
    expected = torch.cat([torch.zeros(2), torch.tensor([1.0, 0.5]),
                          -(expected_next - goal[0]).norm().reshape(1), expected_next])
    assert torch.allclose(real, expected, atol=1e-5)


def test_the_eval_spread_script_repeats_the_logged_evaluation_then_draws_new_ones(tmp_path):
    """``benchmarks/eval_spread.py``: its first repeat is the module's own evaluation (the checkpoint's seed), the
    others use other evaluation seeds and differ; the module's seed is restored."""
    import os
    import sys

    import lightning
    import numpy as np

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    from eval_spread import spread

    module = PEARL(**pearl_kwargs(evaluation={"num_steps_per_eval": 200, "num_exp_traj_eval": 1}))
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "global_step": 7,
                "pytorch-lightning_version": lightning.__version__}, path)
    result = spread(str(path), "PEARL", 3)
    assert result["step"] == 7 and len(result["test_returns"]) == 3
    assert result["test_returns"][0] == pytest.approx(float(np.mean(module.evaluate_pools()["test"]["return"])),
                                                      abs=1e-3)
    assert len(set(result["test_returns"])) == 3, "other evaluation seeds give other draws"
    assert result["mean"] == pytest.approx(float(np.mean(result["test_returns"])), abs=1e-3)
