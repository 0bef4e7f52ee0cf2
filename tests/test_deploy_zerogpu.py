"""ZeroGPU (a fake `spaces` module stands in for the real one), the GPU-time estimate, the first start's model
download with progress, app.py's Space defaults, and quality metrics joining a video's metadata."""

from __future__ import annotations

import importlib.machinery
import json
import math
import pickle
import sys
import threading
import types
from pathlib import Path

import pytest
from ui_server import launches  # noqa: F401  (records create_demo's and launch's arguments; no server)

from wan_ui.core.options import OptimizationSet, preset
from wan_ui.core.requests import WORKLOADS, GenerationRequest
from wan_ui.ui.zerogpu import (FORWARD_A, FORWARD_B, MIN_S, ZEROGPU_SPEED, FileFlag, estimate_comparison_seconds,
                            estimate_gpu_seconds, estimate_gpu_time, gpu_function, mirrored_flag)

OFFICIAL = WORKLOADS["official480"].request
REPORT = WORKLOADS["report"].request
TINY = dict(prompt="a paper boat on a puddle", width=64, height=64, num_frames=9, num_inference_steps=2, seed=3)


# ---- the estimate -----------------------------------------------------------------------------------------
def test_forward_time_fit_reproduces_the_h200_floors():
    for tokens, seconds in ((32_760, 0.614), (87_750, 3.20)):
        assert FORWARD_A * tokens + FORWARD_B * tokens ** 2 == pytest.approx(seconds, rel=1e-9)
    assert OFFICIAL.tokens_per_forward() == 32_760 and REPORT.tokens_per_forward() == 87_750


def test_estimate_parts_for_the_official_workload():
    e = estimate_gpu_time(OFFICIAL, OptimizationSet())
    assert e.forwards == 100 and e.per_forward_s == pytest.approx(0.614)  # 50 steps x (cond + uncond)
    assert e.denoise_s == pytest.approx(61.4) and e.decode_s == pytest.approx(10.0, rel=0.02)  # fp32 VAE
    assert e.compile_s == 0 and e.quality_s == 0 and e.load_s > 0
    assert e.total_s == pytest.approx((1.0 + 61.4 + e.decode_s + e.load_s) * 1.25)
    assert estimate_gpu_seconds(OFFICIAL, OptimizationSet()) == e.seconds == math.ceil(e.total_s)


def test_estimate_grows_with_steps_frames_size_and_slower_options():
    base = estimate_gpu_seconds(OFFICIAL, OptimizationSet())
    for bigger in (OFFICIAL.__class__(**{**OFFICIAL.to_dict(), "num_inference_steps": 100, "notes": ()}),
                   OFFICIAL.__class__(**{**OFFICIAL.to_dict(), "num_frames": 161, "notes": ()}), REPORT):
        assert estimate_gpu_seconds(bigger, OptimizationSet()) > base
    # attention is quadratic: 2.7x the tokens costs more than 2.7x per forward
    assert estimate_gpu_time(REPORT, OptimizationSet()).per_forward_s > 2.7 * 0.614 * 1.5
    assert estimate_gpu_seconds(OFFICIAL, preset("Baseline (report)")) > 5 * base  # fp32: ~10x per forward
    assert estimate_gpu_seconds(OFFICIAL, OptimizationSet(cfg_truncation=0.5)) < base  # 75 forwards, not 100
    assert estimate_gpu_seconds(OFFICIAL, OptimizationSet(compile="regional")) > base  # warm-up compile
    assert estimate_gpu_seconds(OFFICIAL, OptimizationSet(), quality=True) > base
    assert estimate_gpu_seconds(OFFICIAL, OptimizationSet(), speed=ZEROGPU_SPEED) == pytest.approx(base / ZEROGPU_SPEED,
                                                                                                 abs=2)
    assert estimate_gpu_seconds(GenerationRequest(**TINY), OptimizationSet()) >= MIN_S


