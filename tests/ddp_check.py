"""Run by tests/test_distributed.py as a script: a 2-process CPU (gloo) DDP fit that records, per rank, a checksum of
the parameters and the first observation its collector saw. Lightning's launcher re-runs this file for rank 1."""

import json
import sys

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from conftest import tiny_kwargs  # noqa: E402

from hyperrl.algos import SAC, TD3  # noqa: E402


class Record(Callback):
    def on_train_end(self, trainer, module):
        params = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
        if hasattr(module.data, "buffers"):  # MetaSAC: which tasks this rank collected for (the sizes of its buffers)
            first_obs = torch.tensor([float(len(b)) for b in module.data.buffers])
        else:
            first_obs = module.data.buffer.storage.get(torch.arange(1)).get("observation").reshape(-1)
        local = torch.cat([params, first_obs, torch.tensor([float(module.update_count), float(trainer.global_step)])])
        gathered = trainer.strategy.all_gather(local)
        if trainer.global_rank == 0:
            n = params.numel()
            out = {
                "params_equal": bool(torch.equal(gathered[0][:n], gathered[1][:n])),
                "params_changed": bool(module.update_count > 0),
                "first_obs": [g[n:-2].tolist() for g in gathered],
                "updates": [float(g[-2]) for g in gathered],
                "global_step": [float(g[-1]) for g in gathered],
            }
            with open(sys.argv[3], "w") as f:
                json.dump(out, f)


def nan_on_rank_1(algo):
    """``algo`` whose loss turns NaN at update 5 on rank 1 only."""

    class NaNOnRank1(algo):
        def losses(self, batch, update):
            out = super().losses(batch, update)
            if self.global_rank == 1 and update == 5:
                out["loss"] = out["loss"] * float("nan")
            return out

    return NaNOnRank1


if __name__ == "__main__":
    if sys.argv[1] == "meta_sac":
        from test_meta_sac import meta_kwargs

        from hyperrl.algos import MetaSAC

        module = MetaSAC(**meta_kwargs(tasks={"n_train_tasks": 6},
                                     replay={"tasks_per_iteration": 2, "updates_per_iteration": 10}))
    else:
        algo = {"sac": SAC, "td3": TD3, "sac_nan_on_rank_1": nan_on_rank_1(SAC)}[sys.argv[1]]
        module = algo(**tiny_kwargs(replay={"warmup_frames": 20, "learning_starts": 20}))
    if sys.argv[1].endswith("nan_on_rank_1"):
        from hyperrl.errors import NonFiniteLossError

        trainer = L.Trainer(
            accelerator="cpu", devices=2, strategy=sys.argv[2], max_steps=40, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            val_check_interval=10**9, check_val_every_n_epoch=None, num_sanity_val_steps=0,
        )  # fmt: skip
        try:
            trainer.fit(module)
        except NonFiniteLossError as exc:
            with open(f"{sys.argv[3]}.rank{trainer.global_rank}", "w") as f:
                json.dump({"stopped": str(exc), "update_count": int(module.update_count)}, f)
            sys.exit(1)
        sys.exit(0)
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy=sys.argv[2], max_steps=40, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, val_check_interval=10**9, check_val_every_n_epoch=None,
        num_sanity_val_steps=0, callbacks=[Record()],
    )
    trainer.fit(module)
