"""Which NVML device is torch's cuda:N: UUID first, PCI location second, never a guess (no GPU needed: NVML and
torch's device properties are faked). NVML numbers every GPU of the machine; torch numbers those
CUDA_VISIBLE_DEVICES leaves, so the ordinals differ as soon as it is set."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from wan_ui.core.gpu_monitor import GpuMonitor
from wan_ui.core.metrics import (AUTO, GpuIdentity, NvmlSampler, cuda_identity, match_gpu, normalize_uuid,
                                 nvml_handle_for, nvml_identity, resolve_identity)

MIB = 2**20
UUIDS = ["GPU-0a0a0a0a-0000-0000-0000-000000000000", "GPU-1b1b1b1b-1111-1111-1111-111111111111",
         "GPU-2C2C2C2C-2222-2222-2222-222222222222", "GPU-3d3d3d3d-3333-3333-3333-333333333333"]


class FourGpuNvml:
    """A machine with four GPUs as NVML sees them (its own order, PCI buses 0x1a, 0x3b, 0x5c, 0x7d); device i has
    (i + 1) GiB in use, so a reading tells which device was read."""

    def __init__(self, uuids=UUIDS, buses=(0x1A, 0x3B, 0x5C, 0x7D), bytes_uuid: bool = False):
        self.uuids, self.buses, self.bytes_uuid = list(uuids), list(buses), bytes_uuid
        self.inits = self.shutdowns = 0

    def nvmlInit(self):
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return len(self.uuids)

    def nvmlDeviceGetHandleByIndex(self, i):
        if not 0 <= i < len(self.uuids):
            raise RuntimeError("Invalid Argument")
        return ("nvml", i)

    def nvmlDeviceGetUUID(self, handle):
        uuid = self.uuids[handle[1]]
        if uuid is None:
            raise RuntimeError("NotSupported")
        return uuid.encode() if self.bytes_uuid else uuid

    def nvmlDeviceGetPciInfo(self, handle):
        return SimpleNamespace(domain=0, bus=self.buses[handle[1]], device=0,
                               busId=f"00000000:{self.buses[handle[1]]:02X}:00.0".encode())

    def nvmlDeviceGetMemoryInfo(self, handle):
        used = (handle[1] + 1) * 1024 * MIB
        return SimpleNamespace(used=used, free=80 * 1024 * MIB - used, total=80 * 1024 * MIB)

    def nvmlDeviceGetName(self, handle):
        return f"GPU {handle[1]}"


def torch_sees(nvml_index: int) -> GpuIdentity:
    """torch's identity of the GPU NVML calls `nvml_index`: its UUID without 'GPU-', lower case, and its PCI ids."""
    return GpuIdentity(normalize_uuid(UUIDS[nvml_index][4:].lower()), (0, FourGpuNvml().buses[nvml_index], 0))


def test_uuid_forms_of_torch_and_nvml_compare_equal():
    assert normalize_uuid("GPU-2C2C2C2C-2222-2222-2222-222222222222") == "2c2c2c2c-2222-2222-2222-222222222222"
    assert normalize_uuid(b"GPU-2c2c2c2c-2222-2222-2222-222222222222") == normalize_uuid(
        "2c2c2c2c-2222-2222-2222-222222222222")
    assert normalize_uuid("MIG-abc") == "abc" and normalize_uuid(None) is None and normalize_uuid("") is None


