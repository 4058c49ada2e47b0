"""Speed of one PEARL update at paper size with hypernetwork Q, V and policy: hyperrl vs the authors' formulation.

What is compared (cheetah-vel: observation 20, action 6, latent 5; meta-batch 16 tasks × 256 transitions, 100
context transitions per task; encoder 3×200; paper-size hypernetworks)
----------------------------------------------------------------------------------------------------------------
* **ours**: ``hyperrl.algos.pearl.PEARL(env="hyperrl/HalfCheetahVel-v0", policy/critic/value="hyper")``, one update
  as its training step does it: ``module.losses(batch)`` (encoder posterior and KL, twin meta-Q as one
  ``CriticEnsemble``, the critics' state-only part computed once and reused detached for the min-Q term, the hyper
  policy's primary network once per TASK on ``z`` ``(16, 1, 5)``), one backward of the summed loss, one fused Adam
  step over param groups (5e-5 Q/V, 1e-4 policy, 3e-4 encoder), Polyak update of the target V.
* **reference**: plain PyTorch written the way the authors' PEARL code (``PEARL/torch/sac/{sac,hyper_sac}.py``,
  ``hyper_q_network.py``, ``hyper_policy.py``; ``hyperrl-paper.md`` §6) does it: ``Hyper_QNetwork``-like Q and V
  (the ResNet trunk of ``benchmarks/update_speed.py``, separate ``W``/``b``/``s`` ``nn.Linear`` generators per
  dynamic layer, ``torch.bmm``), two separate Q networks, the hyper policy's trunk run PER TRANSITION on ``z``
  repeated ``256×`` per task (``task_z = [z.repeat(b, 1) ...]``), per-task Python loops for the product of
  Gaussians and the KL, six ``torch.optim.Adam`` (encoder, Q1, Q2, V, policy; ``foreach=True``) and the authors'
  update order: KL backward (retain graph), Q backward, Q1/Q2/encoder steps; the full twin Q forward again on
  ``(s, ã)`` with the Q parameters' ``requires_grad`` off; V loss + step; soft update by a per-parameter loop;
  policy loss + step.
  ``torch.autograd.set_detect_anomaly`` is **off** for the reference, to be fair: the authors' ``sac.py`` turns it
  on at import, which slows their runs much more than anything measured here.

Both get the same random batch; updates are timed interleaved (order alternating) after warm-ups, medians reported.
The script checks the per-network parameter counts are equal (Q 9,850,114; V 8,275,714; policy 15,116,824).

    python benchmarks/pearl_update_speed.py --quick        # 1 warm-up, 3 repeats: minutes on a 2-core CPU
    python benchmarks/pearl_update_speed.py --device cuda  # 3 warm-ups, 15 repeats

The last line printed is one JSON object (``speedup_vs_reference = reference / ours``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/update_speed.py

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run_info  # noqa: E402
from meta_update_speed import RefHyperNet  # noqa: E402  (the authors' Hyper_Network, written once)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from torch import nn  # noqa: E402

OBS, ACT, LATENT = 20, 6, 5
FEATURES = OBS + ACT + 1
GAMMA, TAU, REWARD_SCALE, KL_LAMBDA = 0.99, 0.005, 5.0, 0.1


# ============================================================================ reference (authors' formulation)
class RefPEARL:
    def __init__(self, foreach: bool = True) -> None:
        layers, previous = [], FEATURES
        for _ in range(3):
            layers += [nn.Linear(previous, 200), nn.ReLU()]
            previous = 200
        self.encoder = nn.Sequential(*layers, nn.Linear(200, 2 * LATENT))
        self.qf1 = RefHyperNet(OBS, ACT + LATENT)
        self.qf2 = RefHyperNet(OBS, ACT + LATENT)
        self.vf = RefHyperNet(OBS, LATENT)
        self.target_vf = copy.deepcopy(self.vf)
        self.policy = RefHyperNet(LATENT, OBS, ACT, log_std_head=True)
        adam = dict(foreach=foreach)
        self.context_opt = torch.optim.Adam(self.encoder.parameters(), lr=3e-4, **adam)
        self.qf1_opt = torch.optim.Adam(self.qf1.parameters(), lr=5e-5, **adam)
        self.qf2_opt = torch.optim.Adam(self.qf2.parameters(), lr=5e-5, **adam)
        self.vf_opt = torch.optim.Adam(self.vf.parameters(), lr=5e-5, **adam)
        self.policy_opt = torch.optim.Adam(self.policy.parameters(), lr=1e-4, **adam)

    def to(self, device):
        for m in (self.encoder, self.qf1, self.qf2, self.vf, self.target_vf, self.policy):
            m.to(device)
        return self

    def infer(self, context):
        params = self.encoder(context)  # (T, N, 2L)
        mu, sigma_sq = params[..., :LATENT], F.softplus(params[..., LATENT:])
        z_params = []
        for m, s in zip(torch.unbind(mu), torch.unbind(sigma_sq)):  # rlkit's per-task _product_of_gaussians
            s = torch.clamp(s, min=1e-7)
            var = 1.0 / torch.sum(torch.reciprocal(s), dim=0)
            z_params.append((var * torch.sum(m / s, dim=0), var))
        means = torch.stack([p[0] for p in z_params])
        variances = torch.stack([p[1] for p in z_params])
        posteriors = [torch.distributions.Normal(m, torch.sqrt(v)) for m, v in zip(means, variances)]
        z = torch.stack([d.rsample() for d in posteriors])
        prior = torch.distributions.Normal(torch.zeros(LATENT, device=z.device), torch.ones(LATENT, device=z.device))
        kl = torch.sum(torch.stack([torch.distributions.kl_divergence(p, prior) for p in posteriors]))
        return z, kl

    def policy_sample(self, obs, task_z):
        mean, log_std = self.policy(task_z, obs)  # the trunk per transition: meta = z repeated per transition
        log_std = log_std.clamp(-20, 2)
        std = log_std.exp()
        u = mean + std * torch.randn_like(mean)
        log_prob = (-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(1, keepdim=True)
        log_prob = log_prob - torch.log(1 - torch.tanh(u) ** 2 + 1e-6).sum(1, keepdim=True)
        return torch.tanh(u), log_prob, mean, log_std

    def update(self, obs, actions, rewards, next_obs, terms, context) -> None:
        t, b = obs.shape[:2]
        z, kl = self.infer(context)
        task_z = torch.cat([zi.repeat(b, 1) for zi in z], dim=0)  # (T·B, L)
        obs, actions, next_obs = obs.reshape(t * b, -1), actions.reshape(t * b, -1), next_obs.reshape(t * b, -1)
        rewards, terms = rewards.reshape(t * b, 1), terms.reshape(t * b, 1)
        new_actions, log_pi, mean, log_std = self.policy_sample(obs, task_z.detach())
        q1 = self.qf1(obs, torch.cat([actions, task_z], 1))
        q2 = self.qf2(obs, torch.cat([actions, task_z], 1))
        v = self.vf(obs, task_z.detach())
        with torch.no_grad():
            target_v = self.target_vf(next_obs, task_z)
        self.context_opt.zero_grad()
        (KL_LAMBDA * kl).backward(retain_graph=True)
        q_target = REWARD_SCALE * rewards + (1.0 - terms) * GAMMA * target_v
        qf_loss = torch.mean((q1 - q_target) ** 2) + torch.mean((q2 - q_target) ** 2)
        self.qf1_opt.zero_grad()
        self.qf2_opt.zero_grad()
        qf_loss.backward()
        self.qf1_opt.step()
        self.qf2_opt.step()
        self.context_opt.step()
        q_params = [*self.qf1.parameters(), *self.qf2.parameters()]
        for p in q_params:
            p.requires_grad_(False)
        base = torch.cat([new_actions, task_z.detach()], 1)
        min_q = torch.min(self.qf1(obs, base), self.qf2(obs, base))  # the full twin forward again
        v_target = min_q - log_pi
        vf_loss = torch.mean((v - v_target.detach()) ** 2)
        self.vf_opt.zero_grad()
        vf_loss.backward()
        self.vf_opt.step()
        with torch.no_grad():
            for tp, p in zip(self.target_vf.parameters(), self.vf.parameters()):
                tp.data.copy_(tp.data * (1.0 - TAU) + p.data * TAU)
        policy_loss = (log_pi - min_q).mean() + 1e-3 * (mean**2).mean() + 1e-3 * (log_std**2).mean()
        self.policy_opt.zero_grad()
        policy_loss.backward()
        self.policy_opt.step()
        for p in q_params:
            p.requires_grad_(True)


# ============================================================================ ours
class Ours:
    def __init__(self, device) -> None:
        from hyperrl.algos.pearl import PEARL

        self.module = PEARL(env="hyperrl/HalfCheetahVel-v0", policy="hyper", critic="hyper", value="hyper",
                            replay={"meta_batch_size": 16, "batch_size": 256, "embedding_batch_size": 100,
                                    "embedding_mini_batch_size": 100}).to(device)
        self.optimizer = self.module.configure_optimizers()

    def update(self, batch) -> None:
        losses = self.module.losses(batch)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.optimizer.step()
        self.module.after_update()


def make_batch(device, t=16, b=256, n=100, seed=0) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    return TensorDict(
        {
            "observation": torch.randn(t, b, OBS, generator=g),
            "action": torch.rand(t, b, ACT, generator=g) * 2 - 1,
            "encoder_context": torch.randn(t, n, FEATURES, generator=g),
            "next": {
                "observation": torch.randn(t, b, OBS, generator=g),
                "reward": torch.randn(t, b, 1, generator=g),
                "terminated": torch.zeros(t, b, 1, dtype=torch.bool),
                "done": torch.zeros(t, b, 1, dtype=torch.bool),
            },
        },
        batch_size=[t],
    ).to(device)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 warm-up, 3 repeats (paper size is slow on a CPU)")
    parser.add_argument("--repeats", type=int, default=None, help="timed updates per implementation (15, quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed updates per implementation (3, quick 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    load_start = os.getloadavg()[0]
    repeats = args.repeats or (3 if args.quick else 15)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.autograd.set_detect_anomaly(False)  # the authors' sac.py turns it on; both sides run without it
    torch.manual_seed(0)
    ours = Ours(device)
    ref = RefPEARL().to(device)
    m = ours.module
    counts = {
        "Q": (m.critics.parameters_per_member(), n_params(ref.qf1)),
        "V": (n_params(m.value), n_params(ref.vf)),
        "policy": (n_params(m.policy), n_params(ref.policy)),
        "encoder": (n_params(m.context_provider), n_params(ref.encoder)),
    }
    for name, (a, b) in counts.items():
        print(f"parameters {name:8s}: ours {a:>12,}  reference {b:>12,}")
        if a != b:
            raise SystemExit(f"{name} parameter counts differ: the comparison would be meaningless")
    batch = make_batch(device)
    ref_in = (batch["observation"], batch["action"], batch["next", "reward"], batch["next", "observation"],
              batch["next", "terminated"].float(), batch["encoder_context"])
    ours_step, ref_step = (lambda: ours.update(batch)), (lambda: ref.update(*ref_in))
    for _ in range(warmup):
        ours_step()
        ref_step()
    ours_t, ref_t = [], []
    for i in range(repeats):
        pair = [(ours_t, ours_step), (ref_t, ref_step)]
        for times, step in pair if i % 2 == 0 else pair[::-1]:
            times.append(timed(step, device))
    ours_s, ref_s = statistics.median(ours_t), statistics.median(ref_t)
    print(f"device {device}, threads {torch.get_num_threads()}, {repeats} repeats after {warmup} warm-ups")
    print(f"ours      : median {ours_s * 1e3:9.1f} ms  (min {min(ours_t) * 1e3:.1f}, max {max(ours_t) * 1e3:.1f})")
    print(f"reference : median {ref_s * 1e3:9.1f} ms  (min {min(ref_t) * 1e3:.1f}, max {max(ref_t) * 1e3:.1f})")
    result = {
        "benchmark": "pearl_update_speed",
        "speedup_vs_reference": round(ref_s / ours_s, 3),
        "ours_ms": round(ours_s * 1e3, 2),
        "reference_ms": round(ref_s * 1e3, 2),
        "device": str(device),
        "meta_batch_size": 16, "batch_size": 256, "embedding_batch_size": 100,
        "repeats": repeats, "warmup": warmup,
        "reference_detect_anomaly": False,
        **run_info(load_start, args.quick),
    }  # fmt: skip
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
