"""Device helpers the core needs when several GPUs share one process (`device_scope`: CUDA's current device is
per thread, and synchronize / peak-memory calls read it), and how a run was placed on the GPUs."""

from __future__ import annotations

import contextlib

import torch


def device_index(device: str) -> int | None:
    """'cuda:1' -> 1; 'cuda' -> None (the current device); 'cpu' -> None."""
    kind, _, index = str(device).partition(":")
    return int(index) if kind == "cuda" and index else None


def is_cuda(device: str) -> bool:
    return str(device).split(":")[0] == "cuda"


def device_scope(device: str):
    """Make `device` CUDA's current device for this thread (a no-op for 'cuda' and 'cpu')."""
    index = device_index(device)
    if index is None or not torch.cuda.is_available():
        return contextlib.nullcontext()
    return torch.cuda.device(index)


def describe_placement(placement: dict | None, device: str | None = None) -> str:
    """One line for the UI's Others panel: how a run used the GPUs. `placement` is BuildInfo.parallel: a pool's
    dict, a parallel.ParallelPlan dict, or None."""
    if not placement:
        return f"one device ({device})" if device else "one device"
    mode = placement.get("mode")
    if mode == "pool":
        devices = ", ".join(placement.get("devices") or [])
        return f"pool of {placement['gpus']} GPUs ({devices}): one pipeline per GPU, each job on a free one" + \
            (f"; this run on {device}" if device else "")
    if mode == "ray":  # a cluster worker's own placement (wan_ui/cluster/worker.py)
        n = placement["workers"]
        return (f"Ray cluster of {n} worker{'s' if n != 1 else ''}: one pipeline per worker, each job on a free one; "
                f"this run on worker {placement['worker'] + 1}")
    n = placement.get("world_size")
    if mode == "cfg":
        return f"one video on {n} GPUs: CFG-parallel (cond branch on rank 0, uncond on rank 1)"
    kinds = [f"Ulysses {placement['ulysses_degree']}" if placement.get("ulysses_degree", 1) > 1 else "",
             f"ring {placement['ring_degree']}" if placement.get("ring_degree", 1) > 1 else ""]
    return f"one video on {n} GPUs: {' x '.join(k for k in kinds if k)} ({placement.get('reason', '')})"


def describe_host(placement: dict | None, device: str | None = None) -> str:
    """One line for the Others panel: which machine and GPU ran a job. A Ray worker's node and card, else this
    host's device ('this host, cuda:0')."""
    if not placement or placement.get("mode") != "ray":
        return f"this host, {device}" if device else "this host"
    card = f"GPU {','.join(placement['gpus'])} ({placement['gpu_name']})" if placement.get("gpus") else "CPU"
    return f"node {placement['hostname']} ({placement['node_ip']}, Ray node {placement['node_id'][:12]}), {card}"
