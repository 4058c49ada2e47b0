"""MAML / ContextMAML: the exact second-order meta-gradient, returns and baseline, the episodic sampler, training
steps, evaluation metrics, seeded determinism, exact resume and one-line configuration errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hyperrl.algos import MAML, ContextMAML
from hyperrl.algos.returns import baseline_features, discounted_returns, fit_linear_baseline, gae, normalize
from hyperrl.data.onpolicy import episode_mask
from hyperrl.errors import ConfigurationError
from hyperrl.nn import POLICY

TINY = dict(env="hyperrl/Navigation2D-v0", policy=POLICY.with_settings("mlp", {"hidden": [8]}),
            sampling={"meta_batch_size": 2, "fast_batch_size": 2}, tasks={"n_train_tasks": 6, "n_test_tasks": 2},
            evaluation={"eval_episodes": 2})
TINY_HYPER = {"primary_widths": [8, 8, 16], "blocks_per_stage": 1, "dynamic_hidden": [8]}
GROUPS = ("tasks", "adaptation", "sampling", "optim", "evaluation")


def tiny(**overrides) -> dict:
    """TINY with OVERRIDES; a group given as a mapping (``tasks={...}``) is merged onto TINY's."""
    kwargs = dict(TINY)
    for key, value in overrides.items():
        kwargs[key] = {**kwargs.get(key, {}), **value} if key in GROUPS and isinstance(value, dict) else value
    return kwargs


def _module(**overrides) -> MAML:
    m = MAML(**tiny(**overrides))
    m.data = m.make_data()
    return m


