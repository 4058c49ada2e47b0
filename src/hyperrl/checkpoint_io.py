"""Checkpoint files that are never half-written, wherever the temporary directory lives.

Lightning's default writer serialises a checkpoint in memory and writes it through an fsspec transaction whose
temporary file lies in the *system* temporary directory; committing moves it onto the checkpoint path. When that
directory is on another filesystem (``/tmp`` on tmpfs, a scratch disk, a network mount), the move is a copy straight
into ``last.ckpt``, and a run killed during the copy leaves a truncated checkpoint, the only one it had.

:class:`AtomicCheckpointIO` writes to a temporary file in the checkpoint's own directory, flushes it to disk and
renames it over the destination with :func:`os.replace`, which is atomic on one filesystem. A run killed at any
moment leaves the previous checkpoint or the new one. A hard kill can leave a hidden ``.<name>.*.partial`` file
beside the checkpoints. It does not end in ``.ckpt``, so nothing mistakes it for a checkpoint. Remote paths
(``s3://``...) keep Lightning's writer.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO


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
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
            raise
        _fsync_directory(directory)


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
