"""What this machine can run: CUDA, compute capability, optional packages. Probed once per call, cheap."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import MutableMapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Hardware:
    cuda: bool
    device_name: str
    capability: tuple[int, int] | None  # (major, minor) of GPU 0
    total_memory_mb: float | None
    packages: frozenset[str]  # optional packages that import here

    @property
    def device(self) -> str:
        return "cuda" if self.cuda else "cpu"

    def has(self, package: str) -> bool:
        return package in self.packages


OPTIONAL_PACKAGES = ("bitsandbytes", "torchao", "sageattention", "xformers", "flash_attn", "pynvml", "open_clip",
                     "lpips", "spaces", "triton", "flash_attn.cute")  # flash_attn.cute: FlashAttention-4 (flash-attn-4)


def _found(module: str) -> bool:
    """Whether `module` is installed, without importing it (a dotted name's parent is imported by find_spec)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # the parent package is missing
        return False


def probe_hardware() -> Hardware:
    pkgs = frozenset(p for p in OPTIONAL_PACKAGES if _found(p))
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Hardware(True, props.name, (props.major, props.minor), props.total_memory / 2**20, pkgs)
    return Hardware(False, "cpu", None, None, pkgs)


ALLOC_CONF_DEFAULT = "expandable_segments:True"


def configure_allocator(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Default PyTorch's CUDA caching allocator to expandable segments, unless the user set its configuration
    (`PYTORCH_CUDA_ALLOC_CONF`, `PYTORCH_ALLOC_CONF` as torch >= 2.9 calls it, or ROCm's `PYTORCH_HIP_ALLOC_CONF`):
    their setting is kept.

    Why: the Low VRAM presets run close to the card's size, where a fixed-size-block allocator can fail on fragmentation
    with memory free; the same capped run that ran out of memory with the default allocator finished with expandable
    segments (docs/RELIABILITY.md, "An OOM with memory free"). torch reads the setting when CUDA's allocator starts, so
    the entry points (app, CLI, benchmark, training) call this first. Returns the value set, or None when the user's own
    setting was kept."""
    if any(name in environ for name in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF", "PYTORCH_HIP_ALLOC_CONF")):
        return None
    environ["PYTORCH_CUDA_ALLOC_CONF"] = ALLOC_CONF_DEFAULT
    return ALLOC_CONF_DEFAULT