def test_comparison_estimate_loads_once_per_load_time_change():
    a, b = OptimizationSet(), OptimizationSet(cache="mag")  # run-time change only: no second load
    one = estimate_gpu_time(OFFICIAL, a).total_s
    two_same_load = estimate_comparison_seconds(OFFICIAL, [a, b])
    reload = OptimizationSet(text_encoder_precision="fp32")  # load-time change, same per-forward and decode time
    assert two_same_load < 2 * one and estimate_comparison_seconds(OFFICIAL, [a, reload]) > two_same_load
    assert estimate_comparison_seconds(OFFICIAL, [b, b], quality=True) > estimate_comparison_seconds(
        OFFICIAL, [a, b], quality=True)  # without a default set the baseline video is generated extra


# ---- running under spaces.GPU -----------------------------------------------------------------------------
class FakeSpaces(types.ModuleType):
    """`spaces` as on a ZeroGPU Space: GPU(duration=...) evaluates the duration with the call's arguments, and
    the call crosses a process boundary (arguments and result are pickled, as ZeroGPU's worker does)."""

    def __init__(self):
        super().__init__("spaces")
        self.__spec__ = importlib.machinery.ModuleSpec("spaces", None)  # find_spec("spaces") finds it
        self.calls: list[dict] = []

    def GPU(self, task=None, *, duration=None):  # noqa: N802 (the real name)
        def decorate(fn):
            def run(*args, **kwargs):
                args, kwargs = pickle.loads(pickle.dumps((args, kwargs)))
                self.calls.append({"task": fn.__name__, "duration": duration(*args, **kwargs), "args": args})
                return pickle.loads(pickle.dumps(fn(*args, **kwargs)))

            return run

        return decorate(task) if task is not None else decorate


class NotZeroGpuSpaces(types.ModuleType):
    """`spaces` installed but not on ZeroGPU: GPU returns the function unchanged."""

    def GPU(self, task=None, *, duration=None):  # noqa: N802
        return task if task is not None else (lambda fn: fn)


@pytest.fixture
def fake_spaces(monkeypatch):
    spaces = FakeSpaces()
    monkeypatch.setitem(sys.modules, "spaces", spaces)
    return spaces


def test_without_spaces_or_off_zerogpu_the_task_is_unchanged(monkeypatch):
    def task(cancel, x):
        return x

    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces -> ImportError
    assert gpu_function(task, lambda x: 1) is task
    assert gpu_function(task, lambda x: 1, spaces=NotZeroGpuSpaces("spaces")) is task


def test_the_cancel_event_crosses_into_the_worker_as_a_file_flag(fake_spaces):
    started, seen = threading.Event(), {}

    def task(cancel, n):
        seen["flag"] = cancel
        assert not cancel.is_set()
        started.set()
        for _ in range(200):  # the UI sets the event while the worker runs
            if cancel.is_set():
                return f"cancelled at {n}"
            threading.Event().wait(0.05)
        return "ran to the end"

    run = gpu_function(task, lambda n: 30 + n)
    event = threading.Event()
    threading.Thread(target=lambda: started.wait(10) and event.set(), daemon=True).start()
    assert run(event, 7) == "cancelled at 7"
    assert isinstance(seen["flag"], FileFlag) and not Path(seen["flag"].path).exists()  # removed afterwards
    assert fake_spaces.calls[0]["duration"] == 37


def test_mirrored_flag_of_none_is_none():
    with mirrored_flag(None) as flag:
        assert flag is None


@pytest.fixture
def zerogpu_ctx(fake_spaces, manager, tmp_path):
    from wan_ui.ui.compare_tab import compare_gpu_seconds, compare_task
    from wan_ui.ui.context import AppContext
    from wan_ui.ui.generate_tab import generate_gpu_seconds, generate_task

    ctx = AppContext(manager, model="tiny", outputs=tmp_path / "outputs", save_settings=False)
    ctx.gpu_generate = gpu_function(generate_task(ctx), generate_gpu_seconds)
    ctx.gpu_compare = gpu_function(compare_task(ctx), compare_gpu_seconds)
    return ctx


def no_progress(*args, **kwargs):
    pass