# ---------------------------------------------------------------------------------------------- returns, baseline
def test_discounted_returns_gae_and_normalisation_on_padded_episodes():
    reward = torch.tensor([[1.0, 2.0, 3.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the last step is padding
    ret = discounted_returns(reward, mask, 0.5)
    assert torch.allclose(ret, torch.tensor([[1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0, 0.0]]))
    values = torch.tensor([[0.5, -1.0, 2.0, 7.0]])
    # λ = 1: GAE is the discounted return minus the value; the value after the last step counts as 0
    assert torch.allclose(gae(reward, values, mask, 0.5, 1.0), (ret - values) * mask)
    # λ = 0: the one-step TD error
    td = torch.tensor([[1 + 0.5 * -1.0 - 0.5, 2 + 0.5 * 2.0 + 1.0, 3 - 2.0, 0.0]])
    assert torch.allclose(gae(reward, values, mask, 0.5, 0.0), td)
    x = normalize(torch.tensor([[1.0, 2.0, 3.0, 100.0]]), mask)
    assert x[0, 3] == 0 and torch.allclose(x[0, :3].mean(), torch.tensor(0.0), atol=1e-6)
    assert torch.allclose(x[0, :3].square().mean(), torch.tensor(1.0), atol=1e-5)


def test_linear_baseline_features_and_an_exact_fit():
    obs = torch.randn(3, 5, 2, dtype=torch.float64)
    mask = torch.ones(3, 5, dtype=torch.float64)
    mask[0, 3:] = 0
    features = baseline_features(obs, mask)
    assert features.shape == (3, 5, 2 * 2 + 4)
    assert torch.equal(features[0, 3:], torch.zeros(2, 8, dtype=torch.float64))  # padding has no features
    assert torch.allclose(features[1, 4, 4:], torch.tensor([0.04, 0.04 ** 2, 0.04 ** 3, 1.0], dtype=torch.float64))
    w = torch.arange(1.0, 9.0, dtype=torch.float64)
    target = features @ w  # exactly representable: the ridge fit reproduces it
    values = fit_linear_baseline(obs, target, mask, reg=1e-10)
    assert torch.allclose(values, target * mask, atol=1e-5)


def test_episode_mask_keeps_the_step_that_ends_the_episode():
    done = torch.tensor([[False, False, True, False, True], [False] * 5])
    assert episode_mask(done).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


# ---------------------------------------------------------------------------------------------- sampler
def test_rollout_shapes_contexts_and_per_task_actor_equals_shared_actor():
    m = _module(policy=POLICY.with_settings("hyper", TINY_HYPER))
    tasks = m.data.collect()
    assert len(tasks) == 2 and all(t in m.pools.train for t in tasks)
    meta = m._detached(m.meta_params())
    m.data.reseed("train", 3)
    shared = m.data.rollout(tasks, 3, m.actor_factory([meta] * 2, 3))
    assert shared.batch_size == (2, 3) and shared["observation"].shape == (2, 3, 100, 2)
    assert shared["action"].shape == (2, 3, 100, 2) and shared["mask"].shape == (2, 3, 100)
    for i, task in enumerate(tasks):  # the oracle context comes from the env through TorchRL
        assert torch.allclose(shared["context"][i], torch.from_numpy(m.pools.context(task)).expand(3, 100, 2))
    assert torch.allclose(shared["return"], shared["reward"].sum(-1))
    m.data.reseed("train", 3)
    per_task = m.data.rollout(tasks, 3, m.actor_factory([dict(meta) for _ in tasks], 3))  # vmap path
    assert torch.allclose(shared["action"], per_task["action"], atol=1e-6)
    assert m.data.episodes_sampled == 12


def test_a_rollout_after_one_that_ended_mid_episode_starts_every_episode_afresh_in_the_new_task():
    # the vector env's plain reset is partial after its autoreset: rows whose episode ended early (and restarted)
    # must not begin the next rollout from their old state, with the old task's context
    m = ContextMAML(**tiny(policy="context_mlp"))
    data = m.make_data()
    contexts_seen = []

    def factory(context):
        contexts_seen.append(context.clone())
        return lambda obs: (torch.full((obs.shape[0], 2), 0.1), torch.full((obs.shape[0], 2), 1e-6))

    near = [{"goal": [0.3, 0.3]}, {"goal": [-0.9, -0.9]}]  # row 0 reaches its goal in 3 steps: mid-episode at the end
    first = data.rollout(near, 1, factory)
    assert first["mask"][0, 0].sum() == 3 and first["mask"][1, 0].sum() == 100
    far = [{"goal": [-0.9, 0.5]}, {"goal": [0.7, -0.8]}]
    out = data.rollout(far, 1, factory)
    expected = torch.stack([torch.from_numpy(m.pools.context(t)).float() for t in far])
    assert torch.allclose(contexts_seen[-1], expected)  # the actor is built from the new tasks' contexts
    assert torch.allclose(out["context"][:, 0], expected[:, None].expand(2, 100, 2))
    assert torch.equal(out["observation"][:, 0, 0], torch.zeros(2, 2))  # every episode starts at the origin
    steps = torch.arange(1, 101, dtype=torch.float32)[:, None] * 0.1
    assert torch.allclose(out["observation"][1, 0, 1:], steps[:99].expand(99, 2), atol=1e-5)  # and walks on from it
    assert out["mask"][:, 0].sum(-1).tolist() == [100, 100]


def test_mujoco_actions_are_clipped_before_the_env_and_stored_unclipped():
    """pytorch-maml-rl's NormalizedActionWrapper: the env is stepped with the action clipped to [-1, 1], so a
    constant action of 3 costs (control cost included) exactly what a constant 1 costs; the episode keeps the
    sampled 3, whose log-probability the losses use. Observations reach the actor as float32."""
    m = MAML(**tiny(env="hyperrl/HalfCheetahVel-v0", tasks={"n_test_tasks": 1}))
    task = [m.pools.train[0]]
    seen = []

    def constant(value):
        def factory(context):
            def actor(obs):
                seen.append(obs.dtype)
                return torch.full((obs.shape[0], 6), value), torch.zeros(obs.shape[0], 6)
            return actor
        return factory

    big, one = (m.make_data().rollout(task, 1, constant(v)) for v in (3.0, 1.0))
    assert torch.equal(big["action"], torch.full_like(big["action"], 3.0))
    assert torch.equal(big["reward"], one["reward"])  # unclipped, each step would cost 0.05 * 6 * (9 - 1) = 2.4 more
    assert torch.equal(big["observation"], one["observation"])
    assert set(seen) == {torch.float32}


# ---------------------------------------------------------------------------------------------- meta-gradient
def _outer_setup(first_order: bool):
    m = _module(adaptation={"first_order": first_order, "fast_lr": 0.5})
    # ReLU makes ∇L, hence φ(θ) = θ − α∇L(θ), jump where a unit switches: finite differences need a smooth net
    for i, layer in enumerate(m.policy.trunk):
        if isinstance(layer, torch.nn.ReLU):
            m.policy.trunk[i] = torch.nn.Tanh()
    batch = [b.to(torch.float64) for b in m.sample_meta_batch(m.data.collect())]
    m.policy.double()  # finite differences in float64
    return m, batch


def _directional(m, batch, old, v, eps=1e-5):
    params = list(m.policy.parameters())
    base = [p.detach().clone() for p in params]

    def loss_at(t):
        with torch.no_grad():
            offset = 0
            for p, b in zip(params, base):
                p.copy_(b + t * v[offset:offset + p.numel()].view_as(p))
                offset += p.numel()
        return m.outer_terms(*batch, old, create_graph=False)[0].item()

    fd = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    loss_at(0.0)
    return fd


def test_meta_gradient_is_exact_and_differs_from_the_first_order_one():
    """d S(θ)/dθ through the inner step, by autograd, equals central finite differences of S (the inner step
    re-run at each perturbed θ); the first-order gradient (∂φ/∂θ = I) does not."""
    m, batch = _outer_setup(first_order=False)
    loss, _, old = m.outer_terms(*batch)
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(m.policy.parameters()))])
    _, _, old_fo = m.outer_terms(*batch, create_graph=False)
    loss_fo, _, _ = m.outer_terms(*batch, old_fo, create_graph=False)
    grad_fo = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss_fo, list(m.policy.parameters()))])
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = torch.randn(grad.shape, generator=g, dtype=torch.float64)
        fd = _directional(m, batch, old, v)
        assert grad @ v == pytest.approx(fd, rel=1e-5, abs=1e-9)
    assert (grad - grad_fo).norm() > 1e-2 * grad.norm()
    # first_order=True: the module's own gradient is the first-order one
    m.adaptation = dataclasses.replace(m.adaptation, first_order=True)
    loss1, _, _ = m.outer_terms(*batch)
    grad1 = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss1, list(m.policy.parameters()))])
    assert torch.allclose(grad1, grad_fo, atol=1e-12)


