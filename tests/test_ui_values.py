"""The UI's conversions (widgets -> request/options, result -> display values), settings files, GPU monitor."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest

import wan_ui.ui.values as uv
from wan_ui.core.errors import UserError, ValidationError
from wan_ui.core.gpu_monitor import GpuMonitor
from wan_ui.core.hardware import Hardware
from wan_ui.core.metrics import Metrics
from wan_ui.core.options import PRESETS, OptimizationSet, preset
from wan_ui.core.requests import LIMITS, WAN_DEFAULT_NEGATIVE_PROMPT, GenerationRequest
from wan_ui.core.settings_store import load_settings, save_settings, settings_from_video, settings_path
from wan_ui.ui.context import RunRegistry
from wan_ui.ui.generate_tab import live_gpu, matching_preset, progress_reporter
from wan_ui.ui.guard import describe
from wan_ui.ui.widgets import user_errors_as_toasts, with_box_label

CPU = Hardware(False, "cpu", None, None, frozenset())
GPU = Hardware(True, "NVIDIA H100", (9, 0), 80000.0, frozenset({"torchao", "bitsandbytes", "triton"}))


def widget_values(**overrides) -> dict:
    """What the Generate tab sends by default: request widgets + every option widget, as Gradio types them."""
    values = {"prompt": "a cat", "negative_prompt": WAN_DEFAULT_NEGATIVE_PROMPT, "width": 64, "height": 64,
              "num_frames": 9, "fps": 8, "seed": 3, "guidance_scale": 6.0, "num_inference_steps": 2,
              "randomize_seed": False, "quality": False, "resolution": "64x64 (tiny model)", "preset": "Defaults"}
    values.update(OptimizationSet().to_dict())
    values.update(overrides)
    return values


# ---- widgets -> request / options ------------------------------------------------------------------------
def test_request_from_values_builds_the_validated_request_and_notes_the_frame_snap():
    r = uv.request_from_values(widget_values(num_frames=24))
    assert (r.prompt, r.width, r.height, r.seed, r.num_inference_steps) == ("a cat", 64, 64, 3, 2)
    assert r.num_frames == 25 and any("snapped to 25" in n for n in r.notes)


def test_randomize_seed_draws_a_new_seed_and_the_request_carries_it():
    r = uv.request_from_values(widget_values(randomize_seed=True), rng=random.Random(0))
    assert r.seed == random.Random(0).randint(*LIMITS["seed"]) and r.seed != 3


@pytest.mark.parametrize("name, value, fragment", [
    ("width", 70, "width must be a multiple of 16"),
    ("height", 4096, "height must be in [16, 2048]"),
    ("num_inference_steps", 0, "num_inference_steps must be in [1, 200]"),
    ("width", None, "width is empty; enter a number in [16, 2048]"),
    ("prompt", "  ", "prompt must not be empty"),
])
def test_bad_widget_values_name_the_field_and_the_range(name, value, fragment):
    with pytest.raises(UserError) as e:
        uv.request_from_values(widget_values(**{name: value}))
    assert e.value.field == name and fragment in str(e.value)


def test_a_field_error_names_the_box_on_the_page_and_the_field_for_an_api_caller():
    """The core names the field (num_inference_steps): the page's line names the box too ("Steps"); an API caller,
    who sent the field's name, gets the message as it is; a box labelled as its field (width) is left alone."""
    with pytest.raises(UserError) as e:
        uv.request_from_values(widget_values(num_inference_steps=0))
    core = str(e.value)
    assert describe(e.value, "generating")[1] == "Steps (num_inference_steps)" + core[len("num_inference_steps"):]
    assert describe(e.value, "generating", page=False)[1] == core
    with pytest.raises(gr.Error) as toast:  # the run's path: the UserError becomes a gr.Error that keeps the field
        with user_errors_as_toasts():
            raise e.value
    assert toast.value.message == core and describe(toast.value, "generating")[1].startswith("Steps (")
    with pytest.raises(UserError) as e:
        uv.request_from_values(widget_values(width=70))
    assert describe(e.value, "generating")[1] == str(e.value)
    assert with_box_label("num_frames", "got 6") == "Frames (num_frames): got 6"


