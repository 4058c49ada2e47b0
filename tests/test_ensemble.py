"""``hyperrl.nn.CriticEnsemble``: E critics as one batched network, member for member equal to the critics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hyperrl.nn import CriticEnsemble, EnsembleLinear, make_critic

from test_nn import ACT, ALL_CRITICS, OBS, small_critic


def twin(name: str, size: int = 2) -> tuple[CriticEnsemble, list[nn.Module]]:
    critics = [small_critic(name, seed=k) for k in range(size)]
    return CriticEnsemble(critics), critics


def inputs(*batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(*batch, OBS, generator=g, dtype=torch.float64),
        torch.rand(*batch, ACT, generator=g, dtype=torch.float64) * 2 - 1,
    )


@pytest.mark.parametrize("name", ALL_CRITICS)
@pytest.mark.parametrize("batch", [(), (7,), (3, 5)], ids=["unbatched", "B", "TxB"])
def test_ensemble_equals_its_members(name, batch):
    """ensemble(o, a)[k] == critic_k(o, a) for every critic of the paper and any leading batch shape."""
    ensemble, critics = twin(name, size=3)
    obs, act = inputs(*batch)
    q = ensemble(obs, act)
    assert q.shape == (3, *batch, 1)
    for k, critic in enumerate(critics):
        torch.testing.assert_close(q[k], critic(obs, act), rtol=1e-12, atol=1e-12)
    # the split into condition/evaluate holds for the ensemble too
    torch.testing.assert_close(ensemble.evaluate(ensemble.condition(obs), act), q, rtol=0, atol=0)


@pytest.mark.parametrize("name", ALL_CRITICS)
@pytest.mark.parametrize("n", [2, 3])
def test_broadcast_batch_shapes_keep_members_apart(name, n):
    """One state against n actions (and n states against one action): member k still uses only its own weights,
    including when n equals the ensemble size (where a misaligned member dimension would broadcast silently)."""
    ensemble, critics = twin(name)
    obs, _ = inputs(4, seed=1)
    _, acts = inputs(n, 4, seed=2)
    q = ensemble(obs, acts)
    assert q.shape == (2, n, 4, 1)
    for k, critic in enumerate(critics):
        torch.testing.assert_close(q[k], critic(obs.expand(n, 4, OBS), acts), rtol=1e-12, atol=1e-12)
    many_obs, _ = inputs(n, 4, seed=3)
    q = ensemble(many_obs, acts[0])
    for k, critic in enumerate(critics):
        torch.testing.assert_close(q[k], critic(many_obs, acts[0].expand(n, 4, ACT)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ALL_CRITICS)
def test_each_member_gets_its_own_gradient(name):
    """The gradient of Σ_k f_k(Q_k) w.r.t. member k's stacked parameters equals f_k's gradient on critic k alone;
    also the action gradient."""
    ensemble, critics = twin(name)
    obs, act = inputs(9)
    weights = torch.tensor([0.3, -1.7], dtype=torch.float64)
    act_e = act.clone().requires_grad_(True)
    (ensemble(obs, act_e).squeeze(-1).square().mean(-1) * weights).sum().backward()
    act_c = act.clone().requires_grad_(True)
    for k, critic in enumerate(critics):
        (critic(obs, act_c).squeeze(-1).square().mean() * weights[k]).backward()
        grads = ensemble.member_tensors({n: p.grad for n, p in ensemble.named_parameters()}, k)
        for n, p in critic.named_parameters():
            torch.testing.assert_close(grads[n], p.grad, rtol=1e-10, atol=1e-12, msg=n)
    torch.testing.assert_close(act_e.grad, act_c.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ALL_CRITICS)
def test_member_roundtrip(name):
    """member(k) is a plain critic of the same class equal to critic k; load_member writes a critic back."""
    ensemble, critics = twin(name)
    obs, act = inputs(4)
    for k, critic in enumerate(critics):
        member = ensemble.member(k)
        assert type(member) is type(critic)
        assert not any(isinstance(m, EnsembleLinear) for m in member.modules())
        torch.testing.assert_close(member(obs, act), critic(obs, act), rtol=0, atol=0)
    fresh = small_critic(name, seed=99)
    ensemble.load_member(1, fresh)
    torch.testing.assert_close(ensemble(obs, act)[1], fresh(obs, act), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ensemble(obs, act)[0], critics[0](obs, act), rtol=1e-12, atol=1e-12)
    for (n, p), (m, q) in zip(ensemble.member(1).named_parameters(), fresh.named_parameters()):
        assert n == m and torch.equal(p, q)


@pytest.mark.parametrize("name, per_q", [("sa_hyper", 8_537_346), ("mlp", 72_193), ("random_hyper", 12_995_079)])
def test_parameter_count_per_member(name, per_q):
    """Stacking adds no parameter: the paper-size twin holds exactly 2 × the per-Q-network count."""
    with torch.device("meta"):
        ensemble = CriticEnsemble([make_critic(name, OBS, ACT) for _ in range(2)])
    assert ensemble.parameters_per_member() == per_q
    assert sum(p.numel() for p in ensemble.parameters()) == 2 * per_q


def test_ensemble_linear_layout_and_shape_check():
    """EnsembleLinear stores member k's nn.Linear weight as weight[k].T and refuses input without the member dim."""
    torch.manual_seed(0)
    linears = [nn.Linear(4, 3) for _ in range(2)]
    layer = EnsembleLinear.from_linears(linears)
    assert layer.weight.shape == (2, 4, 3) and layer.bias.shape == (2, 1, 3)
    assert torch.equal(layer.weight[1].T, linears[1].weight)
    x = torch.randn(2, 6, 5, 4)
    y = layer(x)
    for k in range(2):
        torch.testing.assert_close(y[k], linears[k](x[k]))
    with pytest.raises(ValueError, match=r"expects input \(E=2, \.\.\., 4\)"):
        layer(torch.randn(6, 4))


def test_members_must_match():
    with pytest.raises(ValueError, match="one class with identical parameter shapes"):
        CriticEnsemble([small_critic("mlp"), small_critic("d2rl")])
    with pytest.raises(ValueError, match="one class with identical parameter shapes"):
        CriticEnsemble([make_critic("mlp", OBS, ACT, hidden=(8,)), make_critic("mlp", OBS, ACT, hidden=(9,))])
    with pytest.raises(ValueError, match="at least one critic"):
        CriticEnsemble([])
    with pytest.raises(IndexError):
        twin("mlp")[0].member(2)


def test_ensemble_state_dict_roundtrip():
    """A state dict saved from one ensemble loads into another of the same architecture (checkpoints)."""
    a, _ = twin("sa_hyper")
    b, _ = twin("sa_hyper")
    b.load_state_dict(a.state_dict())
    obs, act = inputs(3)
    torch.testing.assert_close(b(obs, act), a(obs, act), rtol=0, atol=0)
