"""The Ray actor that runs the app's jobs on one GPU of a cluster node (`GenerationWorker`).

Each worker holds one core `ModelManager`, on the GPU Ray gave it (Ray sets the actor's CUDA_VISIBLE_DEVICES to
that card, so the manager's "cuda" is it) or on the CPU of a cluster without GPUs, and runs core `generate()` for
one job at a time. The actor is threaded (`max_concurrency` in `pool.actor_options`): while `run` works, the app
polls `poll` for the job's progress and live preview. A cancel is Ray's own: the app calls `ray.cancel` on the
`run` task, which sets the task's cancellation flag; `generate()`'s step check reads it (`_TaskCancelFlag`) and
stops at the end of the current step, as a local run stops on its `threading.Event`.

A job's video is encoded here into a temporary folder and sent back as mp4 bytes with its sidecar's metadata; the
app writes both on its own host (core/generate.py). User errors and a cancel come back as the same exception
objects a local run raises, so the page shows the same toast.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from wan_ui.core.errors import GenerationCancelled, UnavailableError, UserError
from wan_ui.core.generate import Result, generate
from wan_ui.core.manager import ModelManager
from wan_ui.core.options import OptimizationSet
from wan_ui.core.requests import GenerationRequest

JOBS_KEPT = 8  # finished jobs whose record a worker keeps for the app's last poll (a cancelled task's reply is lost)


def import_ray():
    """The `ray` module, or an UnavailableError naming --ray when it is not installed."""
    try:
        import ray  # optional at run time: only --ray needs it (requirements.txt pins it); one host never loads it
    except ImportError:
        raise UnavailableError("--ray needs Ray, which is not installed here: pip install -r requirements.txt "
                               "(or pip install ray) on this machine and on every node of the cluster",
                               field="ray") from None
    return ray


@dataclass
class WorkerReply:
    """What `GenerationWorker.run` sends back to the app."""
    result: Result | None  # frames, validated request, build info, metrics; video_path None (the mp4 is `video`)
    video: bytes | None  # the mp4 the worker encoded; None when no video was asked for, or on an error
    metadata: dict | None  # the sidecar the worker wrote beside it (the same JSON is in the mp4's comment tag)
    resident: list  # the worker's resident pipeline keys after the job (what the pool's lease prefers)
    where: dict  # the worker's node and GPU (`GenerationWorker.where`)
    error: BaseException | None = None  # a UserError or GenerationCancelled, raised again on the app's side


class _Job:
    """One job's record: progress events and the latest preview since the app's last poll, and how it ended."""

    def __init__(self):
        self._lock = threading.Lock()
        self._events: list[tuple[str, int, int]] = []  # generate()'s on_progress(phase, done, total) calls
        self._preview: tuple | None = None  # on_preview(step, (h, w, 3) uint8 image, seconds), the latest only
        self.ended: str | None = None  # the message of the GenerationCancelled it stopped with

    def on_progress(self, phase: str, done: int, total: int) -> None:
        with self._lock:
            self._events.append((phase, done, total))

    def on_preview(self, step: int, image, seconds: float) -> None:
        with self._lock:
            self._preview = (step, image, seconds)

    def take(self) -> dict:
        """What happened since the last call: {"events", "preview" (or None), "ended" (or None)}."""
        with self._lock:
            out = {"events": self._events, "preview": self._preview, "ended": self.ended}
            self._events, self._preview = [], None
        return out


class _TaskCancelFlag:
    """generate()'s cancel flag inside the actor: set once the app called `ray.cancel` on this `run` task. Ray keeps
    the flag per task (`RuntimeContext.is_canceled`) and generate() reads it from the task's own thread (the
    denoising loop's step callback and the check after the decode run there)."""

    def __init__(self, ray):
        self._context = ray.get_runtime_context()

    def is_set(self) -> bool:
        return self._context.is_canceled()


class GenerationWorker:
    """One Ray actor: a model manager on one GPU (or the CPU) of a node, one job at a time (the manager's lease)."""

    def __init__(self, index: int, workers: int):
        ray = import_ray()
        self.manager = ModelManager(log=print)  # "cuda" = the GPU Ray assigned; print reaches the app's console
        gpus = [str(g) for g in ray.get_gpu_ids()]
        hw = self.manager.hw
        self.where = {"mode": "ray", "workers": workers, "worker": index,
                      "node_id": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname(),
                      "node_ip": ray.util.get_node_ip_address(), "gpus": gpus,
                      "gpu_name": hw.device_name if hw.cuda else None, "device": self.manager.device,
                      "pid": os.getpid()}  # a restarted worker is a new process
        self.manager.placement = self.where  # every Result's build.parallel says where it ran
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._lock = threading.Lock()

    def describe(self) -> dict:
        """What the app's pool needs of this worker: where it runs, its hardware and device, its resident keys."""
        return {"where": self.where, "hw": self.manager.hw, "device": self.manager.device,
                "resident": self.manager.resident()}

    def clear(self) -> list:
        self.manager.clear()
        return self.manager.resident()

    def poll(self, job_id: str) -> dict:
        """The job's progress and preview since the last poll (`_Job.take`); empty for a job this worker never ran."""
        with self._lock:
            job = self._jobs.get(job_id)
        return job.take() if job is not None else {"events": [], "preview": None, "ended": None}

    def run(self, job_id: str, model: str | None, request: GenerationRequest, opts: OptimizationSet,
            write: bool, preview: bool) -> WorkerReply:
        """One job: core generate() with a video written to a temporary folder when `write`, sent back as bytes."""
        ray = import_ray()
        job = self._open(job_id)
        try:
            with tempfile.TemporaryDirectory(prefix="wan_ui-job-") as folder:
                result = generate(self.manager, model, request, opts, out_dir=folder if write else None,
                                  on_progress=job.on_progress, cancel=_TaskCancelFlag(ray),
                                  on_preview=job.on_preview if preview else None)
                video, metadata = _take_video(result)
        except GenerationCancelled as e:
            job.ended = str(e)  # Ray answers a cancelled task with TaskCancelledError: the app polls this instead
            return self._reply(None, error=e)
        except UserError as e:
            return self._reply(None, error=e)
        return self._reply(result, video, metadata)

    def _open(self, job_id: str) -> _Job:
        with self._lock:
            job = self._jobs[job_id] = _Job()
            while len(self._jobs) > JOBS_KEPT:
                self._jobs.popitem(last=False)
        return job

    def _reply(self, result, video=None, metadata=None, error=None) -> WorkerReply:
        return WorkerReply(result, video, metadata, self.manager.resident(), self.where, error)


def _take_video(result: Result) -> tuple[bytes | None, dict | None]:
    """The mp4 generate() wrote and its sidecar, read back before the temporary folder goes; the Result's path is
    cleared (it named a file on this node)."""
    if result.video_path is None:
        return None, None
    path = Path(result.video_path)
    result.video_path = None
    return path.read_bytes(), json.loads(path.with_suffix(".json").read_text())