def test_options_from_values_coerces_gradio_types_and_checks_each_field():
    opts = uv.options_from_values(widget_values(attention_slicing=8192.0, cache="mag", vae_tiling=True))
    assert opts == OptimizationSet(attention_slicing=8192, cache="mag", vae_tiling=True)
    with pytest.raises(ValidationError) as e:
        uv.options_from_values(widget_values(cfg_truncation=1.5))
    assert e.value.field == "cfg_truncation" and "[0.0, 1.0]" in str(e.value)


def test_settings_round_trip_through_the_widgets():
    request = uv.request_from_values(widget_values(num_frames=24, seed=7))
    opts = preset("CPU quick").with_(vae_tiling=True)
    values = uv.values_from_settings({"request": request.to_dict(), "optimizations": opts.to_dict()})
    assert uv.request_from_values(values) == request and uv.options_from_values(values) == opts
    assert values["resolution"] == "64x64 (tiny model)" and values["randomize_seed"] is False
    assert values["preset"] == uv.CUSTOM_PRESET
    assert uv.values_from_settings({"request": request.to_dict(), "ui": {"randomize_seed": True}})[
        "randomize_seed"] is True


def test_values_from_settings_rejects_unknown_fields():
    with pytest.raises(ValidationError):
        uv.values_from_settings({"request": {"prompt": "x", "colour": "red"}})


def test_presets_fill_every_option_and_are_recognised_back():
    for name in [uv.DEFAULTS_PRESET, *PRESETS]:
        values = uv.preset_values(name)
        assert set(values) == set(uv.OPTION_FIELDS)
        assert uv.preset_of(OptimizationSet.from_dict(values)) == name
        assert matching_preset(widget_values(**values)) == name
    assert matching_preset(widget_values(cache="mag")) == uv.CUSTOM_PRESET
    assert matching_preset(widget_values(cfg_truncation=7)) == uv.CUSTOM_PRESET  # invalid -> Custom, no error


def test_preset_choices_say_why_a_preset_cannot_run_here():
    cpu = dict((value, label) for label, value in uv.preset_choices(CPU))
    assert "needs a CUDA GPU" in cpu["Fast"] and cpu["CPU quick"] == "CPU quick"
    assert list(cpu) == [uv.DEFAULTS_PRESET, *PRESETS, uv.CUSTOM_PRESET]


# ---- option widgets come from options_table -------------------------------------------------------------
def test_option_widgets_cover_every_field_once_grouped_by_family():
    groups = uv.option_widgets(CPU)
    names = [w.name for ws in groups.values() for w in ws]
    assert names == list(OptimizationSet.specs())
    specs = OptimizationSet.specs()
    assert all(w.family == specs[w.name].family for ws in groups.values() for w in ws)


def test_unavailable_values_are_annotated_and_lone_choices_disabled_with_the_reason():
    cpu = {w.name: w for ws in uv.option_widgets(CPU).values() for w in ws}
    assert cpu["offload"].interactive is False and "needs a CUDA GPU" in cpu["offload"].info
    labels = dict((v, label) for label, v in cpu["quantization"].choices)
    assert labels["bnb_nf4"] == "bnb_nf4 (n/a)" and labels["none"] == "none"
    assert cpu["vae_tiling"].kind == "checkbox" and cpu["lora"].kind == "text"
    assert cpu["attention_slicing"].kind == "number" and cpu["attention_slicing"].precision == 0
    gpu = {w.name: w for ws in uv.option_widgets(GPU).values() for w in ws}
    assert gpu["offload"].interactive and "(n/a)" not in str(gpu["offload"].choices)


def test_named_sets_from_compare_rows():
    sets = uv.named_sets_from_values({"set_1_preset": "Baseline (report)", "set_2_preset": "Defaults",
                                      "set_2_options": "cache=mag, scheduler=dpmpp", "set_3_preset": uv.NO_SET})
    assert [n for n, _ in sets] == ["Baseline (report)", "Defaults + cache=mag, scheduler=dpmpp"]
    assert sets[0][1] == preset("Baseline (report)") and sets[1][1] == OptimizationSet(cache="mag",
                                                                                         scheduler="dpmpp")
    with pytest.raises(UserError) as e:
        uv.named_sets_from_values({"set_1_preset": "Defaults", "set_2_preset": "Defaults", "set_2_options": "x"})
    assert e.value.field == "set_2_options" and "set 2" in str(e.value)


