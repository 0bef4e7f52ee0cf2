"""Schedulers from one `make_scheduler(name, config, flow_shift)`, all in flow-matching form as Wan is trained.

unipc: UniPC multistep (Wan's default). dpmpp: DPM-Solver++ 2M (the report's "DPM"). euler: flow-match Euler
(what distilled few-step LoRAs use). flow_shift 0 keeps the checkpoint's own (3.0; diffusers' examples use
5.0 for 720p).

Undo: `apply_scheduler` returns a `SchedulerUndo` holding the scheduler it replaced (None when it keeps the
checkpoint's own); `remove_scheduler` puts that one back.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from wan_ui.optim.state import Undo


def make_scheduler(name: str, config, flow_shift: float):
    shift = flow_shift or config.get("flow_shift", 3.0) or 3.0
    common = dict(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)
    if name == "unipc":
        return UniPCMultistepScheduler.from_config(config, **common)
    if name == "dpmpp":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2, **common)
    if name == "euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=config.get("num_train_timesteps", 1000), shift=shift)
    raise ValueError(f"unknown scheduler {name!r}")


@dataclass
class SchedulerUndo(Undo):
    original: object  # the pipeline's scheduler before apply (the checkpoint's own UniPC)


def apply_scheduler(pipe, opts, request=None) -> SchedulerUndo | None:
    if opts.scheduler == "unipc" and not opts.flow_shift:
        return None  # the checkpoint's own scheduler, untouched
    undo = SchedulerUndo(pipe.scheduler)
    pipe.scheduler = make_scheduler(opts.scheduler, undo.original.config, opts.flow_shift)
    return undo


def remove_scheduler(pipe, undo: SchedulerUndo) -> None:
    pipe.scheduler = undo.original
