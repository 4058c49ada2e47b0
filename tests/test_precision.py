"""Every algorithm trains under every supported precision: fp32 and bf16 autocast (``bf16-mixed``), on CPU and, where
one is present, on a GPU; and no float64 tensor ever reaches a network (the data sources hand the networks float32
observations and contexts, whatever the simulator computes in)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_trainer, tiny_kwargs
from torch import nn

from hyperrl.algos import MAML, SAC, TD3, ContextMAML, MetaSAC
from hyperrl.algos.pearl import PEARL
from hyperrl.nn import META_CRITIC, META_VALUE, POLICY

TINY_HYPER = {"primary_widths": [8, 8, 16], "blocks_per_stage": 1, "dynamic_hidden": [8]}

META = dict(
    tasks={"n_train_tasks": 3, "n_test_tasks": 1}, policy=POLICY.with_settings("hyper", TINY_HYPER),
    critic=META_CRITIC.with_settings("hyper", TINY_HYPER), value=META_VALUE.with_settings("hyper", TINY_HYPER),
    replay={"meta_batch_size": 2, "batch_size": 8, "buffer_size": 200, "initial_steps": 10,
            "tasks_per_iteration": 1, "updates_per_iteration": 2},
    optim={"reward_scale": 1.0},
)  # fmt: skip
META_SAC = dict(replay={"steps_per_task": 10}, evaluation={"eval_train_tasks": 1})
PEARL_SCHEDULE = dict(latent_dim=2, encoder_hidden=[8],
                      replay={"num_steps_prior": 6, "num_steps_posterior": 0, "num_extra_rl_steps_posterior": 6,
                              "embedding_batch_size": 6, "embedding_mini_batch_size": 3},
                      evaluation={"num_steps_per_eval": 20, "num_exp_traj_eval": 1, "eval_train_tasks": 1,
                                  "num_evals": 1})  # fmt: skip
ON_POLICY = dict(policy=POLICY.with_settings("hyper", dict(TINY_HYPER)),
                 sampling={"meta_batch_size": 2, "fast_batch_size": 1}, tasks={"n_train_tasks": 3, "n_test_tasks": 1},
                 evaluation={"eval_episodes": 1, "eval_tasks": 1}, optim={"cg_iterations": 2})  # fmt: skip
# an update at each of the two training steps (4 frames per step, updates from 4 frames on)
OFF_POLICY = dict(replay={"frames_per_batch": 4, "warmup_frames": 4, "learning_starts": 4, "batch_size": 8},
                  evaluation={"eval_episodes": 1})
# MuJoCo task families: their simulator state is float64, the case where a float64 observation could reach a network
MUJOCO = "hyperrl/HalfCheetahVel-v0"


def merged(*settings: dict) -> dict:
    """The keyword arguments of SETTINGS together, a settings group given in several merged into one."""
    out: dict = {}
    for kwargs in settings:
        for key, value in kwargs.items():
            group = key in ("tasks", "optim", "replay", "evaluation", "sampling", "adaptation")
            out[key] = {**out[key], **value} if group and key in out else value
    return out


def build(name: str):
    """A tiny module of algorithm ``name`` (MuJoCo envs where the algorithm's own test setup allows it cheaply)."""
    if name == "SAC":
        return SAC(**tiny_kwargs(**OFF_POLICY))
    if name == "TD3":
        return TD3(**tiny_kwargs(**OFF_POLICY))
    if name == "MetaSAC":
        return MetaSAC(env=MUJOCO, **merged(META, META_SAC))
    if name == "PEARL":
        return PEARL(env=MUJOCO, **merged(META, PEARL_SCHEDULE))
    if name == "MAML":
        return MAML(env=MUJOCO, **ON_POLICY)
    if name == "ContextMAML":
        return ContextMAML(env=MUJOCO, **ON_POLICY)
    raise ValueError(name)


ALGORITHMS = ("SAC", "TD3", "MetaSAC", "PEARL", "MAML", "ContextMAML")
STEPS = 2


class DtypeAudit:
    """Forward pre-hooks on every ``nn.Module`` of a model: records each module that received a float64 tensor, and
    the devices of all inputs."""

    def __init__(self, model: nn.Module) -> None:
        self.offenders: list[str] = []
        self.devices: set[str] = set()
        self.calls = 0
        self._handles = [m.register_forward_pre_hook(self._hook(name or type(model).__name__))
                         for name, m in model.named_modules()]

    def _hook(self, name: str):
        def hook(module, args):
            self.calls += 1
            for arg in _tensors(args):
                self.devices.add(arg.device.type)
                if arg.dtype == torch.float64:
                    self.offenders.append(f"{name} ({type(module).__name__}): {tuple(arg.shape)}")
        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def _tensors(obj):
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)
    elif hasattr(obj, "values") and callable(obj.values):  # a TensorDict
        for o in obj.values(True, True):
            yield from _tensors(o)


def fit(tmp_path, name: str, precision: str, accelerator: str = "cpu"):
    """``STEPS`` training steps and one evaluation of a tiny ``name`` under ``precision``, with a dtype audit."""
    module = build(name)
    before = [p.detach().clone() for p in module.parameters()]
    audit = DtypeAudit(module)
    trainer = make_trainer(tmp_path, STEPS, precision=precision, accelerator=accelerator, val_check_interval=STEPS)
    try:
        trainer.fit(module)
    finally:
        audit.remove()
    assert trainer.global_step == STEPS
    assert audit.calls > 0
    assert not audit.offenders, f"float64 tensors reached networks: {sorted(set(audit.offenders))[:5]}"
    assert all(p.dtype == torch.float32 for p in module.parameters())  # bf16-mixed keeps fp32 weights
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert any(not torch.equal(b, p.detach().cpu()) for b, p in zip(before, module.parameters()))  # it trained
    return module, audit


@pytest.mark.parametrize("name", ALGORITHMS)
def test_every_algorithm_fits_under_bf16_mixed_on_cpu_and_no_float64_reaches_a_network(tmp_path, name):
    module, _ = fit(tmp_path, name, "bf16-mixed")
    assert any(k.startswith("eval/") for k in module.trainer.callback_metrics)  # the evaluation ran under autocast too


@pytest.mark.parametrize("name", ("MetaSAC", "PEARL", "MAML"))
def test_meta_algorithms_fit_in_fp32_on_a_mujoco_family_with_no_float64_at_any_network(tmp_path, name):
    fit(tmp_path, name, "32-true")


def test_the_audit_catches_a_float64_input():
    net = nn.Sequential(nn.Linear(2, 2).double())
    audit = DtypeAudit(net)
    net(torch.zeros(1, 2, dtype=torch.float64))
    audit.remove()
    assert audit.offenders and audit.offenders[0].startswith("Sequential")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("precision", ("32-true", "bf16-mixed"))
@pytest.mark.parametrize("name", ALGORITHMS)
def test_every_algorithm_fits_on_a_gpu(tmp_path, name, precision):
    _, audit = fit(tmp_path, name, precision, accelerator="gpu")
    assert "cuda" in audit.devices  # (Lightning moves the module back to the CPU when the fit ends)
