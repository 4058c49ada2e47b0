"""Choosing a network (hyperrl.nn.registry): a preset name or a class with its settings, in every form an algorithm
accepts, validated in one line, stored as plain data, and the form older checkpoints used read into today's."""

from __future__ import annotations

import functools

import pytest

from hyperrl.algos import MAML, SAC, MetaSAC
from hyperrl.errors import ConfigurationError
from hyperrl.nn import (
    CRITIC,
    META_CRITIC,
    POLICY,
    HyperPolicy,
    MLPCritic,
    MLPMetaQ,
    SAHyperCritic,
    make_critic,
)
from hyperrl.runs import hyperparameters

SMALL = {"primary_widths": [8, 8, 16], "blocks_per_stage": 1, "dynamic_hidden": [8]}
SMALL_SPEC = {"class_path": "hyperrl.nn.SAHyperCritic", "init_args": SMALL}
TINY_REPLAY = {"batch_size": 8, "buffer_size": 100, "warmup_frames": 10, "learning_starts": 10}


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "form",
    [
        SMALL_SPEC,
        {"class_path": "SAHyperCritic", "init_args": SMALL},  # a class exported by hyperrl.nn, short
        {"class_path": "hyperrl.nn.critics.SAHyperCritic", "init_args": SMALL},  # the module's path
        functools.partial(SAHyperCritic, **SMALL),
    ],
    ids=["exported", "short", "module", "partial"],
)
def test_every_form_of_a_class_with_settings_is_the_same_plain_spec_and_network(form):
    assert CRITIC.spec(form) == SMALL_SPEC
    built = make_critic(form, 17, 6)
    assert isinstance(built, SAHyperCritic)
    assert n_params(built) == n_params(make_critic("sa_hyper", 17, 6, **SMALL))


def test_a_preset_name_is_kept_as_a_name_and_builds_the_papers_settings():
    assert CRITIC.spec("mlp_large") == "mlp_large" and CRITIC.label("mlp_large") == "mlp_large"
    assert [m.out_features for m in make_critic("mlp_large", 17, 6).modules() if hasattr(m, "out_features")] == [
        2900, 2900, 1]
    # a class alone takes the class's own defaults; the label of a class form is the class
    assert CRITIC.spec(MLPCritic) == {"class_path": "hyperrl.nn.MLPCritic", "init_args": {}}
    assert CRITIC.label(SMALL_SPEC) == "SAHyperCritic"


def test_with_settings_changes_a_presets_settings_and_keeps_its_others():
    spec = CRITIC.with_settings("deep_resnet", blocks=2)
    assert spec == {"class_path": "hyperrl.nn.DeepResNetCritic", "init_args": {"width": 256, "blocks": 2}}
    assert CRITIC.with_settings("mlp") == "mlp"
    assert META_CRITIC.with_settings("mlp", {"hidden": [8]})["class_path"].endswith("MLPMetaQ")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("nope", "unknown critic 'nope'; allowed: one of sa_hyper"),
        ({"class_path": "builtins.dict"}, "critic class_path 'builtins.dict' is not allowed: expected a subclass of QNetwork"),
        ({"class_path": "HyperPolicy"}, "expected a subclass of QNetwork"),  # a network of another kind
        ({"class_path": "MLPCritic", "init_args": {"hiden": [8]}}, "unknown option 'hiden' for critic 'MLPCritic'; allowed: hidden"),
        ({"class_path": "MLPCritic", "settings": {}}, "critic 'settings' is not allowed"),
        ({"class_path": "MLPCritic", "init_args": [8]}, "init_args=[8] is not allowed: expected a mapping"),
        (functools.partial(MLPCritic, 17), "is not allowed: expected one of sa_hyper"),  # sizes are not settings
        (3, "critic=3 is not allowed"),
    ],
)
def test_a_bad_network_choice_is_one_line(value, words):
    with pytest.raises(ConfigurationError) as info:
        CRITIC.spec(value)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_an_algorithm_stores_its_networks_as_plain_data():
    """Given a class or a partial in Python, the hyperparameters (and so checkpoints and hparams.yaml) hold the
    class_path/init_args form, which rebuilds the same network."""
    module = SAC(env="InvertedPendulum-v5", critic=functools.partial(SAHyperCritic, **SMALL), actor_hidden=[8],
                 replay=TINY_REPLAY)
    assert module.hparams.critic == SMALL_SPEC and module.hparams_initial.critic == SMALL_SPEC
    again = SAC(**{k: v for k, v in module.hparams.items()})
    assert n_params(again.critics) == n_params(module.critics)