def test_generate_and_compare_run_under_spaces_gpu_with_estimated_durations(zerogpu_ctx, fake_spaces):
    from wan_ui.ui.compare_tab import run_compare
    from wan_ui.ui.generate_tab import run_generate

    shown, info = run_generate(zerogpu_ctx, {**TINY, "cache": "first_block"}, "s1", no_progress)
    assert shown["status"].startswith("Done") and Path(info["video"]).exists()
    call = fake_spaces.calls[-1]
    request, opts = call["args"][1], call["args"][2]
    assert call["task"] == "task" and opts.cache == "first_block"
    assert call["duration"] == estimate_gpu_seconds(request, opts, speed=ZEROGPU_SPEED)

    shown, comp = run_compare(zerogpu_ctx, {**TINY, "set_1_preset": "Defaults", "set_2_preset": "CPU quick"}, "s1",
                              no_progress)
    assert shown["status"].startswith("Compared 2 sets") and len(comp.runs) == 2
    sets = [o for _, o in fake_spaces.calls[-1]["args"][2]]
    assert fake_spaces.calls[-1]["duration"] == estimate_comparison_seconds(request, sets, speed=ZEROGPU_SPEED)


def test_zerogpu_refuses_compile_before_asking_for_a_gpu(zerogpu_ctx, fake_spaces):
    import gradio as gr

    from wan_ui.ui.generate_tab import run_generate

    with pytest.raises(gr.Error, match="does not run on ZeroGPU"):
        run_generate(zerogpu_ctx, {**TINY, "compile": "regional"}, "s1", no_progress)
    assert fake_spaces.calls == []


def test_a_cancelled_run_comes_back_as_a_status_not_a_worker_error(zerogpu_ctx, fake_spaces):
    from wan_ui.ui.generate_tab import run_generate

    timer = threading.Timer(1.0, lambda: zerogpu_ctx.runs.cancel("s2"))
    timer.start()
    shown, info = run_generate(zerogpu_ctx, {**TINY, "num_inference_steps": 200}, "s2", no_progress)
    timer.cancel()
    assert info is None and shown["status"].startswith("Cancelled: cancelled after step")


# ---- the first start's download -----------------------------------------------------------------------------
def fake_hub_fetch(checks):
    """Drives tqdm bars as huggingface_hub's snapshot_download does (files bar + bytes bar, console bars off)."""
    def fetch(tqdm_class):
        files = tqdm_class(total=2, desc="Fetching 2 files", unit="it", disable=True)
        written = tqdm_class(total=0, desc="Reconstructing (incomplete total...)", unit="B", disable=True)
        written.total = 4 * 2**30
        written.refresh()
        written.update(2**30)
        checks.append(("quarter",))
        files.update(1)
        written.update(3 * 2**30)
        files.update(1)
        return "/cache/snapshot"

    return fetch


def test_model_download_records_progress_for_the_page_and_the_log():
    from wan_ui.core.model_download import ModelDownload
    from wan_ui.core.models import resolve_model

    logs, checks = [], []
    dl = ModelDownload(resolve_model("Wan-AI/Wan2.1-T2V-1.3B-Diffusers"), log=logs.append)
    fetch = fake_hub_fetch(checks)

    def fetch_and_look(tqdm_class):
        folder = fetch(tqdm_class)
        checks.append((dl.state, dl.fraction(), dl.markdown()))
        return folder

    dl._fetch = fetch_and_look
    dl.run()
    state, fraction, markdown = checks[-1]
    assert state == "downloading" and fraction == 1.0
    assert "Downloading `Wan-AI/Wan2.1-T2V-1.3B-Diffusers`" in markdown and "4.00 GiB of 4.00 GiB" in markdown
    assert dl.state == "done" and dl.folder == "/cache/snapshot" and "is downloaded" in dl.markdown()
    assert any("downloading Wan-AI" in line for line in logs) and dl.finished.is_set()


