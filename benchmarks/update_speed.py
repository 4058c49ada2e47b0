"""Speed of one SAC update with twin paper-size SA-Hyper critics: hyperrl vs a plain-PyTorch reference.

What is compared
----------------
* **ours**: ``hyperrl.algos.SAC(env="HalfCheetah-v5", critic="sa_hyper")`` (obs 17, act 6), one update exactly as
  the training step does it: ``losses = module.losses(batch, k)``, ``zero_grad``, ``losses["loss"].backward()``,
  ``optimizer.step()`` (``module.configure_optimizers()``: one fused Adam with param groups), ``after_update(k)``
  (Polyak). The twin critics are one ``CriticEnsemble`` (stacked weights, one batched matmul per layer for both),
  and the state-only part of each critic (primary net + weight heads) runs once on ``s`` and serves both the
  critic loss and the (detached) actor loss.
* **reference**: written here in plain PyTorch the way the authors' SAC does it (``hyperrl-paper.md`` §1, §3.2):
  a ``Hyper_QNetwork``-like module (same pre-activation ResNet trunk 17→256→512→1024 with 2 blocks per stage; a
  head per dynamic layer made of separate ``W``/``b``/``s`` ``nn.Linear`` generators; ``torch.bmm`` dynamic
  forward), a twin critic made of two such networks, a 2×256 tanh-Gaussian policy, three ``torch.optim.Adam``
  (critic, policy, log α) and the authors' update order:
  critic loss + step; policy loss with the critic parameters frozen (``requires_grad=False``) running the *full*
  critic forward again on ``(s, ã)`` with ``min(Q1, Q2)``; α loss + step; soft update of the whole critic with a
  per-parameter loop. The Adams use ``foreach=True``, the default on the GPUs the authors ran on; on CPU PyTorch
  defaults to a per-tensor loop instead (``--reference-adam torch-default``; it made no measurable difference here).

Both implementations get the same random batch (B=256 by default) and are timed interleaved (the order alternates
every repeat) after warm-up updates; the JSON reports medians and ``speedup_vs_reference = reference / ours``.
Both critics have exactly 8,537,346 parameters per Q-network (checked and printed), and they compute the same
function: with our weights copied into the reference, Q agrees to float precision (checked and printed).

The script also times a 2048×2048 fp32 matmul (median, interleaved with the updates) as the machine's practical
FLOP/s ceiling, counts the FLOPs
of one update with ``torch.utils.flop_counter.FlopCounterMode`` and reports the fraction of the matmul's FLOP/s
that each update reaches. ``--profile`` adds a per-phase breakdown and a ``torch.profiler`` table of our update.

    python benchmarks/update_speed.py            # 15 repeats
    python benchmarks/update_speed.py --quick    # 5 repeats, < 1 min on 2 cores
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

# On a shared machine (more runnable threads than cores) OpenMP's default spin-waiting turns every parallel
# region into a wait for a descheduled thread: a 2x256 MLP update went from 2.5 ms to 210 ms with 2 torch threads
# under load. Passive waiting removes that (at load ~1 it was as fast or faster: 2.4 vs 2.8 ms); both sides of the
# comparison get it. It must be set before torch loads OpenMP; set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run_info  # noqa: E402

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

OBS_DIM, ACT_DIM = 17, 6
PAPER_PARAMS_PER_Q = 8_537_346
GAMMA, TAU = 0.99, 0.005


# ============================================================================ reference (authors' style)
class RefResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x):
        return x + self.fc2(F.relu(self.fc1(F.relu(x))))


class RefTrunk(nn.Module):
    """The primary network: Linear, 2 ResBlocks, Linear, 2 ResBlocks, Linear, 2 ResBlocks; no final activation."""

    def __init__(self, meta_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(meta_dim, 256), RefResBlock(256), RefResBlock(256),
            nn.Linear(256, 512), RefResBlock(512), RefResBlock(512),
            nn.Linear(512, 1024), RefResBlock(1024), RefResBlock(1024),
        )  # fmt: skip
        for m in self.modules():  # the authors' SAC init: U(±1/sqrt(2·fan_in)) weights
            if isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(2 * m.in_features)
                nn.init.uniform_(m.weight, -bound, bound)

    def forward(self, meta):
        return self.net(meta).view(-1, 1024)


class RefHead(nn.Module):
    """Three separate generators reading z: W (n_out×n_in), b (n_out) and s (n_out, gain 1 + s)."""

    def __init__(self, n_in: int, n_out: int, bound: float) -> None:
        super().__init__()
        self.n_in, self.n_out = n_in, n_out
        self.W = nn.Linear(1024, n_in * n_out)
        self.b = nn.Linear(1024, n_out)
        self.s = nn.Linear(1024, n_out)
        for lin in (self.W, self.b, self.s):
            nn.init.uniform_(lin.weight, -bound, bound)
            nn.init.zeros_(lin.bias)

    def forward(self, z):
        w = self.W(z).view(-1, self.n_out, self.n_in)
        b = self.b(z).view(-1, self.n_out, 1)
        s = 1.0 + self.s(z).view(-1, self.n_out, 1)
        return w, b, s


class RefHyperQ(nn.Module):
    """meta = state, base = action; dynamic net 6 → 256 (ReLU) → 1, evaluated per sample with ``torch.bmm``."""

    def __init__(self, state_dim: int, action_dim: int) -> None:
        super().__init__()
        self.trunk = RefTrunk(state_dim)
        self.layer1 = RefHead(action_dim, 256, 0.05)
        self.last_layer = RefHead(256, 1, 0.008)

    def forward(self, state, action):
        z = self.trunk(state)
        w1, b1, s1 = self.layer1(z)
        w2, b2, s2 = self.last_layer(z)
        h = F.relu(torch.bmm(w1, action.unsqueeze(2)) * s1 + b1)
        return (torch.bmm(w2, h) * s2 + b2).view(-1, 1)


class RefTwinCritic(nn.Module):
    def __init__(self, state_dim: int, action_dim: int) -> None:
        super().__init__()
        self.q1 = RefHyperQ(state_dim, action_dim)
        self.q2 = RefHyperQ(state_dim, action_dim)

    def forward(self, state, action):
        return self.q1(state, action), self.q2(state, action)


class RefPolicy(nn.Module):
    """2×256 ReLU MLP, mean and log-std heads, tanh-squashed reparameterised Gaussian (action bounds ±1)."""

    def __init__(self, state_dim: int, action_dim: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(state_dim, 256), nn.Linear(256, 256)
        self.mean, self.log_std = nn.Linear(256, action_dim), nn.Linear(256, action_dim)

    def sample(self, state):
        h = F.relu(self.fc2(F.relu(self.fc1(state))))
        mean, log_std = self.mean(h), self.log_std(h).clamp(-20, 2)
        std = log_std.exp()
        u = mean + std * torch.randn_like(mean)
        log_prob = -0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
        log_prob = log_prob - 2 * (math.log(2) - u - F.softplus(-2 * u))
        return torch.tanh(u), log_prob.sum(1, keepdim=True)


class ReferenceSAC:
    def __init__(self, state_dim: int, action_dim: int, critic_lr=5e-5, lr=3e-4, foreach: bool | None = True) -> None:
        self.critic = RefTwinCritic(state_dim, action_dim)
        self.critic_target = copy.deepcopy(self.critic)
        for p in self.critic_target.parameters():
            p.requires_grad_(False)
        self.policy = RefPolicy(state_dim, action_dim)
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.alpha = self.log_alpha.detach().exp()
        self.target_entropy = -float(action_dim)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=critic_lr, foreach=foreach)
        self.policy_optim = torch.optim.Adam(self.policy.parameters(), lr=lr, foreach=foreach)
        self.alpha_optim = torch.optim.Adam([self.log_alpha], lr=lr, foreach=foreach)

    def critic_step(self, s, a, r, s2, not_done):
        with torch.no_grad():
            a2, logp2 = self.policy.sample(s2)
            q1_t, q2_t = self.critic_target(s2, a2)
            y = r + GAMMA * not_done * (torch.min(q1_t, q2_t) - self.alpha * logp2)
        q1, q2 = self.critic(s, a)
        critic_loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        self.critic_optim.zero_grad()
        critic_loss.backward()
        self.critic_optim.step()

    def policy_step(self, s):
        for p in self.critic.parameters():
            p.requires_grad_(False)
        a_new, logp = self.policy.sample(s)
        q1_pi, q2_pi = self.critic(s, a_new)  # the full critic again, trunk and heads included
        policy_loss = (self.alpha * logp - torch.min(q1_pi, q2_pi)).mean()
        self.policy_optim.zero_grad()
        policy_loss.backward()
        self.policy_optim.step()
        for p in self.critic.parameters():
            p.requires_grad_(True)
        return logp

    def alpha_step(self, logp):
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_optim.zero_grad()
        alpha_loss.backward()
        self.alpha_optim.step()
        self.alpha = self.log_alpha.detach().exp()

    def soft_update(self):
        with torch.no_grad():
            for t, p in zip(self.critic_target.parameters(), self.critic.parameters()):
                t.data.copy_(t.data * (1.0 - TAU) + p.data * TAU)

    def update(self, s, a, r, s2, not_done) -> None:
        self.critic_step(s, a, r, s2, not_done)
        logp = self.policy_step(s)
        self.alpha_step(logp)
        self.soft_update()


# ============================================================================ ours
class Ours:
    def __init__(self, batch_size: int) -> None:
        from hyperrl.algos import SAC

        self.module = SAC(env="HalfCheetah-v5", critic="sa_hyper", replay={"batch_size": batch_size})
        self.optimizer = self.module.configure_optimizers()
        self.k = 0

    def update(self, batch) -> None:
        losses = self.module.losses(batch, self.k)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.optimizer.step()
        self.module.after_update(self.k)
        self.k += 1


# ============================================================================ helpers
def make_batch(batch_size: int, seed: int = 0) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    terminated = torch.rand(batch_size, 1, generator=g) < 0.01
    return TensorDict(
        {
            "observation": torch.randn(batch_size, OBS_DIM, generator=g),
            "action": torch.rand(batch_size, ACT_DIM, generator=g) * 2 - 1,
            "next": {
                "observation": torch.randn(batch_size, OBS_DIM, generator=g),
                "reward": torch.randn(batch_size, 1, generator=g),
                "terminated": terminated,
                "done": terminated.clone(),
            },
        },
        batch_size=[batch_size],
    )


def reference_inputs(batch: TensorDict):
    return (
        batch["observation"],
        batch["action"],
        batch["next", "reward"],
        batch["next", "observation"],
        1.0 - batch["next", "terminated"].float(),
    )


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def matmul_step(n: int = 2048):
    """A fp32 ``n×n @ n×n`` matmul as a zero-argument callable, and its FLOPs."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return (lambda: a @ b), 2 * n**3


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def same_function_error(ours_q: nn.Module, batch: TensorDict) -> float:
    """Max |Q_ours − Q_ref| after copying our Q-network's weights into a fresh reference ``RefHyperQ``: the fused
    generator's rows are, per dynamic layer, W (out·in, row-major out × in), b (out), s (out), in that order."""
    ref_q = RefHyperQ(OBS_DIM, ACT_DIM)
    ours_lin = [m for m in ours_q.hyper.primary.modules() if isinstance(m, nn.Linear)]
    ref_lin = [m for m in ref_q.trunk.modules() if isinstance(m, nn.Linear)]
    for a, b in zip(ours_lin, ref_lin, strict=True):
        b.weight.copy_(a.weight)
        b.bias.copy_(a.bias)
    gen, row = ours_q.hyper.heads.generator, 0
    for head in (ref_q.layer1, ref_q.last_layer):
        for lin in (head.W, head.b, head.s):
            n = lin.out_features
            lin.weight.copy_(gen.weight[row : row + n])
            lin.bias.copy_(gen.bias[row : row + n])
            row += n
    assert row == gen.out_features
    obs, act = batch["observation"], batch["action"]
    return (ours_q(obs, act) - ref_q(obs, act)).abs().max().item()


