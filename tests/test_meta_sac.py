"""MetaSAC: PEARL's SAC over a task family with the oracle context (schedule, losses, resume, errors)."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import pytest
import torch
from conftest import make_trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from hyperrl.algos import PEARL, SAC, TD3, MetaSAC, MetaSACEvaluation, MetaSACReplay
from hyperrl.errors import ConfigurationError, NonFiniteLossError
from hyperrl.nn import META_CRITIC, META_VALUE, POLICY

TINY = {"primary_widths": [8, 8, 16], "blocks_per_stage": 1, "dynamic_hidden": [8]}

#: the settings groups the helper below merges onto its own
GROUPS = ("tasks", "replay", "optim", "evaluation")


def meta_kwargs(**overrides):
    """The tiny MetaSAC's settings; a group given in OVERRIDES (``replay={...}``) is merged onto this one's."""
    kwargs = dict(
        env="hyperrl/Navigation2D-v0",
        tasks={"n_train_tasks": 4, "n_test_tasks": 2},
        policy=POLICY.with_settings("hyper", TINY),
        critic=META_CRITIC.with_settings("hyper", TINY),
        value=META_VALUE.with_settings("hyper", TINY),
        replay={
            "meta_batch_size": 3,
            "batch_size": 8,
            "buffer_size": 500,
            "initial_steps": 15,
            "tasks_per_iteration": 2,
            "steps_per_task": 10,
            "updates_per_iteration": 4,
        },
        optim={"reward_scale": 100.0},
    )
    for key, value in overrides.items():
        kwargs[key] = {**kwargs.get(key, {}), **value} if key in GROUPS and isinstance(value, dict) else value
    return kwargs


def flat_params(module):
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def test_collection_schedule_per_task_buffers_and_evaluation_metrics(tmp_path):
    """Iteration 0 fills every train task's buffer; each later iteration adds steps_per_task to tasks_per_iteration
    tasks; an update sees meta_batch_size tasks x batch_size transitions with their own task's context."""
    module = MetaSAC(**meta_kwargs())
    seen = {}

    class Peek(Callback):  # record one training batch and the buffers at the end
        def on_train_batch_end(self, trainer, pl_module, *args):
            if "batch" not in seen:
                seen["batch"] = pl_module.data.sample()
            seen["sizes"] = [len(b) for b in pl_module.data.buffers]

    trainer = make_trainer(tmp_path, max_steps=9, val_check_interval=9, callbacks=[Peek()])
    trainer.fit(module)
    # updates 0, 4, 8 start iterations: 4 tasks x 15, then 2 x (2 tasks x 10)
    assert sum(seen["sizes"]) == 4 * 15 + 2 * 2 * 10 == module.frames
    assert all(size >= 15 for size in seen["sizes"])
    batch = seen["batch"]
    assert batch.batch_size == torch.Size([3, 8])
    contexts = batch.get("context")
    assert torch.equal(contexts, contexts[:, :1].expand_as(contexts)), "one task per row of the meta-batch"
    train_contexts = torch.as_tensor(module.pools.contexts("train"))
    assert all(any(torch.allclose(c[0], t) for t in train_contexts) for c in contexts)
    metrics = trainer.callback_metrics
    assert {"eval/train_tasks_return", "eval/test_tasks_return", "train/critic_loss", "train/value_loss"} <= set(metrics)
    assert -100.5 <= float(metrics["eval/test_tasks_return"]) <= 0.0
    per_task = json.loads((tmp_path / "run" / "v" / "eval_tasks.json").read_text())
    assert per_task["step"] == 9 and len(per_task["returns"]["test"]) == 2 and len(per_task["returns"]["train"]) == 2
    assert per_task["returns"]["test"][0]["task"] == module.pools.test[0]


def test_evaluation_side_by_side_equals_one_task_at_a_time():
    """Deterministic actions with the oracle context: the evaluated tasks stepped in the rows of one env give the
    returns each gets in an env of its own."""
    module = MetaSAC(**meta_kwargs(evaluation={"eval_episodes": 2}))
    together = module.evaluate_pools()
    assert module._eval_env().batch_size == (2,)  # the larger pool's size
    module._envs["eval"] = module._task_env(None, 1)
    assert together == module.evaluate_pools()
    assert len(set(together["test"]["return"])) == 2, "each row acts on its own task"


