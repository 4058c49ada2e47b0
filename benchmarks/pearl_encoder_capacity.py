"""Can PEARL's encoder tell the navigation goal from two prior episodes at all? A supervised check (not a speed test).

The PEARL demo (``conf/meta/pearl_quickstart.yaml``) falls short of its target because its posterior ``z`` does not
pin the goal down (``docs/benchmarks.md``). This script separates the encoder's capacity from its training signal:
it trains :class:`hyperrl.algos.pearl.PEARLEncoder` (a 3×32 MLP by default, the demo's until session 6; the
demo's 3×64 is ``--hidden 64 64 64``; latent 5, the product of Gaussians, or the deterministic mean with
``--deterministic``) together with a 2×64 decoder ``z -> goal`` by regression on the goal itself, on fresh
synthetic contexts every step. So it has what PEARL's encoder lacks: a direct target and unlimited distinct
contexts (PEARL's demo sees about 420 distinct prior collections in a run, and learns only through the critic's TD
error).

A context imitates the demo's evaluation: two episodes from the origin, each walking straight out along an angle
drawn from ``--angles`` (the demo's prior episodes end between about 40° and 145°) at 0.1 per step to a radius
drawn from [0.6, 1.5], then standing still, 100 steps each; ``(s, a, r, s')`` with ``r = -||s' - goal||`` and the
action in [-1, 1] as the networks see it; ``--context`` transitions drawn from the 200 (the demo's
``embedding_batch_size`` 100). Goals uniform on the upper half of the unit circle, as the demo's.

Prints one JSON line: the mean distance between decoded and true goal over a held-out batch of 1024 contexts at
each report step (``z`` sampled from the posterior as PEARL acts; ``error_at_mean`` decodes its mean).

    python benchmarks/pearl_encoder_capacity.py                  # 6000 steps, about 2 minutes on one core
    python benchmarks/pearl_encoder_capacity.py --kl-lambda 0.01 --deterministic
"""

from __future__ import annotations

import argparse
import json
import math
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # noqa: E402 (shared machines: no spinning OpenMP threads)

import torch  # noqa: E402
from torch import nn  # noqa: E402

from hyperrl.algos.pearl import PEARLEncoder, gaussian_kl_to_standard  # noqa: E402


def contexts(batch: int, n: int, angles: tuple[float, float], generator: torch.Generator):
    """``(batch, n, 7)`` context transitions of two straight prior episodes per goal, and the goals ``(batch, 2)``."""
    def uniform(*shape):
        return torch.rand(*shape, generator=generator)

    phi = uniform(batch) * math.pi
    goal = torch.stack([phi.cos(), phi.sin()], -1)
    steps = torch.arange(1, 101, dtype=torch.float32)
    episodes = []
    for _ in range(2):
        theta = torch.deg2rad(angles[0] + (angles[1] - angles[0]) * uniform(batch))
        radius = 0.6 + 0.9 * uniform(batch)
        direction = torch.stack([theta.cos(), theta.sin()], -1)[:, None]
        s = torch.minimum(0.1 * (steps - 1)[None], radius[:, None])[..., None] * direction
        s_next = torch.minimum(0.1 * steps[None], radius[:, None])[..., None] * direction
        reward = -(s_next - goal[:, None]).norm(dim=-1, keepdim=True)
        episodes.append(torch.cat([s, (s_next - s) / 0.1, reward, s_next], -1))
    both = torch.cat(episodes, 1)
    idx = torch.randint(both.shape[1], (batch, n), generator=generator)
    return torch.gather(both, 1, idx[..., None].expand(-1, -1, both.shape[-1])), goal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=64, help="goals (contexts) per step")
    parser.add_argument("--context", type=int, default=100, help="transitions per context")
    parser.add_argument("--angles", type=float, nargs=2, default=(40.0, 145.0), help="prior episodes' angle range")
    parser.add_argument("--kl-lambda", type=float, default=0.0, help="weight of KL(q(z|c) || N(0, I)) in the loss")
    parser.add_argument("--deterministic", action="store_true", help="PEARL's deterministic encoder (a mean)")
    parser.add_argument("--latent", type=int, default=5)
    parser.add_argument("--hidden", type=int, nargs="+", default=(32, 32, 32), help="the encoder's hidden widths")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    encoder = PEARLEncoder(2, 2, latent_dim=args.latent, hidden=tuple(args.hidden),
                           use_information_bottleneck=not args.deterministic, use_next_obs_in_context=True)
    decoder = nn.Sequential(nn.Linear(args.latent, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)
    held_out = contexts(1024, args.context, tuple(args.angles), torch.Generator().manual_seed(10_000 + args.seed))
    report = {}
    for step in range(1, args.steps + 1):
        context, goal = contexts(args.batch, args.context, tuple(args.angles), generator)
        mu, var = encoder.posterior(context)
        z = mu if var is None else mu + var.sqrt() * torch.randn_like(mu)
        loss = (decoder(z) - goal).pow(2).sum(-1).mean()
        if var is not None and args.kl_lambda:
            loss = loss + args.kl_lambda * gaussian_kl_to_standard(mu, var).sum(-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % (args.steps // 4) == 0 or step == args.steps:
            with torch.no_grad():
                mu, var = encoder.posterior(held_out[0])
                z = mu if var is None else mu + var.sqrt() * torch.randn_like(mu)
                report[step] = {"error": round((decoder(z) - held_out[1]).norm(dim=-1).mean().item(), 4),
                                "error_at_mean": round((decoder(mu) - held_out[1]).norm(dim=-1).mean().item(), 4)}
    print(json.dumps({"pearl_encoder_capacity": {
        "encoder": "deterministic" if args.deterministic else "product of Gaussians", "latent": args.latent,
        "kl_lambda": args.kl_lambda, "angles": list(args.angles), "context": args.context, "batch": args.batch,
        "held_out_goal_error": report}}))


if __name__ == "__main__":
    main()
