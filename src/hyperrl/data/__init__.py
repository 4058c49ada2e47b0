"""Collector and replay-buffer plumbing that feeds the LightningModules."""

from hyperrl.data.offpolicy import TRANSITION_KEYS, OffPolicyData, TrainingSteps, training_steps_loader

__all__ = ["TRANSITION_KEYS", "OffPolicyData", "TrainingSteps", "training_steps_loader"]