def test_collection_side_by_side_fills_the_same_buffers_as_one_task_at_a_time():
    """Collected side by side or one task at a time, each task's buffer gets the same number of transitions, from
    its own task, its episodes starting at the reset state."""
    sizes = {}
    for rows in (None, 1):
        module = MetaSAC(**meta_kwargs())
        if rows is not None:
            module._collection_rows = lambda: rows
        data = module.make_data()
        assert data.rows == (rows or 2)
        torch.manual_seed(0)
        for _ in range(3):
            data.collect()
        sizes[rows] = [len(b) for b in data.buffers]
        contexts = torch.as_tensor(module.pools.contexts("train"))
        for i, buffer in enumerate(data.buffers):
            stored = buffer.storage._storage.get("context")[: len(buffer)]
            assert torch.allclose(stored, contexts[i].expand_as(stored))
        data.shutdown()
    assert sizes[None] == sizes[1]


def test_each_loss_term_moves_only_its_own_network():
    """The one backward pass of the summed loss gives each network exactly the gradient of its own term: Q from L_Q,
    V from L_V, the policy from L_pi (+ its regulariser); the Q target reads the target V only."""
    module = MetaSAC(**meta_kwargs())
    torch.manual_seed(0)
    t, b = 3, 8
    from tensordict import TensorDict

    batch = TensorDict(
        {
            "observation": torch.randn(t, b, 2),
            "action": torch.rand(t, b, 2) * 0.2 - 0.1,
            "context": torch.randn(t, 1, 2).expand(t, b, 2),
            "next": {
                "observation": torch.randn(t, b, 2),
                "reward": -torch.rand(t, b, 1),
                "terminated": torch.rand(t, b, 1) < 0.2,
                "done": torch.zeros(t, b, 1, dtype=torch.bool),
                "context": torch.randn(t, 1, 2).expand(t, b, 2),
            },
        },
        batch_size=[t, b],
    )
    nets = {"critic_loss": module.critics, "value_loss": module.value, "policy_loss": module.policy}

    def grads(term):
        module.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same policy samples for every term
        losses = module.losses(batch)
        value = losses[term] if term != "policy_loss" else losses["policy_loss"] + losses["policy_reg"]
        value.backward()
        return {name: [None if p.grad is None else p.grad.clone() for p in net.parameters()]
                for name, net in nets.items()}

    total = grads("loss")
    for term, net_name in (("critic_loss", "critic_loss"), ("value_loss", "value_loss"), ("policy_loss", "policy_loss")):
        alone = grads(term)
        for name in nets:
            for g_total, g_alone in zip(total[name], alone[name]):
                if name == net_name:
                    assert g_alone is not None and torch.allclose(g_total, g_alone, atol=1e-6)
                else:
                    assert g_alone is None or not g_alone.any(), f"{term} moved {name}"
    assert all(p.grad is None for p in module.target_value.parameters())


def test_the_policy_primary_network_runs_once_per_task():
    module = MetaSAC(**meta_kwargs())
    rows = []
    module.policy.hyper.primary.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[:-1].numel()))
    from tensordict import TensorDict

    batch = TensorDict(
        {"observation": torch.randn(3, 8, 2), "action": torch.zeros(3, 8, 2), "context": torch.randn(3, 8, 2),
         "next": {"observation": torch.randn(3, 8, 2), "reward": torch.zeros(3, 8, 1),
                  "terminated": torch.zeros(3, 8, 1, dtype=torch.bool)}},
        batch_size=[3, 8],
    )
    module.losses(batch)
    assert rows == [3]


def test_interrupted_and_resumed_meta_run_equals_an_uninterrupted_one(tmp_path):
    """Stop mid-iteration, resume: every task's buffer, the task-sampling RNG, the env and the networks continue
    exactly (bit-identical parameters at the end)."""
    straight = MetaSAC(**meta_kwargs())
    make_trainer(tmp_path / "straight", max_steps=14).fit(straight)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=6, save_top_k=-1)
    make_trainer(tmp_path / "a", max_steps=6, callbacks=[ckpt]).fit(MetaSAC(**meta_kwargs()))
    resumed = MetaSAC(**meta_kwargs(seed=5))  # another init: everything must come from the checkpoint
    make_trainer(tmp_path / "b", max_steps=14).fit(resumed, ckpt_path=tmp_path / "ckpt" / "epoch=0-step=6.ckpt")
    assert torch.equal(flat_params(resumed), flat_params(straight))
    assert resumed.frames == straight.frames and int(resumed.update_count) == 14