def test_the_trust_region_kl_is_new_given_old_as_the_authors():
    """The TRPO constraint is mean_i mean_t KL(π_φi(θ) ‖ π_φi(θ₀)) (the authors' ``kl_divergence(pi, old_pi)``), through
    the inner step, at a θ away from θ₀; the reverse direction differs there."""
    from torch.distributions import Normal, kl_divergence

    m, batch = _outer_setup(first_order=False)
    train, train_adv, valid, _ = batch
    _, kl0, old = m.outer_terms(*batch, create_graph=False)
    assert float(kl0) == 0.0
    with torch.no_grad():
        for p in m.policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    _, kl, _ = m.outer_terms(*batch, old, create_graph=False)
    new_old, old_new = [], []
    for i in range(valid.shape[0]):
        phi = m.adapt(m.meta_params(), train[i], train_adv[i], create_graph=False)
        new = Normal(*m.distribution(phi, valid[i]["observation"], valid[i]["context"][0, 0]))
        before = Normal(old[0][i], old[1][i])
        mask = valid[i]["mask"]
        new_old.append((kl_divergence(new, before).sum(-1) * mask).sum() / mask.sum())
        old_new.append((kl_divergence(before, new).sum(-1) * mask).sum() / mask.sum())
    assert float(kl) == pytest.approx(float(torch.stack(new_old).mean()), rel=1e-10)
    assert abs(float(torch.stack(old_new).mean()) - float(kl)) > 1e-3 * float(kl)