def phase_breakdown(ours: Ours, ref: ReferenceSAC, batch, ref_in, repeats: int) -> None:
    """Median ms of each phase of both updates (interleaved), printed to stdout."""
    m, opt = ours.module, ours.optimizer
    s, a, r, s2, nd = ref_in
    phases: dict[str, list[float]] = {}

    def rec(name, fn):
        phases.setdefault(name, []).append(timed(fn) * 1e3)

    for _ in range(repeats):
        holder = {}
        rec("ours: critic target (no grad)", lambda: m.critic_target(batch))
        rec("ours: losses() total (incl. target)", lambda: holder.setdefault("l", m.losses(batch, 0)))
        opt.zero_grad(set_to_none=True)
        rec("ours: backward", lambda: holder["l"]["loss"].backward())
        rec("ours: fused Adam step", opt.step)
        rec("ours: Polyak (_foreach_lerp_)", lambda: m.after_update(0))
        rec("ref: critic loss + step", lambda: ref.critic_step(s, a, r, s2, nd))
        rec("ref: policy loss + step", lambda: holder.setdefault("logp", ref.policy_step(s)))
        rec("ref: alpha loss + step", lambda: ref.alpha_step(holder["logp"]))
        rec("ref: soft update (loop)", ref.soft_update)
        rec("ref: critic Adam step only", ref.critic_optim.step)
    print("per-phase medians (ms):")
    for name, values in phases.items():
        print(f"  {name:40s} {statistics.median(values):8.1f}")


