"""Checkpoint files that are never half-written, wherever the temporary directory lives.

Lightning's default writer serialises a checkpoint in memory and writes it through an fsspec transaction whose
temporary file lies in the *system* temporary directory; committing moves it onto the checkpoint path. When that
directory is on another filesystem (``/tmp`` on tmpfs, a scratch disk, a network mount), the move is a copy straight
into ``last.ckpt``, and a run killed during the copy leaves a truncated checkpoint, the only one it had.

:class:`AtomicCheckpointIO` writes to a temporary file in the checkpoint's own directory, flushes it to disk and
renames it over the destination with :func:`os.replace`, which is atomic on one filesystem. A run killed at any
moment leaves the previous checkpoint or the new one. A hard kill can leave a hidden ``.<name>.*.partial`` file
beside the checkpoints. It does not end in ``.ckpt``, so nothing mistakes it for a checkpoint. Remote paths
(``s3://``...) keep Lightning's writer. A write that fails (disk full, a file-size limit) raises
:class:`~hyperrl.errors.CheckpointWriteError` naming the folder; the previous checkpoint stays.

:func:`training_state_checksum` is a digest of what a resumed run continues from (weights, optimizer state, step,
replay buffer, RNG and environment state), stored in the checkpoint by :class:`~hyperrl.algos.base.Algorithm` and
checked on load by :func:`check_training_state`: a damaged or edited checkpoint is refused instead of resumed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from hyperrl.errors import CheckpointWriteError

#: The parts of a checkpoint its checksum covers: what a resumed run continues from.
CHECKSUMMED = ("global_step", "state_dict", "optimizer_states", "hyperrl")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes go to a temporary file beside the destination, then ``os.replace``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = os.path.abspath(os.fspath(path))
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".partial", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(partial, 0o666 & ~_umask())
            os.replace(partial, path)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
            # torch.save reports a failed write as a RuntimeError whose context is the OSError (ENOSPC, EFBIG)
            cause = exc if isinstance(exc, OSError) else exc.__context__
            if isinstance(cause, OSError):
                raise CheckpointWriteError(
                    f"cannot write a checkpoint in {directory}: {cause.strerror or cause}; the previous checkpoint "
                    "there is kept"
                ) from exc
            raise
        _fsync_directory(directory)


def training_state_checksum(checkpoint: dict) -> dict:
    """``{"covers": [...], "blake2b": hex}`` over :data:`CHECKSUMMED` parts of ``checkpoint`` (the ``checksum``
    entry of its ``hyperrl`` state excluded). Tensors count by dtype, shape and bytes; lists and tuples alike (a
    saved tuple may load as either)."""
    covers = [key for key in CHECKSUMMED if key in checkpoint]
    digest = hashlib.blake2b(digest_size=16)
    for key in covers:
        value = checkpoint[key]
        if key == "hyperrl" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "checksum"}
        _feed(digest, key)
        _feed(digest, value)
    return {"covers": covers, "blake2b": digest.hexdigest()}


def _feed(digest, value) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"T{tensor.dtype}{tuple(value.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy() if tensor.numel() else b"")  # the buffer itself, no copy
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}".encode())
        for k in sorted(value, key=str):
            _feed(digest, k)
            _feed(digest, value[k])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}".encode())
        for v in value:
            _feed(digest, v)
    else:
        digest.update(f"V{value!r}".encode())


def check_training_state(checkpoint: dict, resuming: bool) -> str | None:
    """What is wrong with ``checkpoint`` as the start of a run, in words, or ``None``. A checkpoint written before
    checksums existed passes unchecked; one without hyperrl state cannot resume (its replay buffer, RNG and
    environment state are gone, so the run could not continue as an uninterrupted one would)."""
    state = checkpoint.get("hyperrl")
    if not isinstance(state, dict):
        if resuming:
            return ("holds no hyperrl training state (replay buffer, RNG, environment): it was not written by "
                    "hyperrl fit, or that state was removed; it cannot resume a run")
        return None
    stored = state.get("checksum")
    if stored is None:
        return None
    if not isinstance(stored, dict) or training_state_checksum(
        {k: checkpoint[k] for k in stored.get("covers", ()) if k in checkpoint}
    ) != stored:
        return ("is damaged: its training state (weights, optimizer, replay buffer, RNG) does not match the checksum "
                "written with it")
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