def test_an_algorithm_owns_the_policys_distribution_and_metasacs_tanh_term():
    """MAML always builds a Normal policy, MetaSAC a tanh-Normal one in [-1, 1] with its own ``tanh_log_prob``: a
    policy's own value for those must be left null or agree, else one line names both."""
    maml = MAML(env="hyperrl/Navigation2D-v0", policy=POLICY.with_settings("mlp", hidden=[8]),
                sampling={"meta_batch_size": 2, "fast_batch_size": 1}, tasks={"n_train_tasks": 2, "n_test_tasks": 1})
    assert maml.policy.distribution == "normal"
    meta = dict(env="hyperrl/Navigation2D-v0", tasks={"n_train_tasks": 2, "n_test_tasks": 1},
                replay={"batch_size": 4, "buffer_size": 10}, critic=META_CRITIC.with_settings("mlp", hidden=[8]),
                value="mlp")
    hyper = {"class_path": "HyperPolicy", "init_args": SMALL}
    assert MetaSAC(policy=hyper, tanh_log_prob="pearl", **meta).policy.tanh_log_prob == "pearl"
    agreeing = {"class_path": "HyperPolicy", "init_args": {**SMALL, "tanh_log_prob": "pearl", "low": -1.0}}
    assert isinstance(MetaSAC(policy=agreeing, tanh_log_prob="pearl", **meta).policy, HyperPolicy)
    with pytest.raises(ConfigurationError, match=r"policy init_args tanh_log_prob='pearl' is not allowed: the "
                                                 r"algorithm sets tanh_log_prob='exact'"):
        MetaSAC(policy=agreeing, **meta)
    with pytest.raises(ConfigurationError, match="policy init_args high=2.0 is not allowed"):
        MetaSAC(policy={"class_path": "HyperPolicy", "init_args": {**SMALL, "high": 2.0}}, **meta)
    with pytest.raises(ConfigurationError, match="unknown option 'distribution' for policy 'HyperPolicy'"):
        MAML(env="hyperrl/Navigation2D-v0", policy=functools.partial(HyperPolicy, distribution="tanh_normal"))


@pytest.mark.parametrize(
    ("algorithm", "saved", "expected"),
    [
        ("hyperrl.algos.SAC", {"critic": "sa_hyper", "critic_kwargs": SMALL}, {"critic": SMALL_SPEC}),
        ("hyperrl.algos.TD3", {"critic": "mlp", "critic_kwargs": None}, {"critic": "mlp"}),
        ("hyperrl.algos.SAC", {"critic": "mlp_small", "critic_kwargs": {}}, {"critic": "mlp_small"}),
        ("hyperrl.algos.MetaSAC", {"policy": "hyper", "policy_kwargs": SMALL, "critic": "mlp",
                                   "critic_kwargs": {"hidden": [8]}, "value": "mlp", "value_kwargs": None},
         {"policy": {"class_path": "hyperrl.nn.HyperPolicy", "init_args": SMALL},
          "critic": {"class_path": "hyperrl.nn.MLPMetaQ", "init_args": {"hidden": [8]}}, "value": "mlp"}),
        ("hyperrl.algos.MAML", {"policy": "mlp", "policy_kwargs": {"hidden": [8]}},
         {"policy": {"class_path": "hyperrl.nn.MLPPolicy", "init_args": {"hidden": [8]}}}),
        # settings the algorithm now decides: MAML's distribution (it was always normal), and MetaSAC's tanh term,
        # which a policy_kwargs value used to override
        ("hyperrl.algos.MAML", {"policy": "mlp", "policy_kwargs": {"distribution": "normal"}}, {"policy": "mlp"}),
        ("hyperrl.algos.MetaSAC", {"tanh_log_prob": "exact", "policy": "hyper", "policy_kwargs": {"tanh_log_prob": "pearl"}},
         {"tanh_log_prob": "pearl", "policy": "hyper"}),
    ],
)
def test_an_older_checkpoints_network_kwargs_are_read_as_class_path_settings(algorithm, saved, expected):
    read = hyperparameters({"hyper_parameters": {"_class_path": algorithm, **saved}})
    assert read == {"_class_path": algorithm, **expected}
    assert not any(key.endswith("_kwargs") for key in read)


