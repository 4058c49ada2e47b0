"""Speed of one MetaSAC (PEARL's SAC, oracle context) update at paper size: hyperrl vs the authors' formulation.

What is compared, on cheetah-vel sizes (observation 20, action 6, context 1), a meta-batch of 16 tasks × 256:
* **ours**: ``hyperrl.algos.MetaSAC`` with the hypernetwork policy, twin meta-Q and V, one update as its training
  step does it (``losses``, one backward, one fused Adam step with param groups, Polyak update of V). The policy's
  primary network runs once per task (16 rows), the twin Q is one ``CriticEnsemble`` whose state-only part runs once
  for the Q loss and the min-Q term, and each hypernetwork's weight heads are one fused linear.
* **reference**: plain PyTorch written the way the authors' PEARL code does it (``hyperrl-paper.md`` §6.2–6.3),
  reusing the reference trunk and ``W``/``b``/``s`` heads of ``benchmarks/update_speed.py``: separate Q1, Q2, V and
  policy hypernetworks, the policy's trunk run on the per-transition context (4096 rows, as their SAC update does),
  four ``torch.optim.Adam`` (foreach) and their order: Q loss and step; min Q of the new actions with the updated
  critics; V loss and step; soft update of V; policy loss (critic frozen) and step. ``set_detect_anomaly``, which
  the authors leave on at import (§8.11), is OFF here: the comparison is of the formulations, not of that bug.

Both get the same random batch and are timed interleaved after warm-up; medians; the last line is one JSON object
with ``speedup_vs_reference = reference / ours``. Parameter counts of both are printed and must agree.

    python benchmarks/meta_update_speed.py            # 7 repeats
    python benchmarks/meta_update_speed.py --quick    # 3 repeats, meta-batch 4 × 64 (a smoke run, not the target)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/update_speed.py
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run_info  # noqa: E402
from update_speed import RefHead, RefTrunk  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from torch import nn  # noqa: E402

OBS, ACT, CTX = 20, 6, 1


class RefHyperNet(nn.Module):
    """Trunk on ``meta``; dynamic net ``base → 256 (ReLU) → out`` from separate W/b/s heads, per sample via bmm;
    ``log_std_head`` adds the policy's second output head on the same hidden layer."""

    def __init__(self, meta_dim: int, base_dim: int, out_dim: int = 1, log_std_head: bool = False) -> None:
        super().__init__()
        self.trunk = RefTrunk(meta_dim)
        self.layer1 = RefHead(base_dim, 256, 0.05)
        self.last_layer = RefHead(256, out_dim, 0.008)
        self.last_layer_log = RefHead(256, out_dim, 0.001) if log_std_head else None

    def forward(self, meta, base):
        z = self.trunk(meta)
        w1, b1, s1 = self.layer1(z)
        h = F.relu(torch.bmm(w1, base.unsqueeze(2)) * s1 + b1)
        w2, b2, s2 = self.last_layer(z)
        out = (torch.bmm(w2, h) * s2 + b2).squeeze(2)
        if self.last_layer_log is None:
            return out
        w3, b3, s3 = self.last_layer_log(z)
        return out, (torch.bmm(w3, h) * s3 + b3).squeeze(2)


