"""The app's cluster setup (`python app.py --ray ADDRESS [--ray-workers N]`): connect to the Ray cluster, start one
generation worker per GPU of it (or `--ray-workers` of them), and hand the app a `RayPool` where a model manager
goes. ADDRESS: `auto` (the cluster this machine joined with `ray start`), `HOST:PORT` of the head node,
`ray://HOST:10001` (Ray Client), or `local` (start a one-machine cluster here, for trying it)."""

from __future__ import annotations

import socket
from pathlib import Path

import wan_ui
from wan_ui.cluster.pool import RayPool
from wan_ui.cluster.worker import import_ray
from wan_ui.core.errors import UnavailableError, ValidationError, first_line

# a worker's first start on a node: Ray unpacks our package there (`code_env`), the worker imports torch and
# diffusers; seconds, generous for a cold disk
START_TIMEOUT_S = 600.0
PROBE_TIMEOUT_S = 5.0  # seconds for the head's port to answer; Ray itself retries an unreachable address for minutes
NAMED_ADDRESSES = ("auto", "local")


def build_ray_pool(address: str, workers: int | None = None, log=print) -> RayPool:
    """Connect (`connect`), size (`worker_count`) and start the workers; raises UnavailableError naming --ray."""
    ray = connect(address)
    count, gpu = worker_count(ray.cluster_resources(), workers, log)
    pool = RayPool.start(count, gpu, log=log, timeout_s=START_TIMEOUT_S)
    log(pool.describe())
    return pool


def connect(address: str):
    """The `ray` module connected to the cluster at `address`, this package shipped to its workers (`code_env`).
    A process already connected (a test's cluster, a notebook) keeps its connection and its runtime environment."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    if address not in NAMED_ADDRESSES:
        probe(address)
    try:
        ray.init(address=None if address == "local" else address, runtime_env=code_env())
    except (ConnectionError, RuntimeError, ValueError) as e:  # no cluster at `auto`, a version mismatch, ...
        raise UnavailableError(f"--ray {address}: cannot connect to a Ray cluster ({type(e).__name__}: "
                               f"{first_line(e, 200)}); start one with `ray start --head` (docs/SCALING.md)",
                               field="ray") from None
    return ray


def probe(address: str) -> None:
    """The head's HOST:PORT (or ray://HOST:PORT) accepts a TCP connection within PROBE_TIMEOUT_S, else a clear error
    at once (ray.init would retry for minutes before failing)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValidationError(f"--ray expects auto, local, HOST:PORT or ray://HOST:PORT; got {address!r}",
                              field="ray")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as e:
        raise UnavailableError(f"--ray {address}: nothing answers at {host}:{port} ({e.strerror or type(e).__name__});"
                               f" is the head node started (`ray start --head`) and its port open to this machine?",
                               field="ray") from None


def worker_count(resources: dict, asked: int | None, log=print) -> tuple[int, bool]:
    """(workers, on GPUs?) for a cluster with `resources` (ray.cluster_resources()): one per GPU, at most `asked`;
    on a cluster without GPUs one CPU worker (or `asked`, at most one per CPU)."""
    if asked is not None and asked < 1:
        raise ValidationError(f"--ray-workers must be 1 or more, got {asked}", field="ray_workers")
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if gpus:
        if asked is not None and asked > gpus:
            log(f"--ray-workers {asked}: the cluster has {gpus} GPU(s); starting {gpus} workers")
        return min(asked or gpus, gpus), True
    if asked is not None and asked > cpus:
        raise ValidationError(f"--ray-workers {asked}: the cluster has no GPU and {cpus} CPU(s), one per CPU worker",
                              field="ray_workers")
    log("the Ray cluster has no GPU: the workers run on CPUs (the tiny model is the one to try)")
    return asked or 1, False


def code_env() -> dict:
    """Ray's runtime environment for this app's workers (a job-level one: Ray uploads local folders only from
    `ray.init`): this package's own code, shipped to every node (`py_modules`), so a worker runs exactly the app's
    version; the nodes need its dependencies installed (requirements.txt)."""
    return {"py_modules": [str(Path(wan_ui.__file__).parent)]}
