"""Live GPU readings for the UI's Hardware panel: memory used/free, utilisation, temperature, power (NVML).

On a machine without an NVIDIA driver (CPU runs, CI) every read returns None and `reason` says why, so the
panel shows "no GPU" instead of failing. NVML is initialised once per monitor and read on each timer tick;
the per-run peak is measured separately by `metrics.NvmlSampler`. Both read the GPU torch calls cuda:<index>,
found in NVML by UUID or PCI location (`metrics.nvml_handle_for`: NVML ignores CUDA_VISIBLE_DEVICES).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from wan_ui.core.metrics import AUTO, GpuIdentity, nvml_handle_for, resolve_identity


@dataclass(frozen=True)
class GpuStats:
    name: str
    used_mb: float  # device memory in use by all processes, MiB (as nvidia-smi shows)
    free_mb: float
    total_mb: float
    util_pct: float | None  # SM utilisation over NVML's last sample period, %
    temperature_c: float | None
    power_w: float | None  # board power draw, W
    time_s: float  # time.time() of the reading

    def markdown(self) -> str:
        def opt(v, fmt):
            return fmt.format(v) if v is not None else "n/a"

        return (f"**{self.name}** — memory used **{self.used_mb:,.0f} MiB**, free {self.free_mb:,.0f} MiB "
                f"of {self.total_mb:,.0f} MiB · utilisation {opt(self.util_pct, '{:.0f} %')} · "
                f"temperature {opt(self.temperature_c, '{:.0f} °C')} · power {opt(self.power_w, '{:.0f} W')}")


class GpuMonitor:
    """`read()` -> GpuStats or None for torch's cuda:<index>. `identity` as in `metrics.NvmlSampler` (AUTO: read
    from torch; None: NVML's device `index`). `nvml` is the pynvml module or a stand-in with the same calls
    (tests)."""

    def __init__(self, index: int = 0, nvml=None, identity: GpuIdentity | str | None = AUTO):
        self.index = index
        self._nvml = nvml
        self._injected = nvml is not None
        self.identity = identity
        self._handle = None
        self._lock = threading.Lock()
        self.reason: str | None = None  # why there are no readings ("no GPU: ...")

    def _open(self):
        if self._handle is not None or self.reason is not None:
            return self._handle
        try:
            if self._nvml is None:
                import pynvml  # optional: NVML exists only where an NVIDIA driver is installed

                self._nvml = pynvml
            self._nvml.nvmlInit()
            want = resolve_identity(self.identity, self.index, self._injected)
            self._handle = nvml_handle_for(self._nvml, self.index, want)
        except Exception as e:  # no driver, no device, package missing, no NVML device matches: "no GPU" here
            self.reason = f"no GPU: NVML unavailable ({type(e).__name__}: {e})"
        return self._handle

    @property
    def available(self) -> bool:
        with self._lock:
            return self._open() is not None

    def read(self) -> GpuStats | None:
        with self._lock:
            handle = self._open()
            if handle is None:
                return None
            nvml = self._nvml
            try:
                mem = nvml.nvmlDeviceGetMemoryInfo(handle)
                name = nvml.nvmlDeviceGetName(handle)
            except Exception as e:
                self.reason = f"no GPU: NVML read failed ({e})"
                self._handle = None
                return None
            return GpuStats(
                name=name.decode() if isinstance(name, bytes) else str(name),
                used_mb=mem.used / 2**20, free_mb=mem.free / 2**20, total_mb=mem.total / 2**20,
                util_pct=_optional(lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                temperature_c=_optional(lambda: nvml.nvmlDeviceGetTemperature(handle, 0)),  # 0 = NVML_TEMPERATURE_GPU
                power_w=_optional(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),  # NVML reports mW
                time_s=time.time(),
            )

    def markdown(self) -> str:
        stats = self.read()
        return stats.markdown() if stats else (self.reason or "no GPU")


def _optional(read):
    """Some boards do not report power or temperature; NVML raises NotSupported for those."""
    try:
        return float(read())
    except Exception:
        return None