def test_match_by_uuid_when_cuda_visible_devices_remaps_ordinals():
    nvml = FourGpuNvml()
    candidates = [nvml_identity(nvml, nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(4)]
    # CUDA_VISIBLE_DEVICES=2,3: torch's cuda:0 is NVML's device 2, cuda:1 is device 3
    assert match_gpu(torch_sees(2), candidates) == 2
    assert match_gpu(torch_sees(3), candidates) == 3
    # the UUID decides even when the PCI ids torch reports would point elsewhere
    assert match_gpu(GpuIdentity(torch_sees(1).uuid, (0, 0x7D, 0)), candidates) == 1


def test_match_falls_back_to_the_pci_location():
    nvml = FourGpuNvml(uuids=[UUIDS[0], None, UUIDS[2], UUIDS[3]])  # device 1 cannot report its UUID
    candidates = [nvml_identity(nvml, nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(4)]
    assert candidates[1] == GpuIdentity(None, (0, 0x3B, 0))
    assert match_gpu(torch_sees(1), candidates) == 1
    # a MIG instance: torch reports the instance's UUID, which is no NVML device's; its PCI location is its GPU's
    mig = GpuIdentity("9f9f9f9f-9999-9999-9999-999999999999", (0, 0x5C, 0))
    assert match_gpu(mig, candidates) == 2
    assert match_gpu(GpuIdentity(None, (0, 0x5C, 0)), candidates) == 2  # torch without a UUID field


def test_no_match_or_two_matches_is_none_never_a_guess():
    candidates = [GpuIdentity("a", (0, 1, 0)), GpuIdentity("b", (0, 2, 0)), GpuIdentity("c", (0, 2, 0))]
    assert match_gpu(GpuIdentity("z", (0, 9, 0)), candidates) is None
    assert match_gpu(GpuIdentity("z", (0, 2, 0)), candidates) is None  # two GPUs at one PCI location: ambiguous
    assert match_gpu(GpuIdentity("c", (0, 2, 0)), candidates) == 2  # the UUID settles it
    assert match_gpu(GpuIdentity(None, None), candidates) is None


def test_nvml_handle_for_searches_by_identity_and_says_when_nothing_matches():
    nvml = FourGpuNvml(bytes_uuid=True)  # older nvidia-ml-py returns bytes
    assert nvml_handle_for(nvml, 0, torch_sees(2)) == ("nvml", 2)
    assert nvml_handle_for(nvml, 0, None) == ("nvml", 0)  # no identity: NVML's device of the same ordinal
    assert nvml_handle_for(nvml, 1, GpuIdentity()) == ("nvml", 1)
    with pytest.raises(LookupError, match="no NVML device matches cuda:0"):
        nvml_handle_for(nvml, 0, GpuIdentity("ffffffff-0000-0000-0000-000000000000", (0, 0x99, 0)))


def test_identity_from_torch_device_properties(monkeypatch):
    props = SimpleNamespace(uuid="5C2c2c2c-2222-2222-2222-222222222222", pci_domain_id=0, pci_bus_id=0x5C,
                            pci_device_id=0)
    monkeypatch.setattr("torch.cuda.get_device_properties", lambda i: props)
    assert cuda_identity(0) == GpuIdentity("5c2c2c2c-2222-2222-2222-222222222222", (0, 0x5C, 0))
    monkeypatch.setattr("torch.cuda.get_device_properties", lambda i: SimpleNamespace(name="old torch"))
    assert cuda_identity(0) == GpuIdentity(None, None)


def test_resolve_identity_reads_torch_only_for_the_real_nvml(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("wan_ui.core.metrics.cuda_identity", lambda i: torch_sees(3))
    assert resolve_identity(AUTO, 1, nvml_injected=False) == torch_sees(3)
    assert resolve_identity(AUTO, 1, nvml_injected=True) is None  # a stand-in NVML describes no real GPU
    assert resolve_identity(torch_sees(0), 1, nvml_injected=True) == torch_sees(0)
    assert resolve_identity(None, 1, nvml_injected=False) is None
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert resolve_identity(AUTO, 1, nvml_injected=False) is None


def test_sampler_and_monitor_read_the_gpu_the_run_used():
    """CUDA_VISIBLE_DEVICES=2,3 and the run on cuda:1: both must read NVML's device 3 (4 GiB used), not device 1."""
    nvml = FourGpuNvml()
    with NvmlSampler(index=1, hz=100, nvml=nvml, identity=torch_sees(3)) as sampler:
        time.sleep(0.05)
    assert sampler.error is None and sampler.stop() == 4 * 1024
    stats = GpuMonitor(index=1, nvml=nvml, identity=torch_sees(3)).read()
    assert (stats.name, stats.used_mb) == ("GPU 3", 4 * 1024)
    # a GPU NVML does not list: an error that says so, no sample of another GPU
    lost = GpuIdentity("ffffffff-0000-0000-0000-000000000000", (0, 0x99, 0))
    other = FourGpuNvml()
    sampler = NvmlSampler(index=0, nvml=other, identity=lost).start()
    assert sampler.error.startswith("NVML unavailable: LookupError: no NVML device matches cuda:0")
    assert sampler.stop() is None and other.inits == other.shutdowns == 1  # NVML shut down again
    monitor = GpuMonitor(index=0, nvml=nvml, identity=lost)
    assert monitor.read() is None and "no NVML device matches" in monitor.reason
