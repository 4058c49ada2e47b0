"""The whole-update path of MetaSAC and PEARL (``run_update``): eager, ``compile`` and ``cudagraphs``, tensor learning
rates for the cosine decay, the refusals of speed options where they cannot run."""

from __future__ import annotations

import pytest
import torch
from conftest import make_trainer
from test_meta_sac import meta_kwargs
from test_pearl import pearl_kwargs

from hyperrl.algos import PEARL, MetaSAC
from hyperrl.errors import ConfigurationError
from hyperrl.nn import META_CRITIC, META_VALUE, POLICY

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
MLP = dict(policy=POLICY.with_settings("context_mlp", hidden=[8]), critic=META_CRITIC.with_settings("mlp", hidden=[8]),
           value=META_VALUE.with_settings("mlp", hidden=[8]))  # fmt: skip
DECAY = dict(optim={"lr_decay_updates": [2, 8], "lr_decay_final": 0.1})


def build(algo, **overrides):
    kwargs = meta_kwargs if algo is MetaSAC else pearl_kwargs
    return algo(**kwargs(**overrides))


def recorded_fit(tmp_path, algo, steps=10, accelerator="cpu", precision="32-true", **overrides):
    """Fit ``algo`` for ``steps`` steps; return the module, the loss terms of every update, and the sum of the
    critics' weights after each update."""
    module = build(algo, **overrides)
    seen = []
    run_update = module.run_update

    def recording(batch):
        out = run_update(batch)
        norm = float(sum(p.detach().double().sum() for p in module.critics.parameters()))
        seen.append(({k: float(v) for k, v in out.items()}, norm))
        return out

    module.run_update = recording
    make_trainer(tmp_path, max_steps=steps, accelerator=accelerator, precision=precision).fit(module)
    return module, seen


@pytest.mark.parametrize("algo", [MetaSAC, PEARL])
def test_update_steps_every_network_and_returns_detached_losses(algo):
    """``update`` outside a Trainer: one Adam step moves the critics, V, the policy (and PEARL's encoder: its KL and
    critic terms are in the step) and the target V; the losses come back detached."""
    module = build(algo, **MLP)
    data = module.make_data()
    try:
        data.collect()
        batch = data.sample()
    finally:
        data.shutdown()
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    target = [p.detach().clone() for p in module.target_value.parameters()]
    out = module.update(batch)
    assert all(v.dim() == 0 and not v.requires_grad for v in out.values())
    changed = {n.split(".")[0] for n, p in module.named_parameters() if not torch.equal(p, before[n])}
    assert {"critics", "value", "policy"} <= changed
    assert ("context_provider" in changed) == (algo is PEARL)
    assert any(not torch.equal(a, b) for a, b in zip(target, module.target_value.parameters()))
    if algo is PEARL:
        assert "kl_loss" in out.keys()


@pytest.mark.parametrize("algo", [MetaSAC, PEARL])
def test_fast_updates_use_tensor_learning_rates_that_the_decay_changes_in_place(algo):
    """With ``compile`` (or ``cudagraphs``) every group's rate is a tensor: the decay writes into that same tensor (a
    captured graph keeps reading it); eagerly the rates stay Python numbers. ``base_lr`` is the configured rate."""
    eager = build(algo, **MLP)
    fast = build(algo, compile=True, **MLP)
    assert all(isinstance(g["lr"], float) and g["base_lr"] == g["lr"] for g in eager.param_groups())
    optimizer = fast.optimizer
    tensors = [g["lr"] for g in optimizer.param_groups]
    assert all(isinstance(t, torch.Tensor) for t in tensors)
    fast.scale_learning_rates(0.25)
    assert all(g["lr"] is t for g, t in zip(optimizer.param_groups, tensors))
    assert [float(g["lr"]) for g in optimizer.param_groups] == pytest.approx(
        [0.25 * g["lr"] for g in eager.param_groups()])


def test_cudagraphs_on_a_cpu_is_refused_in_one_line(tmp_path):
    module = build(PEARL, cudagraphs=True, **MLP)
    with pytest.raises(ConfigurationError, match=r"cudagraphs=True is not allowed on device 'cpu'") as info:
        make_trainer(tmp_path, max_steps=2).fit(module)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("algo", [pytest.param(MetaSAC, marks=pytest.mark.slow), PEARL])  # ~15 s each on one core
def test_compiled_update_gives_the_eager_losses(tmp_path, algo):
    """``compile=True`` computes what the eager update computes, through the cosine decay of the learning rates: same
    loss terms at every update of a fit (random draws made equal with inductor's ``fallback_random``), same final
    weights."""
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    eager_module, eager = recorded_fit(tmp_path / "eager", algo, **MLP, **DECAY)
    with inductor_config.patch(fallback_random=True):
        compiled_module, compiled = recorded_fit(tmp_path / "compiled", algo, compile=True, **MLP, **DECAY)
    torch._dynamo.reset()
    assert len(eager) == len(compiled) == 10
    for (a, _), (b, _) in zip(eager, compiled):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    for (name, p), q in zip(eager_module.named_parameters(), compiled_module.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)


@cuda
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
@pytest.mark.parametrize("algo", [MetaSAC, PEARL])
def test_cuda_graphed_updates_train(tmp_path, algo, precision):
    """On a GPU, a CUDA-graphed update (the encoder's forward, KL and step included for PEARL) replays real updates:
    finite losses at every update, the critics keep changing after capture, and the decaying rates reach the
    replayed optimizer step."""
    module, seen = recorded_fit(tmp_path, algo, steps=16, accelerator="gpu", precision=precision, cudagraphs=True,
                                optim={"lr_decay_updates": [4, 12], "lr_decay_final": 0.1})  # fmt: skip
    assert len(seen) == 16
    assert all(torch.isfinite(torch.tensor(list(losses.values()))).all() for losses, _ in seen)
    norms = [n for _, n in seen[6:]]  # after warm-up and capture
    assert len(set(norms)) == len(norms), "replayed updates must keep changing the critics"
    rates = [float(g["lr"]) / g["base_lr"] for g in module.optimizer.param_groups]
    assert rates == pytest.approx([0.1] * len(rates))