@pytest.mark.parametrize("choice", ["pre", "refit"])
def test_post_adaptation_advantages_use_the_pre_adaptation_baseline_as_the_authors(choice):
    """Default (the authors' MetaLearner): the validation episodes' advantages are valued by the linear baseline
    fitted on the same task's pre-adaptation episodes; ``refit`` fits one on the validation episodes."""
    from hyperrl.algos.returns import advantages

    m = _module(optim={"post_adaptation_baseline": choice}) if choice != "pre" else _module()
    train, train_adv, valid, valid_adv = m.sample_meta_batch(m.data.collect())
    hp = m.optim
    for i in range(valid.shape[0]):
        episodes = (valid[i]["observation"], valid[i]["reward"], valid[i]["mask"])
        pre = advantages(*episodes, hp.gamma, hp.gae_lambda, hp.baseline_reg,
                         fit_on=(train[i]["observation"], train[i]["reward"], train[i]["mask"]))
        refit = advantages(*episodes, hp.gamma, hp.gae_lambda, hp.baseline_reg)
        assert not torch.allclose(pre, refit)
        assert torch.equal(valid_adv[i], pre if choice == "pre" else refit)
        torch.testing.assert_close(train_adv[i], advantages(train[i]["observation"], train[i]["reward"],
                                                            train[i]["mask"], hp.gamma, hp.gae_lambda,
                                                            hp.baseline_reg))


def test_task_pools_default_to_the_authors_100_train_and_20_test_tasks():
    pools = MAML(**tiny(tasks={"n_train_tasks": None, "n_test_tasks": None})).pools
    assert (len(pools.train), len(pools.test), len(pools.ood)) == (100, 20, 0)
    medium = MAML(**tiny(env="hyperrl/HalfCheetahVel-v0",
                         tasks={"split": "medium", "n_train_tasks": None, "n_test_tasks": None})).pools
    assert (len(medium.train), len(medium.test), len(medium.ood)) == (100, 20, 20)
    assert all(2.5 <= t["velocity"] <= 3.0 for t in medium.ood)
    direction = MAML(**tiny(env="hyperrl/HalfCheetahDir-v0",
                            tasks={"n_train_tasks": None, "n_test_tasks": None})).pools
    assert [t["direction"] for t in direction.train] == [-1.0, 1.0]  # the fixed pool
    assert len(MAML(**tiny(tasks={"n_train_tasks": 7, "n_test_tasks": 3})).pools.train) == 7


def test_adapted_parameters_are_tensors_of_the_meta_parameters():
    m = _module()
    train, adv, _, _ = m.sample_meta_batch(m.data.collect())
    meta = m.meta_params()
    phi = m.adapt(meta, train[0], adv[0])
    assert all(p.grad_fn is not None for p in phi.values())
    with torch.no_grad():  # the module's parameters are untouched by the inner step
        assert all(v is p for v, p in zip(meta.values(), m.policy.parameters()))


# ---------------------------------------------------------------------------------------------- training
def _fit(tmp_path, steps, module=None, ckpt_path=None, callbacks=(), **overrides):
    from conftest import make_trainer

    m = module or MAML(**tiny(**overrides))
    trainer = make_trainer(tmp_path, steps, callbacks=callbacks)
    trainer.fit(m, ckpt_path=ckpt_path)
    return m, trainer


def test_one_meta_update_per_training_step_logs_and_evaluates(tmp_path):
    m, trainer = _fit(tmp_path, 2)
    assert trainer.global_step == 2
    assert m.frames == 2 * 2 * (2 * 2) * 100  # 2 updates x 2 tasks x (2 train + 2 valid episodes) x 100 steps
    metrics = m.evaluate()
    assert set(metrics) == {"eval/train_before_return", "eval/train_after_return", "eval/test_before_return",
                            "eval/test_after_return", "eval/test_improvement"}
    assert metrics == m.evaluate()  # evaluation noise is reseeded: same numbers every time
    logged = trainer.logged_metrics
    assert {"train/kl", "train/ls_accepted", "train/before_return", "train/after_return"} <= set(logged)


def test_ood_split_is_evaluated():
    m = MAML(**tiny(env="hyperrl/HalfCheetahVel-v0", tasks={"split": "medium", "n_test_tasks": 1}))
    assert set(m.eval_pools()) == {"train", "test", "ood"} and m.pools.ood