def torch_profile(ours: Ours, batch, updates: int = 3) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(updates):
            ours.update(batch)
    print(f"torch.profiler, our update x{updates}, top ops by self CPU time:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


# ============================================================================ main
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 repeats, 2 warm-ups (< 1 min on 2 cores)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=None, help="timed updates per implementation (15, quick 5)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed updates per implementation (3, quick 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--reference-adam", choices=("foreach", "torch-default"), default="foreach",
                        help="the reference's Adam implementation: foreach (the GPU default the authors ran) or "
                        "torch's default for this device (a per-tensor loop on CPU)")
    parser.add_argument("--profile", action="store_true", help="also print a per-phase breakdown and a profiler table")
    args = parser.parse_args(argv)
    load_start = os.getloadavg()[0]
    repeats = args.repeats or (5 if args.quick else 15)
    warmup = args.warmup if args.warmup is not None else (2 if args.quick else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    torch.manual_seed(0)

    ours = Ours(args.batch_size)
    ref = ReferenceSAC(OBS_DIM, ACT_DIM, foreach=True if args.reference_adam == "foreach" else None)
    ours_per_q, ref_per_q = ours.module.critics.parameters_per_member(), n_params(ref.critic.q1)
    print(f"parameters per Q-network: ours {ours_per_q:,}, reference {ref_per_q:,} (paper {PAPER_PARAMS_PER_Q:,})")
    if not ours_per_q == ref_per_q == PAPER_PARAMS_PER_Q:
        raise SystemExit("parameter counts differ: the comparison would be meaningless")

    batch = make_batch(args.batch_size)
    ref_in = reference_inputs(batch)
    error = same_function_error(ours.module.critics.member(0), batch)
    print(f"same function: max |Q_ours - Q_reference| = {error:.2e} with our weights copied into the reference")
    ours_step, ref_step = (lambda: ours.update(batch)), (lambda: ref.update(*ref_in))

    update_flop = count_flops(ours_step)
    ref_flop = count_flops(ref_step)
    # cross-check: an update costs ~8 Q-network forwards for ours (target twin, online twin, backward ~2x forward)
    # and ~10 for the reference (+ the full twin forward again in the policy loss); 2 FLOP per multiply-add
    macs = sum(m.in_features * m.out_features for m in ref.critic.q1.modules() if isinstance(m, nn.Linear))
    print(f"FLOPs per update (FlopCounterMode): ours {update_flop / 1e9:.1f} G, reference {ref_flop / 1e9:.1f} G; "
          f"analytic {macs * 2 / 1e6:.2f} MFLOP per sample per Q-forward -> 8 forwards "
          f"{8 * 2 * macs * args.batch_size / 1e9:.1f} G, 10 forwards {10 * 2 * macs * args.batch_size / 1e9:.1f} G")
    mm_step, mm_flop = matmul_step()
    for _ in range(warmup):
        ours_step()
        ref_step()
        mm_step()
    ours_t, ref_t, mm_t = [], [], []
    for i in range(repeats):  # interleaved, alternating which update goes first; the matmul too (load drifts)
        pair = [(ours_t, ours_step), (ref_t, ref_step)]
        for times, step in [*(pair if i % 2 == 0 else pair[::-1]), (mm_t, mm_step)]:
            times.append(timed(step))
    gflops = mm_flop / statistics.median(mm_t) / 1e9

    ours_s, ref_s = statistics.median(ours_t), statistics.median(ref_t)
    achieved = update_flop / ours_s / 1e9 / gflops
    ref_achieved = ref_flop / ref_s / 1e9 / gflops
    print(f"threads {threads}, batch {args.batch_size}, {repeats} repeats after {warmup} warm-ups")
    print(f"ours      : median {ours_s * 1e3:7.1f} ms  (min {min(ours_t) * 1e3:.1f}, max {max(ours_t) * 1e3:.1f})"
          f"  {update_flop / 1e9:.1f} GFLOP  -> {achieved:.0%} of matmul FLOP/s")  # fmt: skip
    print(f"reference : median {ref_s * 1e3:7.1f} ms  (min {min(ref_t) * 1e3:.1f}, max {max(ref_t) * 1e3:.1f})"
          f"  {ref_flop / 1e9:.1f} GFLOP  -> {ref_achieved:.0%} of matmul FLOP/s")  # fmt: skip
    print(f"matmul 2048^3 fp32: {gflops:.1f} GFLOP/s;  speedup reference/ours = {ref_s / ours_s:.2f}x")
    if args.profile:
        phase_breakdown(ours, ref, batch, ref_in, max(3, repeats // 2))
        torch_profile(ours, batch)

    result = {
        "benchmark": "update_speed",
        "speedup_vs_reference": round(ref_s / ours_s, 3),
        "ours_ms": round(ours_s * 1e3, 2),
        "reference_ms": round(ref_s * 1e3, 2),
        "matmul_gflops": round(gflops, 2),
        "update_gflop": round(update_flop / 1e9, 3),
        "reference_update_gflop": round(ref_flop / 1e9, 3),
        "achieved_fraction": round(achieved, 3),
        "reference_achieved_fraction": round(ref_achieved, 3),
        "params_per_q": ours_per_q,
        "max_abs_q_difference_same_weights": float(f"{error:.3g}"),
        "reference_adam": args.reference_adam,
        "batch_size": args.batch_size,
        "repeats": repeats,
        **run_info(load_start, args.quick),
    }
    print(json.dumps(result))
    sys.stdout.flush()
    return result


if __name__ == "__main__":
    main()