def test_cosine_decay_closed_form():
    from hyperrl.algos.base import cosine_decay

    assert cosine_decay(0, 10, 30, 0.1) == 1.0 and cosine_decay(10, 10, 30, 0.1) == 1.0
    assert cosine_decay(20, 10, 30, 0.1) == pytest.approx(0.55)  # half way: the mean of 1 and the final factor
    assert cosine_decay(15, 10, 30, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine_decay(30, 10, 30, 0.1) == 0.1 and cosine_decay(99, 10, 30, 0.1) == 0.1


def test_learning_rates_decay_with_the_update_count_and_resume_exactly(tmp_path):
    """Every param group's rate follows the cosine factor of the update it steps; a run interrupted inside the
    decay window and resumed ends bit-identical to an uninterrupted one, on the same rates."""
    from hyperrl.algos.base import cosine_decay

    decay = {"optim": {"lr_decay_updates": [3, 11], "lr_decay_final": 0.2}}
    seen = []

    class Rates(Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            seen.append([g["lr"] / g["base_lr"] for g in pl_module.optimizer.param_groups])

    straight = MetaSAC(**meta_kwargs(**decay))
    make_trainer(tmp_path / "straight", max_steps=14, callbacks=[Rates()]).fit(straight)
    for update, factors in enumerate(seen):
        assert factors == pytest.approx([cosine_decay(update, 3, 11, 0.2)] * len(factors))
    assert seen[-1][0] == pytest.approx(0.2) and seen[2][0] == 1.0 and 0.2 < seen[7][0] < 1.0
    bases = {g["name"]: g["base_lr"] for g in straight.optimizer.param_groups}
    assert bases == {g["name"]: g["lr"] for g in MetaSAC(**meta_kwargs()).param_groups()}

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=6, save_top_k=-1)
    make_trainer(tmp_path / "a", max_steps=6, callbacks=[ckpt]).fit(MetaSAC(**meta_kwargs(**decay)))
    resumed = MetaSAC(**meta_kwargs(seed=5, **decay))
    make_trainer(tmp_path / "b", max_steps=14).fit(resumed, ckpt_path=tmp_path / "ckpt" / "epoch=0-step=6.ckpt")
    assert torch.equal(flat_params(resumed), flat_params(straight))
    constant = MetaSAC(**meta_kwargs())
    make_trainer(tmp_path / "constant", max_steps=14).fit(constant)
    assert not torch.equal(flat_params(constant), flat_params(straight)), "the decay changes the run"


def test_seeded_meta_runs_are_reproducible(tmp_path):
    results = []
    for i, seed in enumerate((2, 2, 3)):
        module = MetaSAC(**meta_kwargs(seed=seed))
        make_trainer(tmp_path / str(i), max_steps=6).fit(module)
        results.append(flat_params(module))
    assert torch.equal(results[0], results[1]) and not torch.equal(results[0], results[2])


def test_a_non_finite_loss_stops_the_meta_run(tmp_path, monkeypatch):
    module = MetaSAC(**meta_kwargs())
    real = module.losses

    def poisoned(batch):
        losses = real(batch)
        losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(module, "losses", poisoned)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at training step 0"):
        make_trainer(tmp_path, max_steps=3).fit(module)


def test_mlp_networks_and_the_learning_rate_rule():
    hyper = MetaSAC(**meta_kwargs())
    assert hyper.learning_rates() == {"critic": 5e-5, "policy": 1e-4, "context": 3e-4}
    mlp = MetaSAC(**meta_kwargs(policy=POLICY.with_settings("context_mlp", hidden=[8]),
                                critic=META_CRITIC.with_settings("mlp", hidden=[8]),
                                value=META_VALUE.with_settings("mlp", hidden=[8])))
    assert mlp.learning_rates() == {"critic": 3e-4, "policy": 3e-4, "context": 3e-4}
    groups = {g["name"]: g["lr"] for g in mlp.param_groups()}
    assert groups == {"critic": 3e-4, "value": 3e-4, "policy": 3e-4}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"env": "HalfCheetah-v5"}, "has no task API"),
        ({"env": "hyperrl/NoSuchTask-v0"}, "unknown environment id 'hyperrl/NoSuchTask-v0'"),
        ({"tasks": {"n_train_tasks": 0}}, "n_train_tasks=0 is not allowed"),
        ({"tasks": {"n_test_tasks": -3}}, "n_test_tasks=-3 is not allowed"),
        ({"context_dim": 1}, "context_dim"),
        ({"context": "telepathy"}, "unknown context provider 'telepathy'; allowed: oracle"),
        ({"policy": "transformer"}, "unknown policy 'transformer'"),
        ({"critic": "nope"}, "unknown meta-critic 'nope'"),
        ({"replay": {"meta_batch_size": 0}}, "replay.meta_batch_size=0 is not allowed"),
        ({"replay": {"initial_steps": 0}}, "replay.initial_steps=0 is not allowed"),
        ({"tasks": {"split": "medium"}}, "split='medium' is not allowed"),
        ({"replay": {"batch_size": 1000}}, "replay.batch_size=1000 is not allowed: it must not exceed buffer_size=500"),
        ({"optim": {"lr_decay_updates": [5, 5]}},
         "optim.lr_decay_updates=[5, 5] is not allowed: expected null or [start, end]"),
        ({"optim": {"lr_decay_updates": [-1, 5]}}, "optim.lr_decay_updates=[-1, 5] is not allowed"),
        ({"optim": {"lr_decay_updates": 100}}, "optim.lr_decay_updates=100 is not allowed"),
        ({"optim": {"lr_decay_final": 1.5}}, "optim.lr_decay_final=1.5 is not allowed: expected a number in [0, 1]"),
    ],
)
def test_bad_meta_settings_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigurationError, match=re.escape(message)) as info:
        MetaSAC(**meta_kwargs(**overrides))
    assert "\n" not in str(info.value)