def test_seeded_runs_are_identical_and_resume_is_exact(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    full, _ = _fit(tmp_path / "a", 2)
    again, _ = _fit(tmp_path / "b", 2)
    for p, q in zip(full.parameters(), again.parameters()):
        assert torch.equal(p, q)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)
    _fit(tmp_path / "c", 1, callbacks=[ckpt])
    path = sorted((tmp_path / "ckpt").glob("*.ckpt"))[0]
    resumed, trainer = _fit(tmp_path / "d", 2, ckpt_path=str(path))
    assert trainer.global_step == 2
    for p, q in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_context_maml_has_no_inner_step(tmp_path):
    m, trainer = _fit(tmp_path, 1, module=ContextMAML(**tiny(policy="context_mlp")))
    assert m.adaptation.adaptation_steps == 0 and m.eval_adaptation_steps == 1
    assert m.frames == 2 * 2 * 100  # train episodes only: no validation rollout
    assert trainer.global_step == 1


def test_inner_learning_rate_defaults_per_policy():
    assert MAML(**TINY).fast_lr == 0.1
    assert MAML(**tiny(policy=POLICY.with_settings("hyper", TINY_HYPER))).fast_lr == 5e-5
    assert MAML(**tiny(adaptation={"fast_lr": 0.3})).fast_lr == 0.3


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"policy": "resnet"}, "unknown policy 'resnet'"),
        ({"adaptation": {"adaptation_steps": -1}}, "adaptation.adaptation_steps=-1"),
        ({"optim": {"gamma": 1.5}}, "optim.gamma=1.5"),
        ({"optim": {"ls_ratio": 1.0}}, "optim.ls_ratio=1.0"),
        ({"optim": {"max_kl": 0}}, "optim.max_kl=0"),
        ({"sampling": {"meta_batch_size": 0}}, "sampling.meta_batch_size=0"),
        ({"optim": {"cg_damping": -1.0}}, "optim.cg_damping=-1.0"),
        ({"policy": {"class_path": "MLPPolicy", "init_args": {"distribution": "tanh_normal"}}},
         "unknown option 'distribution' for policy 'MLPPolicy'"),
        ({"env": "Pendulum-v1"}, "Pendulum-v1"),
        ({"adaptation": {"fast_lr": -0.1}}, "adaptation.fast_lr=-0.1"),
        ({"optim": {"post_adaptation_baseline": "post"}},
         "optim.post_adaptation_baseline='post' is not allowed: expected one of pre"),
        ({"optim": {"max_kl": float("inf")}}, "optim.max_kl=inf is not allowed: expected a finite positive number"),
        ({"optim": {"max_kl": float("nan")}}, "optim.max_kl=nan is not allowed"),
        ({"optim": {"max_kl": -0.01}}, "optim.max_kl=-0.01 is not allowed"),
        ({"optim": {"baseline_reg": float("inf")}}, "optim.baseline_reg=inf is not allowed"),
        ({"adaptation": {"fast_lr": float("inf")}}, "adaptation.fast_lr=inf is not allowed"),
        ({"optim": {"cg_damping": float("inf")}}, "optim.cg_damping=inf is not allowed: expected a finite number >= 0"),
        ({"optim": {"cg_damping": float("nan")}}, "optim.cg_damping=nan is not allowed"),
        ({"optim": {"ls_ratio": float("nan")}}, "optim.ls_ratio=nan is not allowed"),
        ({"optim": {"cg_iterations": 0}}, "optim.cg_iterations=0 is not allowed"),
        ({"optim": {"ls_max_steps": 2.5}}, "optim.ls_max_steps=2.5 is not allowed"),
        ({"compile": "yes"}, "compile='yes' is not allowed: expected true or false"),
        # the pool sizes are named as the user sets them
        ({"tasks": {"n_train_tasks": 0}}, "n_train_tasks=0 is not allowed"),
        ({"tasks": {"n_test_tasks": -3}}, "n_test_tasks=-3 is not allowed"),
        ({"tasks": {"n_test_tasks": 2.5}}, "n_test_tasks=2.5 is not allowed"),
        ({"tasks": {"n_ood_tasks": 5}}, "n_ood_tasks=5 is not allowed"),
        ({"env": "hyperrl/HalfCheetahVel-v0", "tasks": {"n_train_tasks": 1}}, "n_train_tasks >= 2"),
        ({"env": "hyperrl/HalfCheetahDir-v0", "tasks": {"n_train_tasks": 3}}, "n_train_tasks=3 is not allowed"),
        ({"tasks": {"task_seed": -1}}, "tasks.task_seed=-1 is not allowed"),
    ],
)
def test_bad_settings_raise_one_line_configuration_errors(overrides, words):
    with pytest.raises(ConfigurationError) as info:
        MAML(**tiny(**overrides))
    assert words in str(info.value) and "\n" not in str(info.value)


