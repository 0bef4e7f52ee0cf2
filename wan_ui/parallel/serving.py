"""The app's GPU setup (`python app.py --gpus 0,1 [--gpu-mode pool|parallel]`): one manager, a pool of one per
GPU, or this rank's share of one video across them; and the followers (rank > 0) of a serving parallel app,
which run every job rank 0 announces."""

from __future__ import annotations

import atexit
import os
import sys

import torch

from wan_ui.core.errors import GenerationCancelled, UserError
from wan_ui.core.generate import generate
from wan_ui.core.manager import ModelManager
from wan_ui.parallel.dist import NVLS_OFF, init_distributed, receive
from wan_ui.parallel.plan import ParallelConfig
from wan_ui.parallel.pool import ManagerPool
from wan_ui.parallel.runtime import ParallelRuntime

GPU_MODES = ("pool", "parallel")


def parse_gpus(text: str | None) -> list[int] | None:
    """'0,1,3' -> [0, 1, 3]; None/'' -> None (one default device)."""
    if not text:
        return None
    try:
        gpus = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--gpus expects GPU indices like 0,1; got {text!r}", field="gpus") from None
    if not gpus or len(set(gpus)) != len(gpus) or min(gpus) < 0:
        raise UserError(f"--gpus expects distinct GPU indices like 0,1; got {text!r}", field="gpus")
    return gpus


def relaunch_command(argv: list[str], gpus: list[int]) -> tuple[list[str], dict]:
    """`python app.py ... --gpu-mode parallel` outside torchrun -> (command, env) that starts one process per GPU
    (rank 0 serves the UI) with only those GPUs visible and NVLink multicast off."""
    env = {**os.environ, **NVLS_OFF, "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(len(gpus)),
            *argv], env


def build_app_manager(gpus: list[int] | None, mode: str = "pool", parallel: str | None = None, log=print):
    """The app's manager: one ModelManager (no --gpus), a ManagerPool over the GPUs (pool), or this rank's manager
    of one video across them (parallel, under torchrun; followers run the leader's jobs here and get None)."""
    if mode not in GPU_MODES:
        raise UserError(f"--gpu-mode must be one of {list(GPU_MODES)}, got {mode!r}", field="gpu_mode")
    if gpus is None:
        return ModelManager(log=log)
    visible = torch.cuda.device_count()
    if mode == "pool":
        if max(gpus) >= visible:
            raise UserError(f"--gpus {','.join(map(str, gpus))}: this machine shows {visible} CUDA device(s)",
                            field="gpus")
        return ManagerPool.for_devices([f"cuda:{i}" for i in gpus], log=log)
    runtime = ParallelRuntime(ParallelConfig.parse(parallel or "auto"), init_distributed(serving=True), serving=True)
    if not runtime.dist.leader:
        follow_jobs(ModelManager(device=runtime.dist.device, log=lambda m: None, parallel=runtime), log=log)
        return None
    atexit.register(runtime.stop_followers)  # the followers return when the app stops
    return ModelManager(device=runtime.dist.device, log=log, parallel=runtime)


def follow_jobs(manager, log=print) -> int:
    """Followers (rank > 0) of a serving app: run every job the leader announces until it sends None."""
    done = 0
    while True:
        job = receive(manager.parallel.dist)
        if job is None:
            return done
        model, request, opts = job
        try:
            generate(manager, model, request, opts, out_dir=None)
            done += 1
        except (UserError, GenerationCancelled) as e:  # the leader saw the same and told its user
            log(f"rank {manager.parallel.dist.rank}: job ended: {e}")