# ---- result -> display ----------------------------------------------------------------------------------
def fake_info(**metrics) -> dict:
    m = Metrics(load_time_s=1.5, load_breakdown={"download_s": 0.0, "weights_s": 1.2}, rebuilt=True,
                warmup_time_s=0.25, clip_latency_s=4.0, phases={"text_encode_s": 0.5, "denoise_s": 3.0,
                                                                "decode_s": 0.5},
                step_latencies_s=[1.2, 0.9, 0.9], frame_latency_s=0.5, throughput_fps=2.0, forwards_planned=6,
                forwards_computed=4, vram_note="no CUDA device", random_weights=True)
    for k, v in metrics.items():
        setattr(m, k, v)
    request = GenerationRequest("a cat", width=64, height=64, num_frames=9, seed=3,
                                notes=("num_frames 8 is not of the form 4k+1; snapped to 9",))
    return {"video": "outputs/x.mp4", "frames": 9, "width": 64, "height": 64, "fps": 16, "seed": 3,
            "model": "tiny", "model_label": "tiny random-weight model", "random_weights": True, "device": "cpu",
            "request": request.to_dict(), "notes": list(request.notes),
            "optimizations": OptimizationSet(cache="mag").to_dict(), "rebuilt": True, "reapplied": ["cache"],
            "metrics": m.to_dict()}


def test_display_values_of_a_run():
    info = fake_info()
    status = uv.status_line(info)
    assert "9 frames at 64x64 in 4.00 s (2.000 fps), seed 3" in status and "snapped to 9" in status
    assert "random-weight" in status
    eff = uv.efficiency_markdown(info["metrics"])
    assert "| **Warm-up** | 0.250 s" in eff and "4 computed of 6 planned (2 skipped by the cache)" in eff
    assert "denoise 3.000 s" in eff and "| **Throughput** | 2.000 fps |" in eff
    assert "n/a — no CUDA device" in uv.hardware_markdown(info["metrics"])
    gpu = uv.hardware_markdown({**info["metrics"], "peak_vram_mb": 6860.0, "peak_reserved_mb": 7000.0,
                                "phase_peak_vram_mb": {"denoise": 6860.0}})
    assert "6,860 MiB" in gpu and "denoise 6,860 MiB" in gpu
    others = uv.others_markdown(info, {"torch": "2.x"})
    assert "1.500 s (download 0.000 s · weights 1.200 s)" in others and "cache=mag" in others
    assert "loaded the weights" in others and "| **Run-time families re-applied** | cache |" in others
    assert uv.step_rows(info["metrics"]) == [{"step": 1, "seconds": 1.2}, {"step": 2, "seconds": 0.9},
                                             {"step": 3, "seconds": 0.9}]


def test_accuracy_says_why_a_metric_is_missing():
    info = fake_info(clip_score=0.312, lpips_temporal=0.05, quality_note="lpips unavailable: offline")
    md = uv.accuracy_markdown(info["metrics"], scored=True)
    assert "| **CLIP score** | 0.312 |" in md and "n/a: not available (see note)" in md and "offline" in md
    assert "tick 'compute quality metrics'" in uv.accuracy_markdown(fake_info()["metrics"], scored=False)


def test_history_rows_and_captions():
    entry = uv.history_entry(fake_info(), kind="compare: Fast")
    row = uv.history_row(2, entry)
    assert dict(zip(uv.HISTORY_COLUMNS, row)) | {"time": None} == {
        "#": 2, "time": None, "kind": "compare: Fast", "size": "64x64", "frames": 9, "steps": 50, "seed": 3,
        "clip s": 4.0, "fps": 2.0, "peak MiB": None, "prompt": "a cat", "options": "cache=mag"}
    assert uv.history_caption(2, entry).startswith("#2 compare: Fast · seed 3")
    assert uv.settings_of(entry["info"])["optimizations"]["cache"] == "mag"


def test_progress_reporter_maps_phases_to_gradio_progress():
    calls = []

    def progress(value, desc=None, unit="steps"):
        calls.append((value, desc))

    report = progress_reporter(progress)
    report("loading", 0, 1)
    report("denoising", 3, 20)
    report("decoding", 0, 1)
    report("Fast (2/3): decoding", 0, 1)
    # a phase without steps keeps the run's level (0 before the first step, 3/20 after step 3): never None, which
    # Gradio draws as a bare spinner without the phase's name; a new set's run starts again at 0
    assert calls == [(0.0, "loading the model (build or reuse)"), ((3, 20), "denoising, step 3 of 20"),
                     (0.15, "decoding (VAE)"), (0.0, "Fast (2/3): decoding (VAE)")]