def test_context_maml_refuses_an_inner_step():
    with pytest.raises(ConfigurationError, match="adaptation.adaptation_steps=1 is not allowed for ContextMAML"):
        ContextMAML(**tiny(adaptation={"adaptation_steps": 1}))


# ---------------------------------------------------------------------------------------------- settings groups
def test_a_group_given_as_a_mapping_keeps_the_algorithm_s_other_defaults():
    """``adaptation={"fast_lr": 0.1}`` changes that field only: ContextMAML keeps its own adaptation_steps 0, MAML
    its 1; a group left out is the algorithm's default group; the dataclass itself is taken as it is."""
    from hyperrl.algos import Adaptation, Sampling

    context = ContextMAML(**tiny(policy="context_mlp", adaptation={"fast_lr": 0.1}))
    assert context.adaptation == Adaptation(adaptation_steps=0, fast_lr=0.1, first_order=False)
    assert context.adaptation == dataclasses.replace(ContextMAML(**tiny(policy="context_mlp")).adaptation, fast_lr=0.1)
    assert context.hparams["adaptation"] == {"adaptation_steps": 0, "fast_lr": 0.1, "first_order": False}
    maml = MAML(**tiny(adaptation={"fast_lr": 0.3}))
    assert maml.adaptation == dataclasses.replace(MAML(**TINY).adaptation, fast_lr=0.3)
    assert maml.adaptation.adaptation_steps == 1 and maml.fast_lr == 0.3
    defaults = {k: v for k, v in TINY.items() if k not in GROUPS}
    sampled = MAML(**defaults, tasks={"n_train_tasks": 6, "n_test_tasks": 2}, sampling={"meta_batch_size": 3})
    assert sampled.sampling == Sampling(meta_batch_size=3, fast_batch_size=Sampling().fast_batch_size)
    assert sampled.optim == MAML(**defaults, tasks={"n_train_tasks": 6, "n_test_tasks": 2}).optim
    assert sampled.hparams["sampling"] == dataclasses.asdict(sampled.sampling)
    given = Adaptation(adaptation_steps=2, fast_lr=0.05, first_order=True)
    assert MAML(**tiny(adaptation=given)).adaptation == given


@pytest.mark.parametrize(
    "cls, group, key",
    [(MAML, "sampling", "batch_size"), (MAML, "adaptation", "steps"), (MAML, "optim", "meta_batch_size"),
     (MAML, "tasks", "n_tasks"), (MAML, "evaluation", "eval_train_tasks"), (ContextMAML, "adaptation", "lr")],
)
def test_an_unknown_key_in_a_group_mapping_is_refused_in_one_line_naming_the_group_and_its_fields(cls, group, key):
    with pytest.raises(ConfigurationError) as info:
        cls(**tiny(**{group: {key: 1}}))
    message = str(info.value)
    assert "\n" not in message and f"{group}.{key}" in message, message
    allowed = [f.name for f in dataclasses.fields(cls.GROUPS[group])]
    assert key not in allowed and all(name in message for name in allowed), message


