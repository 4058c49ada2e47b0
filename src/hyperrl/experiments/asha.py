"""The scheduler of a sweep file's ``scheduler: {type: asha, ...}`` (docs/sweeps.md, "Pruning runs with ASHA"):
Ray Tune's ``ASHAScheduler``, one per environment of the grid. Imported only when a sweep has a scheduler (it needs
Ray Tune)."""

from __future__ import annotations

from hyperrl.experiments.sweep_file import Sweep


def per_environment_asha(sweep: Sweep):
    """Ray Tune's ``ASHAScheduler``, one per environment of the grid (``model.init_args.env`` in a run's settings):
    a run is ranked only against runs on its environment. ``stop_last_trials=False``: ``max_t`` places the rungs,
    the fit's ``max_steps`` ends a run."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    settings = sweep.scheduler
    env_of = {run.name: run.env_setting for run in sweep.runs}

    class PerEnvironment(FIFOScheduler):
        def __init__(self):
            super().__init__()
            self._metric, self._by_env = "score", {}

        def asha(self, trial):
            env = env_of[trial.config["run"]]
            if env not in self._by_env:
                self._by_env[env] = ASHAScheduler(
                    time_attr="score_frames", metric="score", mode="max", max_t=settings.max_t,
                    grace_period=settings.grace_period, reduction_factor=settings.reduction_factor,
                    stop_last_trials=False)
            return self._by_env[env]

        def on_trial_add(self, controller, trial):
            self.asha(trial).on_trial_add(controller, trial)

        def on_trial_result(self, controller, trial, result):
            return self.asha(trial).on_trial_result(controller, trial, result)

        def on_trial_complete(self, controller, trial, result):
            self.asha(trial).on_trial_complete(controller, trial, result)

        def on_trial_remove(self, controller, trial):
            self.asha(trial).on_trial_remove(controller, trial)

    return PerEnvironment()
