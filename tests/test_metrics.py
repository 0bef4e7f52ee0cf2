"""The metrics engine: phase timing of a real tiny generation, the arithmetic, warm-up, the NVML sampler
(NVML faked on CPU: start/stop without leaking threads, sampling rate, error paths) and peak memory over the
whole run and per phase (torch.cuda's counters faked)."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest

from wan_ui.core.metrics import Metrics, NvmlSampler, frame_metrics, warmup_from_steps

MIB = 2**20


# ---- one real generation ----------------------------------------------------------------------------

@pytest.fixture
def tiny_result(manager, smoke_request):
    from wan_ui.core.generate import generate
    from wan_ui.core.options import OptimizationSet

    t0 = time.perf_counter()
    result = generate(manager, "tiny", smoke_request, OptimizationSet(), out_dir=None)
    return result, time.perf_counter() - t0


def test_phases_sum_to_clip_latency(tiny_result):
    result, wall = tiny_result
    m = result.metrics
    assert set(m.phases) == {"text_encode_s", "denoise_s", "decode_s"}
    assert all(v > 0 for v in m.phases.values())
    assert sum(m.phases.values()) == pytest.approx(m.clip_latency_s, rel=0.01, abs=1e-3)
    assert 0 < m.clip_latency_s <= wall  # the clip is a part of the whole call (which also loads the model)
    assert len(m.step_latencies_s) == result.request.num_inference_steps
    assert sum(m.step_latencies_s) <= m.phases["denoise_s"] + 1e-6  # steps happen inside the denoise phase


def test_frame_latency_and_throughput_of_a_generation(tiny_result):
    result, _ = tiny_result
    m, frames = result.metrics, result.frames.shape[0]
    assert frames == result.request.num_frames
    assert m.frame_latency_s == pytest.approx(m.clip_latency_s / frames)
    assert m.throughput_fps == pytest.approx(frames / m.clip_latency_s)
    assert m.frame_latency_s * m.throughput_fps == pytest.approx(1.0)


def test_cpu_memory_is_null_with_a_reason_never_zero(tiny_result):
    m = tiny_result[0].metrics
    assert m.peak_vram_mb is None and m.peak_reserved_mb is None and m.nvml_peak_used_mb is None
    assert m.vram_note and "CPU" in m.vram_note
    json.dumps(m.to_dict(), allow_nan=False)


def test_warmup_on_first_generation_then_zero(manager, smoke_request, tiny_result):
    from wan_ui.core.generate import generate
    from wan_ui.core.options import OptimizationSet

    first = tiny_result[0].metrics
    assert first.rebuilt is True
    assert first.warmup_time_s == warmup_from_steps(first.step_latencies_s, [(2, True)] * 2)  # CFG, no cache
    again = generate(manager, "tiny", smoke_request, OptimizationSet(), out_dir=None).metrics
    assert again.rebuilt is False and again.warmup_time_s == 0.0


# ---- arithmetic ---------------------------------------------------------------------------------------

def test_frame_metrics_arithmetic():
    assert frame_metrics(2.0, 8) == (0.25, 4.0)
    assert frame_metrics(40.5, 81) == pytest.approx((0.5, 2.0))
    latency, fps = frame_metrics(3.0, 9)
    assert latency * 9 == pytest.approx(3.0) and fps * 3.0 == pytest.approx(9)


def test_warmup_from_steps():
    same = lambda n: [(2, True)] * n  # noqa: E731 — every step did the same work
    assert warmup_from_steps([], same(0)) is None
    assert warmup_from_steps([1.0], same(1)) is None  # one step: nothing to compare with
    assert warmup_from_steps([5.0, 1.0, 2.0, 3.0], same(4)) == pytest.approx(3.0)  # 5 - median(1, 2, 3)
    assert warmup_from_steps([9.0, 1.0, 2.0, 3.0, 100.0], same(5)) == pytest.approx(6.5)  # resists one outlier
    assert warmup_from_steps([1.0, 2.0, 3.0], same(3)) == 0.0  # a fast first step is no negative warm-up


def test_warmup_compares_steps_that_did_the_same_work():
    # the H200 "Low VRAM" run: MagCache skips most steps (0.02 s); the first step is a normal 6.6 s dense step
    steps = [6.65, 6.55, 6.54, 0.02, 0.02, 0.02, 3.4, 0.02, 0.02]
    kinds = [(2, True)] * 3 + [(0, True)] * 3 + [(1, True)] + [(0, True)] * 2
    assert warmup_from_steps(steps, kinds) == pytest.approx(0.105)
    # sparse after 1 dense step, as the distilled sparse preset: no later dense step, so no steady reference
    assert warmup_from_steps([4.0, 1.1, 1.1, 1.1], [(1, True)] + [(1, False)] * 3) is None
    # unknown kinds (a cache deciding from activations): the second step is the reference
    assert warmup_from_steps([8.0, 3.0, 0.1, 0.1], None) == pytest.approx(5.0)
    # the first sparse step compiles the sparse kernel: counted with the first dense step's warm-up
    kinds = [(2, True)] * 2 + [(2, False)] * 3
    assert warmup_from_steps([3.5, 3.0, 1.8, 1.0, 1.0], kinds) == pytest.approx(0.5 + 0.8)


def test_step_kinds_follow_cache_cfg_and_sparse_schedules():
    from wan_ui.core.generate import step_kinds
    from wan_ui.optim.cache import forwards_computed_mag
    from wan_ui.core.options import OptimizationSet, preset
    from wan_ui.core.requests import WORKLOADS

    req = WORKLOADS["report"].request
    kinds = step_kinds(req, preset("Fast (sparse)"))
    assert len(kinds) == 65 and kinds[0] == (2, True) and kinds[1] == (2, True) and kinds[2] == (2, False)
    assert sum(k[0] for k in kinds) == forwards_computed_mag(65, req.guidance_scale, 0.5, 0.0, 4) == 45
    assert kinds[-1][0] in (0, 1)  # after CFG truncation: at most the conditional branch
    assert step_kinds(req, OptimizationSet()) == [(2, True)] * 65
    sta = step_kinds(req, OptimizationSet().with_(sparse_attention="sta"))  # sparse_dense_steps -1: STA's 12/50
    assert [k[1] for k in sta] == [True] * 16 + [False] * 49
    assert step_kinds(req, OptimizationSet().with_(cache="first_block")) is None


def test_forwards_skipped():
    assert Metrics(forwards_planned=10, forwards_computed=7).forwards_skipped == 3
    assert Metrics().forwards_skipped is None


# ---- the NVML sampler, faked -------------------------------------------------------------------------

class FakeNvml:
    """The four pynvml calls the sampler uses. Memory used grows 1 MiB per read; counts init/shutdown."""

    def __init__(self, fail_init: bool = False, fail_handle: bool = False, fail_read_after: int | None = None):
        self.fail_init, self.fail_handle, self.fail_read_after = fail_init, fail_handle, fail_read_after
        self.inits = self.shutdowns = self.reads = 0
        self._lock = threading.Lock()

    def nvmlInit(self):
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")
        self.inits += 1

    def nvmlDeviceGetHandleByIndex(self, index):
        if self.fail_handle:
            raise RuntimeError("Invalid Argument")
        return ("handle", index)

    def nvmlDeviceGetMemoryInfo(self, handle):
        with self._lock:
            self.reads += 1
            if self.fail_read_after is not None and self.reads > self.fail_read_after:
                raise RuntimeError("GPU is lost")
            return SimpleNamespace(used=(1000 + self.reads) * MIB, total=80_000 * MIB, free=0)

    def nvmlShutdown(self):
        self.shutdowns += 1


def _sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "nvml-sampler" and t.is_alive()]


def test_sampler_starts_and_stops_fifty_times_without_leaking_threads():
    fake = FakeNvml()
    baseline = threading.active_count()
    sampler = NvmlSampler(hz=50, nvml=fake)
    for i in range(50):
        sampler.start()
        assert len(_sampler_threads()) == 1
        time.sleep(0.002)
        peak = sampler.stop()
        assert _sampler_threads() == [] and threading.active_count() == baseline
        assert peak == max(s[1] for s in sampler.samples) and sampler.error is None
    assert fake.inits == fake.shutdowns == 50
    # a fresh start clears the last run's samples; start while running restarts without a second thread
    sampler.start()
    sampler.start()
    assert len(_sampler_threads()) == 1
    sampler.stop()
    sampler.stop()  # stopping twice is harmless
    assert _sampler_threads() == [] and fake.inits == fake.shutdowns == 52


def test_sampler_rate_is_at_least_4_hz_and_peak_is_the_max():
    fake = FakeNvml()
    with NvmlSampler(nvml=fake) as sampler:  # default 10 Hz
        time.sleep(1.2)
    times = [t for t, _ in sampler.samples]
    assert len(times) >= 5, times
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert rate >= 4.0, rate
    assert max(b - a for a, b in zip(times, times[1:])) < 0.5  # no long stall between samples
    assert sampler.stop() == max(mb for _, mb in sampler.samples) == 1000 + fake.reads
    assert _sampler_threads() == []


def test_sampler_init_failure_is_an_error_not_a_thread():
    fake = FakeNvml(fail_init=True)
    sampler = NvmlSampler(nvml=fake).start()
    assert sampler.error.startswith("NVML unavailable: RuntimeError: NVML Shared Library Not Found")
    assert _sampler_threads() == []
    assert sampler.stop() is None and fake.shutdowns == 0
    fake.fail_init = False  # the driver comes back: the next run samples again
    sampler.start()
    assert sampler.error is None
    time.sleep(0.05)
    assert sampler.stop() is not None and _sampler_threads() == []


def test_sampler_handle_failure_is_an_error():
    sampler = NvmlSampler(nvml=FakeNvml(fail_handle=True)).start()
    assert sampler.error.startswith("NVML unavailable: RuntimeError: Invalid Argument")
    assert _sampler_threads() == [] and sampler.stop() is None


def test_sampler_read_failure_ends_the_thread_and_keeps_earlier_samples():
    fake = FakeNvml(fail_read_after=2)
    sampler = NvmlSampler(hz=100, nvml=fake).start()
    deadline = time.perf_counter() + 5
    while not sampler.error and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert sampler.error == "NVML read failed: GPU is lost"
    assert sampler.stop() == 1002 and len(sampler.samples) == 2
    assert _sampler_threads() == [] and fake.shutdowns == 1


# ---- peak memory over the whole run, per phase (torch.cuda faked) ---------------------------------------

class FakeCudaMemory:
    """torch.cuda's peak counters: `use(allocated, reserved)` sets what is in use now (MiB); the peaks follow it
    and `reset_peak_memory_stats` sets them back to what is in use, as torch does."""

    def __init__(self):
        self.allocated = self.reserved = 0.0
        self.peak_allocated = self.peak_reserved = 0.0
        self.resets = 0

    def use(self, allocated: float, reserved: float) -> None:
        self.allocated, self.reserved = allocated, reserved
        self.peak_allocated = max(self.peak_allocated, allocated)
        self.peak_reserved = max(self.peak_reserved, reserved)

    def synchronize(self):
        pass

    def reset_peak_memory_stats(self):
        self.resets += 1
        self.peak_allocated, self.peak_reserved = self.allocated, self.reserved

    def max_memory_allocated(self):
        return self.peak_allocated * MIB

    def max_memory_reserved(self):
        return self.peak_reserved * MIB


def test_run_peaks_cover_every_phase_and_the_moments_between_them():
    from wan_ui.core.metrics import Clock

    mem = FakeCudaMemory()
    clock = Clock("cpu", memory=mem)  # an injected reader measures on any device
    assert clock.cuda
    mem.use(1000, 2000)
    clock.start_run()
    with clock.phase("text_encode"):
        mem.use(5000, 6000)
        mem.use(1000, 6000)
    mem.use(1000, 2000)  # the allocator's cache emptied after the text encoder
    mem.use(7000, 7500)  # between phases (e.g. the CFG batch is built): no phase sees it
    mem.use(1000, 2000)
    with clock.phase("denoise"):
        mem.use(3000, 4000)
    with clock.phase("decode"):
        mem.use(4000, 4500)
    assert clock.peaks == {"text_encode": 5000, "denoise": 3000, "decode": 4000}
    assert clock.reserved_peaks == {"text_encode": 6000, "denoise": 4000, "decode": 4500}
    # the run's peaks: the largest anywhere in the run, not the last phase's (reserved) nor the phases' (allocated)
    assert clock.vram() == (7000, 7500, None)


def test_peak_reserved_is_the_whole_runs_in_a_generation(manager, smoke_request, monkeypatch):
    """generate() on the tiny model with torch.cuda's counters faked: the text encode phase reserves the most,
    so a run peak read after the decode phase alone would be too low."""
    import wan_ui.core.generate as gen
    from wan_ui.core.metrics import Clock
    from wan_ui.core.options import OptimizationSet

    mem = FakeCudaMemory()
    by_phase = {"text_encode": (2000, 8000), "denoise": (3000, 3500), "decode": (2500, 4000)}

    class FakeCudaClock(Clock):
        def __init__(self, device):
            super().__init__(device, memory=mem)

        def phase(self, name):
            inner = super().phase(name)

            class _Phase:
                def __enter__(self):
                    inner.__enter__()
                    mem.use(*by_phase[name])
                    return self

                def __exit__(self, *exc):
                    inner.__exit__(*exc)
                    mem.use(100, 100)  # what stays between phases
                    return False

            return _Phase()

    monkeypatch.setattr(gen, "Clock", FakeCudaClock)
    monkeypatch.setattr(gen, "NvmlSampler", lambda **kw: NvmlSampler(nvml=FakeNvml(), identity=None, **kw))
    m = gen.generate(manager, "tiny", smoke_request, OptimizationSet(), out_dir=None).metrics
    assert m.phase_peak_vram_mb == {k: a for k, (a, _) in by_phase.items()}
    assert m.phase_peak_reserved_mb == {k: r for k, (_, r) in by_phase.items()}
    assert (m.peak_vram_mb, m.peak_reserved_mb) == (3000, 8000)
    assert m.nvml_peak_used_mb is not None and m.vram_note is None
