"""What this machine can run: CUDA, compute capability, optional packages. Probed once per call, cheap."""

from __future__ import annotations

import importlib.util
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
                     "lpips", "spaces")


def probe_hardware() -> Hardware:
    pkgs = frozenset(p for p in OPTIONAL_PACKAGES if importlib.util.find_spec(p) is not None)
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Hardware(True, props.name, (props.major, props.minor), props.total_memory / 2**20, pkgs)
    return Hardware(False, "cpu", None, None, pkgs)