def test_plain_sac_refuses_a_task_family():
    with pytest.raises(ConfigurationError, match="task famil"):
        SAC(env="hyperrl/Navigation2D-v0")


@pytest.mark.parametrize(("option", "value", "needle"), [
    ("replay.meta_batch_size", "0", "replay.meta_batch_size=0 is not allowed: expected a positive integer"),
    ("optim.critic_lr", "0", "optim.critic_lr=0 is not allowed: expected a positive number"),
    ("optim.tau", "0", "optim.tau=0 is not allowed: expected a number in (0, 1]"),
])
def test_typed_settings_refused_by_the_cli_in_one_line_naming_the_value(option, value, needle, capsys, tmp_path):
    """Typed settings (jsonargparse's ``PositiveInt``, ``PositiveFloat | None``, ...) are checked by the CLI's parser:
    one line naming the setting and the value, exit 2."""
    from hyperrl.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", "conf/meta/quickstart.yaml", f"--model.init_args.{option}", value,
              "--trainer.max_steps", "1", "--trainer.default_root_dir", str(tmp_path)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hyperrl:")]
    assert exc.value.code == 2 and len(err) == 1 and needle in err[0], err


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"replay": {"meta_batch_size": 1.5}},
         "replay.meta_batch_size=1.5 is not allowed: expected a positive integer"),
        ({"optim": {"tau": 0.0}}, "optim.tau=0.0 is not allowed: expected a number in (0, 1]"),
        ({"optim": {"gamma": float("nan")}}, "optim.gamma=nan is not allowed: expected a number in [0, 1]"),
        ({"optim": {"critic_lr": 0}}, "optim.critic_lr=0 is not allowed: expected a positive number or null"),
        ({"optim": {"policy_std_reg": -1e-3}}, "optim.policy_std_reg=-0.001 is not allowed: expected a number >= 0"),
        ({"replay": {"steps_per_task": True}}, "replay.steps_per_task=True is not allowed: expected an integer >= 0"),
        ({"compile": "yes"}, "compile='yes' is not allowed: expected true or false"),
    ],
)
def test_typed_settings_refused_in_python_as_the_cli_refuses_them(overrides, message):
    """A module built in Python checks its typed settings (the annotations the CLI validates) in one line."""
    with pytest.raises(ConfigurationError, match=re.escape(message)) as info:
        MetaSAC(**meta_kwargs(**overrides))
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------- settings groups
def test_a_group_given_as_a_mapping_keeps_the_algorithm_s_other_defaults():
    """``replay={"batch_size": 8}`` changes that field only: the group's other fields keep the algorithm's defaults
    (TD3's own replay defaults, not SAC's); the dataclass itself is taken as it is; hparams hold the whole group."""
    plain = {k: v for k, v in meta_kwargs().items() if k not in GROUPS}
    default = MetaSAC(**plain, tasks={"n_train_tasks": 4, "n_test_tasks": 2})
    module = MetaSAC(**plain, tasks={"n_train_tasks": 4, "n_test_tasks": 2}, replay={"batch_size": 8})
    assert isinstance(module.replay, MetaSACReplay) and module.replay.batch_size == 8
    assert module.replay == dataclasses.replace(default.replay, batch_size=8)
    assert module.replay.buffer_size == default.replay.buffer_size == 1_000_000
    assert module.optim == default.optim and module.evaluation == default.evaluation
    assert module.tasks == dataclasses.replace(default.tasks, n_train_tasks=4, n_test_tasks=2)
    assert module.hparams["replay"] == dataclasses.asdict(module.replay)  # every field, as plain data
    given = MetaSACReplay(batch_size=4, buffer_size=100, steps_per_task=3)
    assert MetaSAC(**meta_kwargs(replay=given)).replay == given
    assert MetaSAC(**meta_kwargs(evaluation=MetaSACEvaluation(eval_episodes=3))).evaluation.eval_episodes == 3

    td3 = TD3(env="Pendulum-v1", critic="mlp", replay={"buffer_size": 5000}, optim={"gamma": 0.9})
    assert (td3.replay.batch_size, td3.replay.learning_starts, td3.replay.buffer_size) == (100, 1000, 5000)
    assert td3.optim.gamma == 0.9 and td3.optim.tau == TD3(env="Pendulum-v1", critic="mlp").optim.tau
    sac = SAC(env="Pendulum-v1", critic="mlp", replay={"buffer_size": 5000})
    assert (sac.replay.batch_size, sac.replay.learning_starts) == (256, 256)


