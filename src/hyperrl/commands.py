"""The ``hyperrl`` console entry point: the experiment commands, and everything else to the LightningCLI.

    hyperrl sweep SWEEP_FILE [--out DIR] [--address ADDR] [--max-parallel N] [--retries N] [-- FIT OPTIONS]
    hyperrl report SWEEP_FOLDER [--out DIR]
    hyperrl analyze gradients RUN_OR_SWEEP_FOLDER [--states N] [--actions K] [--rollouts M] [--hold H] [--out DIR]
    hyperrl analyze pg-variance ...
    hyperrl fit|validate|... (hyperrl.cli)

Each experiment module is imported only when its command runs, so ``hyperrl --help`` costs no more than before.
A :class:`~hyperrl.errors.ConfigurationError` ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import importlib
import os
import sys

EXPERIMENT_HELP = """
experiment commands (hyperrl COMMAND --help for their options):
  sweep               run a grid of fits from a sweep file (conf/sweeps/) on Ray Tune
  report              IQM learning curves, final-performance tables and P(improvement) of a sweep folder
  analyze gradients   critic action-gradient vs Monte-Carlo gradient on a run's analysis snapshots
  analyze pg-variance policy-gradient variance analysis
"""

#: command -> "module:function"; the function takes the remaining arguments and returns an exit status
COMMANDS = {
    "sweep": "hyperrl.experiments.sweep:main",
    "report": "hyperrl.experiments.report:main",
    ("analyze", "gradients"): "hyperrl.analysis.gradients:main",
    ("analyze", "pg-variance"): "hyperrl.analysis.pg_variance:main",
}


def _error(message: str) -> None:
    print(f"hyperrl: error: {message}", file=sys.stderr)
    sys.exit(2)


def _target(argv: list[str]) -> tuple[str | None, list[str]]:
    if not argv:
        return None, argv
    if argv[0] in ("sweep", "report"):
        return COMMANDS[argv[0]], argv[1:]
    if argv[0] == "analyze":
        if len(argv) < 2 or argv[1] in ("-h", "--help"):
            print("usage: hyperrl analyze {gradients,pg-variance} ...\n" + EXPERIMENT_HELP)
            sys.exit(0 if len(argv) >= 2 else 2)
        key = ("analyze", argv[1])
        if key not in COMMANDS:
            _error(f"unknown analysis {argv[1]!r}: expected gradients or pg-variance")
        return COMMANDS[key], argv[2:]
    return None, argv


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    # before torch is imported: OpenMP threads spinning while they wait make small ops crawl on shared cores
    # (docs/benchmarks.md, "Shared machines")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    target, rest = _target(argv)
    if target is None:
        from hyperrl.cli import main as cli_main

        if not argv or argv[0] in ("-h", "--help"):
            try:
                cli_main(argv)
            finally:  # after the CLI's own help (which may end with SystemExit)
                print(EXPERIMENT_HELP, end="", file=sys.stdout if argv else sys.stderr)
            return
        cli_main(argv)
        return
    module_name, function = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        _error(f"hyperrl {' '.join(argv[:2])} is not available in this installation (no module {module_name})")
    from hyperrl.errors import ConfigurationError

    try:
        code = getattr(module, function)(rest)
    except ConfigurationError as exc:
        _error(" ".join(str(exc).split()))
    except KeyboardInterrupt:
        print("hyperrl: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(int(code or 0))


if __name__ == "__main__":
    main()