@pytest.mark.parametrize("cls, policy", [(MAML, None), (ContextMAML, "context_mlp")])
def test_flat_hparams_of_an_older_checkpoint_rebuild_the_same_model(cls, policy, tmp_path):
    """Hyperparameters saved before the settings were grouped (every setting top-level) are read by
    ``current_hparams`` into the groups: the rebuilt model has the original's groups and takes its weights; the
    policy-gradient analysis loads such a checkpoint too."""
    from hyperrl.analysis.pg_variance import load_module

    overrides = {"policy": policy} if policy else {"adaptation": {"first_order": True, "fast_lr": 0.2}}
    module = cls(**tiny(**overrides, tasks={"task_seed": 2}, optim={"gamma": 0.9, "max_kl": 0.02}, seed=3))
    saved = dict(module.hparams)
    flat = {k: v for k, v in saved.items() if k not in cls.GROUPS}
    for group in cls.GROUPS:
        flat.update(saved[group])
    assert not set(cls.GROUPS) & set(flat) and flat["adaptation_steps"] == module.adaptation.adaptation_steps
    current = cls.current_hparams(flat)
    assert current == saved
    rebuilt = cls(**current)
    for group in cls.GROUPS:
        assert getattr(rebuilt, group) == getattr(module, group), group
    assert rebuilt.fast_lr == module.fast_lr and rebuilt.optim.gamma == 0.9 and rebuilt.tasks.task_seed == 2
    rebuilt.load_state_dict(module.state_dict())

    path = tmp_path / "old.ckpt"
    torch.save({"hyper_parameters": flat, "state_dict": module.state_dict(), "global_step": 5}, path)
    loaded = load_module(str(path))
    for group in cls.GROUPS:
        assert getattr(loaded, group) == getattr(module, group), group
    assert loaded.step == 5 and all(torch.equal(p, q) for p, q in zip(loaded.parameters(), module.parameters()))


def test_paper_maml_configs_take_the_authors_pools_and_baseline_and_the_cpu_demos_keep_theirs():
    import pathlib

    import yaml

    conf = pathlib.Path(__file__).resolve().parents[1] / "conf" / "meta"
    paper = [p for p in sorted(conf.glob("*maml_*.yaml")) if p.name != "maml_quickstart.yaml"]
    assert len(paper) >= 20
    for path in paper:
        model = yaml.safe_load(path.read_text())["model"]["init_args"]
        assert not {"n_train_tasks", "n_test_tasks", "post_adaptation_baseline"} & set(model), path.name
        assert not {"n_train_tasks", "n_test_tasks"} & set(model.get("tasks") or {}), path.name
        assert "post_adaptation_baseline" not in (model.get("optim") or {}), path.name
    for name in ("maml_quickstart", "pg_variance_navigation_hyper", "pg_variance_navigation_context_mlp"):
        model = yaml.safe_load((conf / f"{name}.yaml").read_text())["model"]["init_args"]
        assert (model["tasks"]["n_train_tasks"], model["tasks"]["n_test_tasks"]) == (80, 20), name
    assert yaml.safe_load((conf / "maml_quickstart.yaml").read_text())["model"]["init_args"]["optim"][
        "post_adaptation_baseline"] == "refit"


@pytest.mark.parametrize(
    "option, value, words",
    [
        ("optim.max_kl", "inf", "max_kl=inf is not allowed: expected a finite positive number"),
        ("tasks.n_test_tasks", "0", "n_test_tasks=0 is not allowed"),
        ("cudagraphs", "true", "cudagraphs=True is not allowed for MAML"),
    ],
)
def test_the_cli_refuses_bad_maml_settings_in_one_line(option, value, words, capsys, tmp_path, monkeypatch):
    import pathlib

    from conftest import run_entry

    from hyperrl.cli import main

    monkeypatch.chdir(tmp_path)
    config = pathlib.Path(__file__).resolve().parents[1] / "conf" / "meta" / "maml_quickstart.yaml"
    code, _, err = run_entry(main, ["fit", "--config", str(config), f"--model.init_args.{option}", value,
                                    "--trainer.max_steps", "1"], capsys)
    lines = [line for line in err.splitlines() if line.startswith("hyperrl:")]
    assert code == 2 and len(lines) == 1 and words in lines[0], err
    assert "Traceback" not in err and not list(tmp_path.rglob("*.ckpt"))