@pytest.mark.parametrize(
    "cls, group, key",
    [
        (MetaSAC, "replay", "bogus"),
        (MetaSAC, "replay", "gamma"),  # an optim setting in the wrong group
        (MetaSAC, "optim", "batch_size"),
        (MetaSAC, "tasks", "n_tasks"),
        (MetaSAC, "evaluation", "num_evals"),  # PEARL's, not MetaSAC's
        (PEARL, "replay", "steps_per_task"),  # MetaSAC's, not PEARL's
        (PEARL, "evaluation", "eval_episodes"),
    ],
)
def test_an_unknown_key_in_a_group_mapping_is_refused_in_one_line_naming_the_group_and_its_fields(cls, group, key):
    from test_pearl import pearl_kwargs

    kwargs = meta_kwargs if cls is MetaSAC else pearl_kwargs
    with pytest.raises(ConfigurationError) as info:
        cls(**kwargs(**{group: {key: 1}}))
    message = str(info.value)
    assert "\n" not in message and f"{group}.{key}" in message, message
    allowed = [f.name for f in dataclasses.fields(cls.GROUPS[group])]
    assert all(name in message for name in allowed), message
    assert key not in allowed


def _flat(hparams, groups):
    """HPARAMS in the layout of files written before the settings were grouped: every group's fields top-level."""
    flat = {k: v for k, v in hparams.items() if k not in groups}
    for group in groups:
        flat.update(hparams[group])
    return flat


@pytest.mark.parametrize("cls", [MetaSAC, PEARL])
def test_flat_hparams_of_an_older_checkpoint_rebuild_the_same_model(cls, tmp_path):
    """Hyperparameters saved before the settings were grouped (every setting top-level) are read by
    ``current_hparams`` into the groups: the model rebuilt from them has the original's groups and loads its
    weights; a checkpoint file with them goes through the same reading."""
    from test_pearl import pearl_kwargs

    from hyperrl.runs import hyperparameters

    kwargs = meta_kwargs if cls is MetaSAC else pearl_kwargs
    module = cls(**kwargs(tasks={"task_seed": 3}, optim={"gamma": 0.9, "lr_decay_updates": [3, 11]}, seed=4,
                          replay={"buffer_size": 400}))
    saved = dict(module.hparams)
    flat = _flat(saved, tuple(cls.GROUPS))
    assert not set(cls.GROUPS) & set(flat) and flat["buffer_size"] == 400 and flat["gamma"] == 0.9
    current = cls.current_hparams(flat)
    assert current == saved
    rebuilt = cls(**current)
    for group in cls.GROUPS:
        assert getattr(rebuilt, group) == getattr(module, group), group
        assert type(getattr(rebuilt, group)) is type(getattr(module, group)), group
    assert rebuilt.optim.lr_decay == (3, 11) and rebuilt.tasks.task_seed == 3
    rebuilt.load_state_dict(module.state_dict())
    assert torch.equal(flat_params(rebuilt), flat_params(module))

    path = tmp_path / "old.ckpt"
    torch.save({"hyper_parameters": flat, "state_dict": module.state_dict()}, path)
    checkpoint = torch.load(path, weights_only=False)
    assert cls(**hyperparameters(checkpoint, cls)).replay == module.replay
