"""Reaching Ray for ``hyperrl sweep``: a bounded check that a cluster's address answers, and ``ray.init`` with the
check that some node can ever run a trial of the sweep's resources (Tune would otherwise wait for one forever)."""

from __future__ import annotations

import os
import re
import socket

from hyperrl.errors import ConfigurationError


def check_reachable(given: str | None) -> None:
    match = re.match(r"^(?:ray://)?(\[[^\]]+\]|[^:/\s\[\]]+):(\d+)$", given.strip()) if given else None
    if match:  # a bounded TCP connect first: Ray retries an unreachable address for minutes
        try:
            socket.create_connection((match.group(1).strip("[]"), int(match.group(2))), timeout=10).close()
        except OSError as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
            raise ConfigurationError(f"cannot reach the Ray cluster at {given!r} ({reason} within 10 s): is the "
                                     "head node up (ray start --head) and its port open?") from None


def connect_ray(address: str | None, resources: dict, report=print) -> None:
    """``ray.init`` (a local instance without ``address`` or ``RAY_ADDRESS``), then check that some node can ever run
    a trial of ``resources``: Tune would otherwise wait for one forever."""
    import logging

    import ray

    given = address or os.environ.get("RAY_ADDRESS") or None
    logging.getLogger("ray").setLevel(logging.ERROR)
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)  # Ray's and Tune's notes: the sweep prints its own lines
    os.environ.update(RAY_AIR_NEW_OUTPUT="0", TUNE_PRINT_ALL_TRIAL_ERRORS="0")  # (Tune's tables ignore verbose=0)
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR, include_dashboard=False)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ...: the address is the problem
        text = " ".join(str(exc).split("Traceback")[0].split()) or type(exc).__name__
        raise ConfigurationError(f"cannot connect to Ray {given or 'local instance'}: {text[:300]}") from None
    nodes, total = [n for n in ray.nodes() if n.get("Alive")], ray.cluster_resources()
    report(f"Ray at {given or 'a local instance'}: {len(nodes)} node(s), {total.get('CPU', 0):g} CPUs, "
           f"{total.get('GPU', 0):g} GPUs")
    cpus, gpus = float(resources.get("cpus", 1)), float(resources.get("gpus", 0))
    if not any(n["Resources"].get("CPU", 0) >= cpus and n["Resources"].get("GPU", 0) >= gpus for n in nodes):
        request = f"resources {{cpus: {cpus:g}, gpus: {gpus:g}}}"
        if given is None:  # the instance this sweep started: it will never grow
            ray.shutdown()
            raise ConfigurationError(f"no node of the local Ray instance can run a trial of {request}: lower the "
                                     "sweep file's resources or give --address of a cluster that has them")
        report(f"Ray: no node has {request} yet; the runs wait until one joins the cluster")