class Reference:
    """The authors' PEARL-SAC update with hypernetwork Q1, Q2, V and policy (module docstring)."""

    def __init__(self) -> None:
        self.q1, self.q2 = RefHyperNet(OBS, ACT + CTX, 1), RefHyperNet(OBS, ACT + CTX, 1)
        self.v = RefHyperNet(OBS, CTX, 1)
        self.v_target = RefHyperNet(OBS, CTX, 1)
        self.v_target.load_state_dict(self.v.state_dict())
        self.policy = RefHyperNet(CTX, OBS, ACT, log_std_head=True)
        self.opts = [torch.optim.Adam(m.parameters(), lr=lr, foreach=True)
                     for m, lr in ((self.q1, 5e-5), (self.q2, 5e-5), (self.v, 5e-5), (self.policy, 1e-4))]

    def parameters_per_network(self) -> dict[str, int]:
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"q": count(self.q1), "v": count(self.v), "policy": count(self.policy)}

    def update(self, obs, act, rew, next_obs, term, ctx) -> None:
        q1_opt, q2_opt, v_opt, pi_opt = self.opts
        mu, log_std = self.policy(ctx, obs)
        log_std = log_std.clamp(-20, 2)
        std = log_std.exp()
        u = mu + std * torch.randn_like(mu)
        new_a = torch.tanh(u)
        log_pi = (torch.distributions.Normal(mu, std).log_prob(u) - torch.log(1 - new_a.pow(2) + 1e-6)).sum(1, True)
        q1 = self.q1(obs, torch.cat([act, ctx], 1))
        q2 = self.q2(obs, torch.cat([act, ctx], 1))
        v_pred = self.v(obs, ctx)
        with torch.no_grad():
            target_v = self.v_target(next_obs, ctx)
        q_target = 5.0 * rew + (1.0 - term) * 0.99 * target_v
        q1_opt.zero_grad(), q2_opt.zero_grad()
        (torch.mean((q1 - q_target) ** 2) + torch.mean((q2 - q_target) ** 2)).backward()
        q1_opt.step(), q2_opt.step()
        for p in list(self.q1.parameters()) + list(self.q2.parameters()):
            p.requires_grad_(False)
        new_ac = torch.cat([new_a, ctx], 1)
        min_q = torch.min(self.q1(obs, new_ac), self.q2(obs, new_ac))
        v_loss = F.mse_loss(v_pred, (min_q - log_pi).detach())
        v_opt.zero_grad()
        v_loss.backward()
        v_opt.step()
        with torch.no_grad():
            for t, s in zip(self.v_target.parameters(), self.v.parameters()):
                t.mul_(0.995).add_(s, alpha=0.005)
        policy_loss = (log_pi - min_q).mean() + 1e-3 * (mu ** 2).mean() + 1e-3 * (log_std ** 2).mean()
        pi_opt.zero_grad()
        policy_loss.backward()
        pi_opt.step()
        for p in list(self.q1.parameters()) + list(self.q2.parameters()):
            p.requires_grad_(True)


def make_ours():
    from hyperrl.algos import MetaSAC

    module = MetaSAC(env="hyperrl/HalfCheetahVel-v0", tasks={"n_train_tasks": 16, "n_test_tasks": 2})
    optimizer = torch.optim.Adam(module.param_groups(), fused=True)

    def update(batch):
        losses = module.losses(batch)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        module.after_update()

    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    sizes = {"q": module.critics.parameters_per_member(), "v": count(module.value), "policy": count(module.policy)}
    return update, sizes


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats at meta-batch 4 x 64 (smoke run)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    load_start = os.getloadavg()[0]
    tasks, per_task = (4, 64) if args.quick else (16, 256)
    repeats = args.repeats or (3 if args.quick else 7)
    torch.manual_seed(0)
    ctx = torch.rand(tasks, 1, CTX)
    batch = TensorDict(
        {
            "observation": torch.randn(tasks, per_task, OBS),
            "action": torch.rand(tasks, per_task, ACT) * 2 - 1,
            "context": ctx.expand(tasks, per_task, CTX),
            "next": {"observation": torch.randn(tasks, per_task, OBS), "reward": torch.randn(tasks, per_task, 1),
                     "terminated": torch.zeros(tasks, per_task, 1, dtype=torch.bool)},
        },
        batch_size=[tasks, per_task],
    )
    flat = [batch.get(k).reshape(tasks * per_task, -1) for k in
            ("observation", "action", ("next", "reward"), ("next", "observation"))]
    flat += [batch.get(("next", "terminated")).reshape(-1, 1).float(), batch.get("context").reshape(-1, CTX)]

    ours, our_sizes = make_ours()
    reference = Reference()
    ref_sizes = reference.parameters_per_network()
    print(f"parameters per network: ours {our_sizes}, reference {ref_sizes}")
    if our_sizes != ref_sizes:
        raise SystemExit("the two formulations do not have the same networks")
    ours(batch), reference.update(*flat)  # warm-up
    ours_t, ref_t = [], []
    for k in range(repeats):
        for name in (("ours", "ref") if k % 2 == 0 else ("ref", "ours")):
            start = time.perf_counter()
            ours(batch) if name == "ours" else reference.update(*flat)
            (ours_t if name == "ours" else ref_t).append(time.perf_counter() - start)
    ours_s, ref_s = statistics.median(ours_t), statistics.median(ref_t)
    print(f"ours      : median {ours_s * 1e3:8.1f} ms over {repeats}")
    print(f"reference : median {ref_s * 1e3:8.1f} ms over {repeats}")
    result = {
        "benchmark": "meta_update_speed",
        "meta_batch": [tasks, per_task],
        "ours_ms": round(ours_s * 1e3, 1),
        "reference_ms": round(ref_s * 1e3, 1),
        "speedup_vs_reference": round(ref_s / ours_s, 3),
        "repeats": repeats,
        **run_info(load_start, args.quick),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
