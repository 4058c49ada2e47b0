"""The seam between an algorithm and its data: what :class:`~hyperrl.algos.Algorithm` needs of a data source."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class DataSource(Protocol):
    """Collects experience and serves training batches; its whole state goes into checkpoints.

    * ``collect()``: step the environment(s) with the current policy, store what was collected, return it;
    * ``sample()``: a training batch (a TensorDict on the training device);
    * ``state_dict()`` / ``load_state_dict(state)``: everything needed to continue exactly (buffers, cursors,
      episodes in progress, task pools), as plain tensors, numbers, strings, lists and dicts
      (``torch.load(weights_only=True)`` must read it);
    * ``shutdown()``: release environments and workers.
    """

    def collect(self) -> Any: ...

    def sample(self) -> Any: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def shutdown(self) -> None: ...