def test_the_meta_critic_kind_refuses_a_critic_of_the_off_policy_kind():
    with pytest.raises(ConfigurationError, match="expected a subclass of MetaQNetwork"):
        META_CRITIC.spec({"class_path": "MLPCritic"})
    assert isinstance(META_CRITIC.build({"class_path": "MLPMetaQ", "init_args": {"hidden": [4]}}, 3, 2, 1), MLPMetaQ)


def test_an_older_analysis_snapshot_with_critic_kwargs_still_loads(tmp_path):
    """Analysis snapshots carry the constructor's hyperparameters: one written before networks took
    class_path/init_args (``critic: sa_hyper`` + ``critic_kwargs``) rebuilds the same critic and loads its weights."""
    import torch

    from hyperrl.analysis import load_snapshot
    from hyperrl.analysis.snapshots import SNAPSHOT_FORMAT

    settings = dict(env="InvertedPendulum-v5", actor_hidden=[8])
    module = SAC(critic=CRITIC.with_settings("sa_hyper", SMALL), replay=TINY_REPLAY, **settings)
    path = tmp_path / "snapshot.pt"
    # written before the settings were grouped, too: the replay settings flat
    torch.save({"format": SNAPSHOT_FORMAT, "class_path": "hyperrl.algos.SAC", "state_dict": module.state_dict(),
                "hparams": {**settings, **TINY_REPLAY, "critic": "sa_hyper", "critic_kwargs": SMALL}}, path)
    loaded, _ = load_snapshot(str(path))
    assert loaded.hparams.critic == SMALL_SPEC and loaded.replay.buffer_size == 100
    assert all(torch.equal(a, b) for a, b in zip(loaded.critics.parameters(), module.critics.parameters()))


def test_settings_include_the_class_defaults_so_equal_networks_compare_equal():
    assert CRITIC.settings("mlp") == CRITIC.settings({"class_path": "MLPCritic", "init_args": {"hidden": [256, 256]}})
    assert CRITIC.settings("sa_hyper")[1]["primary_widths"] == [256, 512, 1024]  # HyperNetwork's, forwarded


def test_a_checkpoint_of_other_network_sizes_is_refused_naming_the_settings_that_differ():
    from hyperrl.runs import check_checkpoint_fits

    settings = dict(env="InvertedPendulum-v5", actor_hidden=[8], replay=TINY_REPLAY)
    saved = SAC(critic=CRITIC.with_settings("sa_hyper", SMALL), **settings)
    other = SAC(critic=CRITIC.with_settings("sa_hyper", {**SMALL, "dynamic_hidden": [16]}), **settings)
    checkpoint = {"state_dict": saved.state_dict(), "hyper_parameters": {"_class_path": "hyperrl.algos.SAC",
                                                                        **saved.hparams}}
    with pytest.raises(ConfigurationError, match=r"critic dynamic_hidden=\[8\] there, \[16\] here"):
        check_checkpoint_fits("x.ckpt", checkpoint, other)
    check_checkpoint_fits("x.ckpt", checkpoint, SAC(critic=dict(SMALL_SPEC), **settings))  # the same network
    # saved outside the CLI (no class path) in the older form (flat settings too): read as the model's algorithm
    # reads it
    flat = {"env": "InvertedPendulum-v5", "actor_hidden": [8], **TINY_REPLAY}
    older = {"state_dict": saved.state_dict(), "hyper_parameters": {**flat, "critic": "sa_hyper", "critic_kwargs": SMALL}}
    with pytest.raises(ConfigurationError) as info:
        check_checkpoint_fits("x.ckpt", older, other)
    assert "critic dynamic_hidden=[8] there, [16] here" in str(info.value) and "another algorithm" not in str(info.value)
