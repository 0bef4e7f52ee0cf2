"""The app's side of the cluster: `RayPool`, a `ManagerPool` whose members are Ray actors on the cluster's GPUs.

`RemoteWorker` stands for one `GenerationWorker` actor where the pool expects a model manager: its hardware and
device, the cache key of a request, its resident pipelines (as of its last reply), `clear`, `lease`. The pool's
lease is ManagerPool's: a free worker that already holds the requested pipeline, then an empty one, then the one
released longest ago, and with every worker busy it waits; the app's queue admits `slots` jobs (one per worker).

`generate()` (core) hands the whole job to the leased worker's `run_remote`: it submits the actor's `run` task and,
until its ObjectRef is ready, polls the actor every POLL_S for progress and the live preview, and turns a set
cancel flag into `ray.cancel` of the task. A worker that dies mid-job (killed, out of host memory, its node lost)
is restarted by Ray (`max_restarts`); its job fails with `WorkerLostError` naming the node, and the next job on it
runs on the restarted actor.
"""

from __future__ import annotations

import contextlib
import threading
import uuid

import torch

from wan_ui.cluster.worker import GenerationWorker, import_ray
from wan_ui.core.devices import describe_host
from wan_ui.core.errors import GenerationCancelled, UnavailableError, UserError, first_line
from wan_ui.core.models import resolve_model
from wan_ui.core.options import OptimizationSet
from wan_ui.parallel.pool import ManagerPool

POLL_S = 0.2  # seconds between the app's polls of a running job: the progress bar's and a cancel's delay
# Ray restarts a dead worker without limit (-1): a crash fails only the job it was running, never later ones
MAX_RESTARTS = -1
# seconds a job waits for a worker that Ray is restarting (importing torch and diffusers takes tens of seconds; a
# restart that needs a GPU no node has free never ends)
RESTART_WAIT_S = 300.0
# the worker's reads (describe, poll, clear) are retried through a restart: they wait for the restarted worker
MAX_TASK_RETRIES = -1
# a job and its progress polls are not (0 retries): the job may be what killed the worker, and its user decides;
# a poll that fails says at once that the worker is gone
NO_RETRIES = {"max_task_retries": 0}
# `run` plus the app's `poll` and `clear` side by side; the manager's lease keeps jobs one at a time
MAX_CONCURRENCY = 4


class WorkerLostError(UserError):
    """The Ray worker running a job died (killed, out of host memory, its node lost): the job is lost, Ray restarts
    the worker, and the message names the node."""


def actor_options(gpu: bool) -> dict:
    """Ray's options for one GenerationWorker: a whole GPU (or one CPU on a cluster without GPUs), restarted when it
    dies, threaded, spread over the nodes."""
    resources = {"num_gpus": 1} if gpu else {"num_cpus": 1}
    return {**resources, "max_restarts": MAX_RESTARTS, "max_task_retries": MAX_TASK_RETRIES,
            "max_concurrency": MAX_CONCURRENCY, "scheduling_strategy": "SPREAD"}