def test_model_download_offline_fails_with_the_reason_and_the_app_stays_up():
    from wan_ui.core.model_download import ModelDownload
    from wan_ui.core.models import resolve_model

    dl = ModelDownload(resolve_model("nobody/no-such-model"), log=lambda m: None).start()
    assert dl.finished.wait(60)
    assert dl.state == "failed" and "could not download 'nobody/no-such-model'" in dl.markdown()
    dl.wait(progress=lambda *a, **k: pytest.fail("finished: no waiting"))


def test_the_page_shows_the_download_and_a_run_waits_for_it(manager, tmp_path):
    from wan_ui.core.model_download import ModelDownload
    from wan_ui.core.models import resolve_model
    from wan_ui.ui.app import create_demo

    release = threading.Event()
    dl = ModelDownload(resolve_model("Wan-AI/Wan2.1-T2V-1.3B-Diffusers"), log=lambda m: None,
                       fetch=lambda tqdm_class: release.wait(30) and "/cache/snapshot").start()
    demo = create_demo(manager, model="tiny", outputs=tmp_path, save_settings=False, downloads=dl)
    assert "model_download" in {fn.api_name for fn in demo.fns.values()}
    seen = []
    threading.Timer(0.3, release.set).start()
    dl.wait(progress=lambda fraction, desc: seen.append(desc), poll_s=0.05)
    assert seen and seen[0].startswith("downloading the model") and dl.state == "done"


# ---- app.py on a Space ----------------------------------------------------------------------------------------
def test_app_binds_gradio_server_name_as_spaces_set_it(launches, monkeypatch, tmp_path):
    import app

    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    assert app.main(["--outputs", str(tmp_path)]) == 0
    assert launches[0]["launch"]["server_name"] == "0.0.0.0" and launches[0]["create"]["downloads"] is None


def test_app_starts_the_hub_download_before_serving(launches, monkeypatch, tmp_path):
    import app
    from wan_ui.core.model_download import ModelDownload

    started = []
    monkeypatch.setattr(ModelDownload, "start", lambda self: started.append(self.source.name) or self)
    assert app.main(["--model", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "--outputs", str(tmp_path)]) == 0
    assert started == ["Wan-AI/Wan2.1-T2V-1.3B-Diffusers"]
    assert launches[0]["create"]["downloads"].source.name == started[0]


# ---- metadata: quality metrics join the sidecar and the mp4 ---------------------------------------------------
def test_quality_metrics_are_written_into_the_sidecar_and_the_mp4(manager, tmp_path, monkeypatch):
    from wan_ui.core.compare import measure_quality
    from wan_ui.core.generate import generate
    from wan_ui.core.quality import BaselineCache
    from wan_ui.core.settings_store import _embedded_metadata, settings_from_video
    from wan_ui.core.video import read_video

    def fake_score(result, scorer, reference, reference_request=None):  # the scorer's models: test_quality.py
        assert reference is not None  # a default-options run is its own baseline
        result.metrics.clip_score, result.metrics.lpips_temporal = 0.31, 0.02
        return result.metrics

    monkeypatch.setattr("wan_ui.core.compare.score_result", fake_score)  # the name measure_quality calls
    result = generate(manager, "tiny", GenerationRequest(**TINY), OptimizationSet(), out_dir=tmp_path)
    video = Path(result.video_path)
    before = json.loads(video.with_suffix(".json").read_text())
    assert before["metrics"]["clip_score"] is None
    measure_quality(manager, "tiny", result, object(), BaselineCache())
    sidecar = json.loads(video.with_suffix(".json").read_text())
    embedded = json.loads(_embedded_metadata(video))  # what an uploaded mp4 (no sidecar) loads back from (its text)
    for meta in (sidecar, embedded):
        assert meta["metrics"]["clip_score"] == 0.31 and meta["metrics"]["lpips_temporal"] == 0.02
        assert meta["created"] == before["created"] and meta["request"]["seed"] == 3
    assert settings_from_video(video)["metrics"]["clip_score"] == 0.31
    assert read_video(video)[0].shape == result.frames.shape  # stream copy: the frames are untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([video.name, video.with_suffix(".json").name])
