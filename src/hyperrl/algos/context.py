"""Context providers: where the task context that meta-RL networks condition on comes from.

The seam between PEARL's SAC (:class:`~hyperrl.algos.meta_sac.ContextSAC`) and the context: the SAC losses only ever
see ``z``, the output of a provider, never where it came from.

* :class:`OracleContext`: the task's true context, as the environment reports it (``info["context"]``, the
  TensorDict entry ``"context"``): the paper's oracle-context experiments (``hyperrl-paper.md`` §6.1,
  ``use_pearl_context=False``).
* :class:`~hyperrl.algos.pearl_encoder.PEARLEncoder`: PEARL's learned ``q(z | c)``; it implements the same methods,
  adds its loss term (the KL term) to ``infer``'s output, and its parameters get their own param group. It needs
  PEARL's data and evaluation, so :class:`~hyperrl.algos.pearl.PEARL` builds it; plain MetaSAC offers the oracle.
"""

from __future__ import annotations

from tensordict import TensorDictBase
from torch import Tensor, nn


class ContextProvider(nn.Module):
    """Interface of a context provider.

    * ``output_dim``: the size of ``z``;
    * ``infer(batch) -> (z, loss_terms)``: ``z`` of shape ``(T, 1, output_dim)`` for a meta-batch of batch shape
      ``(T, B)`` (one ``z`` per task, so the policy's primary network runs once per task), and named loss terms
      to add to the update (empty for the oracle); ``z`` carries gradient for a learned provider;
    * ``acting(context) -> z``: the ``z`` to act with while collecting or evaluating, from the env's ``"context"``
      entry (a learned provider ignores it and uses its own posterior);
    * ``param_groups(lr)``: its optimizer param groups (none for the oracle);
    * ``from_spec(env_spec, **kwargs)``: a provider built from the env's sizes.
    """

    output_dim: int

    @classmethod
    def from_spec(cls, env_spec, **kwargs) -> ContextProvider:
        """Build from a :class:`~hyperrl.envs.TaskEnvSpec` (``observation_dim``, ``action_dim``, ``context_dim``)."""
        return cls(env_spec.context_dim, **kwargs)

    def infer(self, batch: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def acting(self, context: Tensor) -> Tensor:
        raise NotImplementedError

    def param_groups(self, lr: float) -> list[dict]:
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr, "name": "context"}] if params else []


class OracleContext(ContextProvider):
    """The true task context ``c`` (normalised with the train pool's range): ``z = c``."""

    def __init__(self, context_dim: int) -> None:
        super().__init__()
        self.output_dim = int(context_dim)

    def infer(self, batch: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        # every transition of a task carries the same context: keep one per task
        return batch.get("context")[:, :1], {}

    def acting(self, context: Tensor) -> Tensor:
        return context


#: MetaSAC's ``context`` choices: name -> provider class
CONTEXT_PROVIDERS: dict[str, type[ContextProvider]] = {"oracle": OracleContext}
#: contexts that come with an algorithm of their own (their data and evaluation): name -> that algorithm's class path
CONTEXT_ALGORITHMS: dict[str, str] = {"pearl": "hyperrl.algos.PEARL"}
