"""What every benchmark row records about the machine: GPU, driver, CUDA, library versions, date.

Cheap and side-effect free; never imports gradio, lpips or open_clip (versions are read from package
metadata, not by importing).
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import time
from importlib import metadata

import torch

VERSIONED = ("torch", "diffusers", "transformers", "accelerate", "peft", "safetensors", "huggingface_hub", "numpy",
             "torchao", "bitsandbytes", "sageattention", "triton", "nvidia-ml-py", "open_clip_torch", "lpips")


def package_versions() -> dict[str, str | None]:
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _driver_version() -> str | None:
    try:
        import pynvml  # optional: NVML exists only where an NVIDIA driver is installed (nvidia-smi is the fallback)

        pynvml.nvmlInit()
        try:
            v = pynvml.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else str(v)
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def hardware_record() -> dict:
    """GPU 0 (or the CPU) as the benchmark saw it."""
    rec = {"device": "cpu", "gpu_name": None, "gpu_count": 0, "capability": None, "total_memory_mb": None,
           "driver": None, "cuda": torch.version.cuda, "cudnn": None, "cpu": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count(), "platform": platform.platform()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        rec.update(device="cuda", gpu_name=props.name, gpu_count=torch.cuda.device_count(),
                   capability=f"{props.major}.{props.minor}", total_memory_mb=round(props.total_memory / 2**20),
                   driver=_driver_version(), cudnn=torch.backends.cudnn.version())
    return rec


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def card_label(hardware: dict) -> str:
    """Short name for file names: the first known card family in the GPU's name ('NVIDIA H100 80GB HBM3' ->
    'h100'), else the name itself shortened; 'cpu' on CPU."""
    name = hardware.get("gpu_name") or "cpu"
    for key in ("H200", "H100", "A100", "L40S", "L4", "A10G", "4090", "3090"):
        if key in name.upper():
            return key.lower()
    return "".join(c for c in name.lower().replace(" ", "-") if c.isalnum() or c == "-")[:24] or "gpu"


def command_line(args: list[str]) -> str:
    """The benchmark's command as one would type it (`python -m wan_ui.bench ...`)."""
    return shlex.join(["python", "-m", "wan_ui.bench", *args])
