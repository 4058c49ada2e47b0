"""The ``hyperrl`` command's help without importing torch or Lightning: ``hyperrl --help`` from a static text, and
``hyperrl fit --help`` (and ``validate``) from a cache: the text needs Lightning's Trainer
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

#: The subcommands of LightningCLI, as ``hyperrl --help`` lists them without importing Lightning.
SUBCOMMANDS = {
    "fit": "Train a model: hyperrl fit --config conf/quickstart.yaml",
    "validate": "Evaluate a checkpoint: hyperrl validate --config <config> --ckpt_path <file>",
}

HELP = """usage: hyperrl [-h] {%(names)s} ...

Hypernetwork critics and actors for reinforcement learning (Sarafian, Keynan, Kraus, ICML 2021) on TorchRL and
Lightning.

subcommands:
%(rows)s

Run "hyperrl <subcommand> --help" for every setting of a subcommand, and
"hyperrl fit --config <file> --print_config" for the settings a run would use. Common options:
  --config FILE                 a YAML config (conf/*.yaml); later options override it
  --trainer.default_root_dir D  where runs go: D/version_<n> (default runs/<config name>)
  --ckpt_path FILE              resume a run (it continues in its own folder) or validate a checkpoint
  --verbose                     show Lightning's and TorchRL's info lines and the model summary
""" % {"names": ",".join(SUBCOMMANDS), "rows": "\n".join(f"  {k:<9} {v}" for k, v in SUBCOMMANDS.items())}


def answer(args: list[str]) -> bool:
    """Print the help ``args`` ask for if it needs no heavy import (``hyperrl`` alone: the help on stderr, exit 2;
    ``hyperrl --help``; a cached ``hyperrl fit --help``); whether it did."""
    if not args or args[0] in HELP_FLAGS:
        print(HELP, end="", file=sys.stdout if args else sys.stderr)
        if not args:
            sys.exit(2)
        return True
    text = cached(args)  # stored by the first call
    if text is not None:
        print(text, end="")
    return text is not None


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
