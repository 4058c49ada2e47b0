"""Every ``hyperrl`` command shown in README.md and docs/*.md still works: a documented command must not rot.

``fit`` commands are parsed with ``--print_config`` and their model is built from the printed settings (what
``hyperrl fit`` instantiates before its first step), so a network option that does not fit its config fails here.
Commands of ``sweep``, ``report`` and ``analyze`` are checked against their ``--help``: every option they use exists.
Commands with placeholders (``<file>``, ``...``, ``SWEEP_FILE``) or a checkpoint of a paper-sized run are templates,
not commands; they are listed by :func:`is_template`.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
import yaml
from conftest import run_entry

from hyperrl.commands import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SUBCOMMANDS = ("fit", "validate", "sweep", "report", "analyze")
#: a placeholder or a shortened command: ``<file>``, ``...``, ``[--out DIR]``, ``SWEEP_FILE``, ``conf/X.yaml``, ``a|b``
PLACEHOLDER = re.compile(r"\.\.\.|…|<|\[-|/[A-Z]\b|\b[A-Z][A-Z_]{2,}\b|\|")


def _commands_in(text: str) -> list[str]:
    """The ``hyperrl SUBCOMMAND ...`` commands in a Markdown text: code-block lines (backslash continuations joined,
    ``# comments`` dropped) and inline code spans."""
    found = []
    text = re.sub(r"\\\n\s*", " ", text)
    blocks = re.findall(r"```[^\n]*\n(.*?)```", text, re.S)
    prose = re.sub(r"```[^\n]*\n.*?```", "", text, flags=re.S)
    indented = [line for line in prose.splitlines() if line.startswith("    ")]
    pattern = re.compile(rf"\bhyperrl (?:{'|'.join(SUBCOMMANDS)})\b.*")
    for line in [*"\n".join(blocks).splitlines(), *indented]:
        match = pattern.search(line)
        if match:
            found.append(re.split(r"\s+#", match.group(0))[0])
    for span in re.findall(r"`([^`]+)`", re.sub(r"^    .*$", "", prose, flags=re.M)):
        match = pattern.search(" ".join(span.split()))
        if match:
            found.append(match.group(0))
    return [" ".join(c.split()) for c in found]


def is_template(command: str) -> bool:
    """A command shown as a pattern or named in prose (``hyperrl sweep``), or one that needs a checkpoint of a
    paper-sized run (resume, validate)."""
    words = command.split()
    named_only = len(words) <= (3 if words[1] == "analyze" else 2)
    return named_only or bool(PLACEHOLDER.search(command)) or "--ckpt_path" in command or "--ckpt " in command


def documented_commands() -> list[str]:
    commands = []
    for path in DOCS:
        commands += [c for c in _commands_in(path.read_text()) if c not in commands]
    return commands


RUNNABLE = [c for c in documented_commands() if not is_template(c)]


def test_the_documented_commands_are_found():
    """The extraction sees the README's commands (a broken extractor would make every test below vacuous)."""
    assert "hyperrl fit --config conf/meta/quickstart.yaml --model.init_args.policy context_mlp" in RUNNABLE
    assert "hyperrl fit --config conf/quickstart.yaml" in RUNNABLE
    assert any(c.startswith("hyperrl sweep ") for c in RUNNABLE)
    assert len(RUNNABLE) >= 15, RUNNABLE


@pytest.fixture(autouse=True)
def _no_stale_log_streams(no_stale_log_streams):
    pass


def _args(command: str) -> list[str]:
    args = shlex.split(command)[1:]  # without "hyperrl"
    return [str(ROOT / a) if a.startswith("conf/") else a for a in args]


@pytest.mark.parametrize("command", [c for c in RUNNABLE if c.split()[1] == "fit"])
def test_documented_fit_command_parses_and_builds_its_model(command, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = _args(command)
    if "--help" in args or any(a.endswith(".help") for a in args):  # also a class's settings: --model.critic.help X
        code, out, err = run_entry(main, args, capsys)
        assert code == 0 and ("--model" in out or "Help for --" in out), f"{command}\n{err}"
        return
    code, out, err = run_entry(main, [*args, "--print_config"], capsys)
    assert code == 0, f"{command}\n{err}"
    model = yaml.safe_load(out)["model"]
    if model is None:  # no config: nothing to build
        return
    module, name = model["class_path"].rsplit(".", 1)
    getattr(importlib.import_module(module), name)(**model["init_args"])


@pytest.mark.parametrize("command", [c for c in RUNNABLE if c.split()[1] in ("sweep", "report", "analyze")])
def test_documented_experiment_command_uses_existing_options(command, capsys):
    args = _args(command)
    head = args[:2] if args[0] == "analyze" else args[:1]
    code, out, err = run_entry(main, [*head, "--help"], capsys)
    assert code == 0, err
    options = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    missing = sorted(o for o in options if o not in out)
    assert not missing, f"{command}: {missing} not in `hyperrl {' '.join(head)} --help`"