class RemoteWorker:
    """One GenerationWorker actor, as the pool and generate() see it."""

    def __init__(self, actor, described: dict, log=print):
        self.actor = actor
        self.hw = described["hw"]  # the worker's hardware: what check_available judges options against
        self.device = described["device"]  # on the worker ("cuda": the GPU Ray gave it)
        self.where = described["where"]  # node and GPU, refreshed by every reply (a restart may move it)
        self.log = log
        self.placement = None  # set by ManagerPool (unused: the worker's own placement is in its results)
        self.load_lock = None  # set by ManagerPool: the app host's lock (training loads models here)
        self._resident = list(described["resident"])  # as of the worker's last reply
        self._job_lock = threading.RLock()

    # ---- what ManagerPool asks of a manager ------------------------------------------------------------
    def key(self, model, opts: OptimizationSet) -> tuple:
        return (resolve_model(model, self.hw.cuda).name, opts.load_key())  # as ModelManager.key on the worker

    def resident(self) -> list[tuple]:
        return list(self._resident)

    def clear(self) -> None:
        ray = import_ray()
        self._resident = ray.get(self.actor.clear.remote())

    def refresh(self, timeout_s: float | None = None) -> None:
        """Where the worker runs and what it holds now (after a restart: maybe another node, nothing resident)."""
        described = import_ray().get(self.actor.describe.remote(), timeout=timeout_s)
        self.hw, self.where, self._resident = described["hw"], described["where"], list(described["resident"])

    @contextlib.contextmanager
    def lease(self, model=None, opts=None):
        """The worker for one job (a batch leases from the pool, then generate() leases the leased worker again)."""
        with self._job_lock:
            yield self

    def get(self, model, opts, request=None):
        raise UnavailableError("this needs the pipeline in the app's own process (the tuner does); with --ray the "
                               "pipelines live on the cluster's workers: run `python -m wan_ui.tune` on a GPU node",
                               field="ray")

    # ---- the job --------------------------------------------------------------------------------------------
    def run_remote(self, model, request, opts, write: bool = True, on_progress=None, cancel=None, on_preview=None):
        """The whole job on this worker. Returns (Result without a path, (mp4 bytes, sidecar metadata) or None when
        nothing was to be written). Raises what a local run raises; WorkerLostError when the worker died."""
        ray = import_ray()
        try:  # after a loss this waits while Ray restarts the worker: the job runs on the new one
            self.refresh(RESTART_WAIT_S)
        except ray.exceptions.RayError as e:
            raise WorkerLostError(f"the worker on {describe_host(self.where)} is not back after {RESTART_WAIT_S:.0f} s"
                                  f" ({type(e).__name__}); `ray status` shows whether the cluster has room for it: "
                                  f"try again later", field="ray") from None
        job_id = uuid.uuid4().hex
        task = self.actor.run.options(**NO_RETRIES).remote(job_id, model, request, opts, write, on_preview is not None)
        try:
            reply = self._wait(ray, task, job_id, on_progress, cancel, on_preview)
        except ray.exceptions.TaskCancelledError:
            raise GenerationCancelled(self._cancel_message(ray, job_id)) from None
        except ray.exceptions.RayTaskError:
            raise  # a failure inside the worker's own code: an internal error, logged with the remote traceback
        except ray.exceptions.RayError as e:  # the actor died or its node was lost (ActorDiedError, ...)
            self._resident = []  # the restarted actor starts empty
            raise WorkerLostError(f"the worker on {describe_host(self.where)} was lost during this job "
                                  f"({type(e).__name__}: {first_line(e, 200)}); Ray restarts it, nothing was "
                                  f"written: run the job again", field="ray") from None
        self.where, self._resident = reply.where, reply.resident
        if reply.error is not None:
            raise reply.error
        return reply.result, None if reply.video is None else (reply.video, reply.metadata)

    def _wait(self, ray, task, job_id: str, on_progress, cancel, on_preview):
        """Until the task's ObjectRef is ready: relay progress and previews, forward a cancel (once); then what
        the last poll missed (the last preview of a short run)."""
        cancelled = False
        poll = self.actor.poll.options(**NO_RETRIES)
        while not ray.wait([task], timeout=POLL_S)[0]:
            if cancel is not None and cancel.is_set() and not cancelled:
                ray.cancel(task)  # sets the running task's flag, which the worker's step check reads
                cancelled = True
            _relay(ray.get(poll.remote(job_id)), on_progress, on_preview)
        reply = ray.get(task)
        try:
            _relay(ray.get(poll.remote(job_id)), on_progress, on_preview)
        except ray.exceptions.RayActorError:
            pass  # the job's reply is here; only its last progress line is lost
        return reply

    def _cancel_message(self, ray, job_id: str) -> str:
        """How the worker said it stopped ('cancelled after step 3 of 50'), with where; Ray's TaskCancelledError
        replaces the task's own reply."""
        try:
            ended = ray.get(self.actor.poll.remote(job_id))["ended"]
        except ray.exceptions.RayError:
            ended = None
        return f"{ended or 'cancelled before it started'} on {describe_host(self.where)}"


def _relay(polled: dict, on_progress, on_preview) -> None:
    if on_progress is not None:
        for phase, done, total in polled["events"]:
            on_progress(phase, done, total)
    if on_preview is not None and polled["preview"] is not None:
        on_preview(*polled["preview"])


class RayPool(ManagerPool):
    """ManagerPool's lease over the workers of a Ray cluster. What runs on the app's own host (quality scoring,
    training) uses this host's device; the options are judged against the workers' hardware (`hw`)."""

    def __init__(self, workers: list[RemoteWorker], log=print):
        super().__init__(workers)
        self._log = log

    @classmethod
    def start(cls, count: int, gpu: bool, log=print, timeout_s: float | None = None) -> RayPool:
        """`count` GenerationWorker actors (one GPU each when `gpu`), started and described. Raises
        UnavailableError naming --ray when they do not come up within `timeout_s` (None: wait)."""
        ray = import_ray()
        remote = ray.remote(GenerationWorker).options(**actor_options(gpu))
        actors = [remote.remote(i, count) for i in range(count)]
        try:
            described = ray.get([a.describe.remote() for a in actors], timeout=timeout_s)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayError) as e:
            for a in actors:
                ray.kill(a)
            raise UnavailableError(f"--ray: the {count} generation worker(s) did not start ({type(e).__name__}: "
                                   f"{first_line(e, 200)}); `ray status` shows the cluster's free GPUs, Ray's logs "
                                   f"(/tmp/ray/session_latest/logs) why a worker failed", field="ray") from None
        return cls([RemoteWorker(a, d, log) for a, d in zip(actors, described)], log)

    @property
    def workers(self) -> list[RemoteWorker]:
        return self.managers

    @property
    def device(self) -> str:  # this host's: the quality scorer and training run here
        return "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def log(self):
        return self._log

    def busy(self) -> list[str]:
        with self._cond:
            return [describe_host(w.where) for w in self.managers if w not in self._free]

    def describe(self) -> str:
        """One line for the app's start-up log."""
        return f"Ray cluster: {self.slots} worker(s): " + "; ".join(describe_host(w.where) for w in self.managers)

    def close(self) -> None:
        """End the workers (for good: no restart)."""
        ray = import_ray()
        for w in self.managers:
            ray.kill(w.actor)
