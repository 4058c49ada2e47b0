"""``hyperrl fit --help`` (and ``validate``, ``test``, ``predict``) from a cache: the text needs Lightning's Trainer
and every algorithm class, so building it imports torch, Lightning and TorchRL (seconds, tens of seconds on a loaded
machine). The first call builds it as usual and stores it; later calls print the stored text without importing
anything heavy. The cache key covers what the text depends on: the Python, the terminal width argparse wraps to, and
the sources of hyperrl, Lightning, jsonargparse and TorchRL (their file times), so an edit or an upgrade rebuilds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import shutil
import sys

HELP_FLAGS = ("-h", "--help")


def _folder() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hyperrl")


def _sources_stamp(name: str) -> str:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return f"{name}:none"
    root = os.path.dirname(spec.origin)
    if name != "hyperrl":  # an installed library: its package file changes with every install
        return f"{name}:{os.stat(spec.origin).st_mtime_ns}"
    times = []
    for folder, _, files in os.walk(root):
        times += [f"{f}:{os.stat(os.path.join(folder, f)).st_mtime_ns}" for f in sorted(files) if f.endswith(".py")]
    return f"{name}:{','.join(times)}"


def cache_file(args: list[str]) -> str | None:
    """Where the help of ``args`` is cached, or ``None`` if ``args`` is not ``<subcommand> --help``."""
    if len(args) != 2 or args[1] not in HELP_FLAGS or args[0].startswith("-"):
        return None
    stamp = [sys.version, sys.executable, str(shutil.get_terminal_size().columns), *args]
    stamp += [_sources_stamp(name) for name in ("hyperrl", "lightning", "jsonargparse", "torchrl")]
    digest = hashlib.sha256("\n".join(stamp).encode()).hexdigest()[:24]
    return os.path.join(_folder(), f"help-{args[0]}-{digest}.txt")


def cached(args: list[str]) -> str | None:
    """The cached help text of ``args``, if there is one."""
    path = cache_file(args)
    if path is None or not os.path.isfile(path):
        return None
    with open(path) as f:
        return f.read()


@contextlib.contextmanager
def recording(args: list[str]):
    """Run the enclosed help request, print its text and store it when it ends with status 0."""
    path = cache_file(args)
    if path is None:
        yield
        return
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    except SystemExit as exc:
        if exc.code in (0, None):
            _store(path, buffer.getvalue())
        raise
    finally:
        sys.stdout.write(buffer.getvalue())


def _store(path: str, text: str) -> None:
    with contextlib.suppress(OSError):  # no cache where the folder cannot be written: the help was printed anyway
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