# ---- settings files ---------------------------------------------------------------------------------------
def test_last_settings_file_round_trip_and_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("WAN_UI_SETTINGS", str(tmp_path / "cfg" / "last.json"))
    assert settings_path() == tmp_path / "cfg" / "last.json" and load_settings() is None
    settings = {"request": GenerationRequest("a cat").to_dict(), "optimizations": {"cache": "mag"}}
    assert save_settings(settings) == settings_path()
    assert load_settings() == settings
    settings_path().write_text("{not json")
    assert load_settings() is None  # a corrupt file means "start from defaults", not a crash


def test_settings_from_a_video_sidecar_or_its_embedded_comment(tmp_path):
    from wan_ui.core.video import write_video

    meta = {"tool": "wan_ui", "request": GenerationRequest("a cat", seed=5).to_dict(),
            "optimizations": {"cache": "mag"}}
    path = write_video(np.zeros((5, 16, 16, 3), np.uint8), tmp_path / "v.mp4", 8, metadata=meta)
    assert settings_from_video(path)["request"]["seed"] == 5
    assert settings_from_video(path.with_suffix(".json"))["optimizations"] == {"cache": "mag"}
    path.with_suffix(".json").unlink()  # an upload arrives without its sidecar: read the mp4's comment tag
    embedded = settings_from_video(path)
    assert embedded["request"]["negative_prompt"] == WAN_DEFAULT_NEGATIVE_PROMPT  # unicode survives escaping
    bare = write_video(np.zeros((5, 16, 16, 3), np.uint8), tmp_path / "bare.mp4", 8)
    with pytest.raises(ValidationError, match="carries no wan_ui settings"):
        settings_from_video(bare)
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValidationError, match="no 'request'"):
        settings_from_video(tmp_path / "other.json")


# ---- GPU monitor and the cancel registry ------------------------------------------------------------------
class FakeNvml:
    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, i):
        return "h"

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=6 * 2**30, free=74 * 2**30, total=80 * 2**30)

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA H100"

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=87)

    def nvmlDeviceGetTemperature(self, h, sensor):
        return 61

    def nvmlDeviceGetPowerUsage(self, h):
        raise RuntimeError("NotSupported")


def test_gpu_monitor_reads_nvml_and_tolerates_missing_sensors():
    stats = GpuMonitor(nvml=FakeNvml()).read()
    assert (stats.name, stats.used_mb, stats.free_mb, stats.util_pct, stats.temperature_c, stats.power_w) == (
        "NVIDIA H100", 6144.0, 75776.0, 87.0, 61.0, None)
    assert "6,144 MiB" in stats.markdown() and "power n/a" in stats.markdown()


def test_gpu_monitor_without_nvml_says_no_gpu():
    class NoDriver(FakeNvml):
        def nvmlInit(self):
            raise OSError("NVML Shared Library Not Found")

    monitor = GpuMonitor(nvml=NoDriver())
    assert monitor.read() is None and not monitor.available
    assert monitor.markdown().startswith("no GPU") and "Not Found" in monitor.reason


def test_live_gpu_tick_appends_to_the_vram_over_time_samples():
    ctx = SimpleNamespace(monitor=GpuMonitor(nvml=FakeNvml()))
    text, frame, samples = live_gpu(ctx, [(0.0, 5000.0)])
    assert "NVIDIA H100" in text and len(samples) == 2 and list(frame["MiB used"]) == [5000.0, 6144.0]
    no_gpu = SimpleNamespace(monitor=GpuMonitor(nvml=SimpleNamespace(nvmlInit=lambda: 1 / 0)))
    text, frame, samples = live_gpu(no_gpu, [])
    assert text.startswith("no GPU") and frame.empty and samples == []


def test_run_registry_cancels_only_the_running_job_of_a_session():
    runs = RunRegistry()
    assert runs.cancel("a") is None
    with runs.running("a") as flag:
        assert runs.cancel("b") is None and not flag.is_set()
        done = runs.cancel("a")
        assert flag.is_set() and not done.is_set()
    assert done.is_set() and runs.cancel("a") is None
    with pytest.raises(RuntimeError), runs.running("a"):
        raise RuntimeError("a failed run still unregisters")
    assert runs.cancel("a") is None
