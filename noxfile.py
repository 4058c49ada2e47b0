"""Developer tasks. ``nox -s tests`` builds a fresh virtualenv, installs hyperrl with its test extras, runs pytest."""

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests"]


@nox.session
def tests(session: nox.Session) -> None:
    """The full test suite (CPU, small widths). With the ray extra, so the ``hyperrl sweep`` tests run on a real
    local Ray Tune instance."""
    session.install("-e", ".[test,ray]")
    # one torch thread unless the caller sets another count: the tests' networks are tiny, and the fits the tests
    # start run beside the test process on the same cores (docs/benchmarks.md, "The test suite's threads")
    threads = os.environ.get("OMP_NUM_THREADS", "1")
    session.run("pytest", "-q", "--timeout=900", *session.posargs,
                env={"MUJOCO_GL": "egl", "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": threads})


@nox.session
def benchmarks(session: nox.Session) -> None:
    """Quick versions of the speed benchmarks; prints one JSON line per script."""
    session.install("-e", ".")
    session.run("python", "benchmarks/update_speed.py", "--quick")
    session.run("python", "benchmarks/overhead.py", "--quick")
    session.run("python", "benchmarks/collector_step.py", "--quick")
    session.run("python", "benchmarks/meta_batch_sampling.py", "--quick")
    session.run("python", "benchmarks/multitask_collection.py", "--quick")


@nox.session
def lint(session: nox.Session) -> None:
    """Pyflakes-level checks (unused imports/names, syntax) with ruff."""
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks", "--select", "F,E9")
