"""Developer tasks. ``nox -s tests`` builds a fresh virtualenv, installs hyperrl with its test extras, runs pytest."""

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests"]


@nox.session
def tests(session: nox.Session) -> None:
    """The full test suite (CPU, small widths). With the ray extra, so the ``hyperrl sweep`` tests run on a real
    local Ray Tune instance."""
    session.install("-e", ".[test,ray]")
    session.run("pytest", "-q", "--timeout=900", *session.posargs, env={"MUJOCO_GL": "egl", "OMP_WAIT_POLICY": "PASSIVE"})


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
