"""Faults on CPU: out of GPU memory (injected), cancellation mid-denoise and mid-comparison, broken model folders,
a failing video write. After each: a clear error, the manager consistent, nothing half-written in outputs, memory
of the failed run released, and the next request works — in the core and through the app's API."""

from __future__ import annotations

import gc
import shutil
import threading
import weakref
from pathlib import Path

import pytest
import torch

from wan_ui.core.compare import run_comparison
from wan_ui.core.errors import GenerationCancelled, ModelLoadError, GpuOutOfMemoryError, UserError
from wan_ui.core.generate import generate
from wan_ui.core.manager import ModelManager
from wan_ui.core.options import OptimizationSet
from wan_ui.core.requests import GenerationRequest

SMALL = GenerationRequest("a lighthouse in a storm", width=16, height=16, num_frames=5, num_inference_steps=2)
FP32 = OptimizationSet(precision="fp32")


def raise_oom(*args, **kwargs):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected by the test)")


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def assert_low_vram_error(e: BaseException) -> None:
    assert isinstance(e, GpuOutOfMemoryError) and isinstance(e, UserError)
    assert "out of GPU memory" in str(e) and "'Low VRAM' preset" in str(e)


def assert_next_request_works(manager, out_dir: Path, opts=OptimizationSet()) -> None:
    result = generate(manager, "tiny", SMALL, opts, out_dir=out_dir)
    assert Path(result.video_path).is_file() and result.frames.shape == (5, 16, 16, 3)
    assert manager.resident() == [manager.key("tiny", opts)]


# ---- out of GPU memory ----------------------------------------------------------------------------------------
def test_oom_while_loading_keeps_the_resident_pipeline(manager, tmp_path, monkeypatch):
    from diffusers import WanPipeline

    assert_next_request_works(manager, tmp_path)
    resident, builds, before = manager.resident(), manager.builds, files(tmp_path)
    monkeypatch.setattr(WanPipeline, "from_pretrained", classmethod(raise_oom))
    with pytest.raises(GpuOutOfMemoryError) as e:
        generate(manager, "tiny", SMALL, FP32, out_dir=tmp_path)  # a load-time change: a new build
    assert_low_vram_error(e.value)
    assert manager.resident() == resident and manager.builds == builds and files(tmp_path) == before
    monkeypatch.undo()
    assert_next_request_works(manager, tmp_path, FP32)


def test_oom_while_applying_load_time_optimizations_frees_the_half_built_pipeline(manager, tmp_path, monkeypatch):
    built = []

    def oom_after_loading(pipe, opts, device):
        built.append(weakref.ref(pipe))
        raise_oom()

    monkeypatch.setattr("wan_ui.core.manager.build_steps", oom_after_loading)
    with pytest.raises(GpuOutOfMemoryError) as e:
        generate(manager, "tiny", SMALL, OptimizationSet(), out_dir=tmp_path)
    assert_low_vram_error(e.value)
    gc.collect()
    assert built and built[0]() is None, "the half-built pipeline is still referenced (its memory is not freed)"
    assert manager.resident() == [] and manager.builds == 0 and files(tmp_path) == []
    monkeypatch.undo()
    assert_next_request_works(manager, tmp_path)


@pytest.mark.parametrize("phase, target", [
    ("text encoder", "transformers.UMT5EncoderModel.forward"),
    ("denoising", "diffusers.WanTransformer3DModel.forward"),
    ("decode", "diffusers.AutoencoderKLWan.decode"),
])
def test_oom_during_generation_drops_the_pipeline_and_the_next_request_rebuilds(manager, tmp_path, monkeypatch,
                                                                                phase, target):
    pipe, _, _ = manager.get("tiny", OptimizationSet(), SMALL)
    ref, builds = weakref.ref(pipe), manager.builds
    del pipe
    monkeypatch.setattr(target, raise_oom)
    with pytest.raises(GpuOutOfMemoryError) as e:
        generate(manager, "tiny", SMALL, OptimizationSet(), out_dir=tmp_path)
    assert_low_vram_error(e.value)
    # its state is unknown: evicted, and really freed while the error is still being shown
    assert manager.resident() == []
    gc.collect()
    assert ref() is None, f"the pipeline that ran out of memory ({phase}) is still referenced"
    assert files(tmp_path) == []
    monkeypatch.undo()
    assert_next_request_works(manager, tmp_path)
    assert manager.builds == builds + 1


def test_oom_while_applying_a_runtime_option_evicts_and_names_the_preset(manager, tmp_path, monkeypatch):
    from diffusers import WanTransformer3DModel

    assert_next_request_works(manager, tmp_path)
    monkeypatch.setattr(WanTransformer3DModel, "enable_cache", raise_oom)
    with pytest.raises(GpuOutOfMemoryError) as e:
        generate(manager, "tiny", SMALL, OptimizationSet(cache="first_block"), out_dir=tmp_path)
    assert_low_vram_error(e.value)
    assert manager.resident() == []
    monkeypatch.undo()
    assert_next_request_works(manager, tmp_path, OptimizationSet(cache="first_block"))


# ---- cancellation -----------------------------------------------------------------------------------------------
def cancel_at(phase_prefix: str, step: int = 1):
    """(cancel event, on_progress) that sets the event when `phase_prefix` reaches denoising step `step`."""
    cancel = threading.Event()

    def on_progress(phase, done, total):
        if phase.startswith(phase_prefix) and phase.endswith("denoising") and done >= step:
            cancel.set()

    return cancel, on_progress


def test_cancel_mid_comparison_leaves_no_files_and_the_next_comparison_runs(manager, tmp_path):
    sets = [("Defaults", OptimizationSet()), ("cached", OptimizationSet(cache="first_block"))]
    long = GenerationRequest(SMALL.prompt, width=16, height=16, num_frames=5, num_inference_steps=20)
    cancel, on_progress = cancel_at("cached")  # the first set has finished and written its video
    with pytest.raises(GenerationCancelled, match="after step 1 of 20"):
        run_comparison(manager, "tiny", long, sets, on_progress=on_progress, cancel=cancel, out_dir=tmp_path)
    assert files(tmp_path) == []  # the finished set's video and sidecar went too: no table refers to them
    assert manager.resident() == [manager.key("tiny", OptimizationSet())]
    comp = run_comparison(manager, "tiny", SMALL, sets, out_dir=tmp_path)
    assert [Path(r.result.video_path).is_file() for r in comp.runs] == [True, True]
    assert len(files(tmp_path)) == 4  # two mp4s, two sidecars


def test_a_failing_set_mid_comparison_leaves_no_files(manager, tmp_path, monkeypatch):
    from diffusers import WanTransformer3DModel

    sets = [("Defaults", OptimizationSet()), ("cached", OptimizationSet(cache="first_block"))]
    monkeypatch.setattr(WanTransformer3DModel, "enable_cache", raise_oom)
    with pytest.raises(GpuOutOfMemoryError):
        run_comparison(manager, "tiny", SMALL, sets, out_dir=tmp_path)
    assert files(tmp_path) == []


def test_cancel_mid_denoise_leaves_no_partial_file_and_frees_the_run(manager, tmp_path):
    cancel, on_progress = cancel_at("denoising", step=2)
    long = GenerationRequest(SMALL.prompt, width=16, height=16, num_frames=5, num_inference_steps=50)
    with pytest.raises(GenerationCancelled, match="after step 2 of 50"):
        generate(manager, "tiny", long, OptimizationSet(), out_dir=tmp_path, on_progress=on_progress, cancel=cancel)
    assert files(tmp_path) == []
    assert manager.resident() == [manager.key("tiny", OptimizationSet())]  # a cancel keeps the pipeline
    assert_next_request_works(manager, tmp_path)


# ---- a failing write --------------------------------------------------------------------------------------------
def test_a_failing_video_write_leaves_no_partial_file(manager, tmp_path, monkeypatch):
    import imageio_ffmpeg

    class DiskFullWriter:
        """Starts the file, then fails on the first frame, as ffmpeg does when the disk fills up."""

        def __init__(self, path, *args, **kwargs):
            self.path = Path(path)

        def send(self, frame):
            if frame is None:
                self.path.write_bytes(b"\x00\x00\x00\x18ftypisom")
                return
            raise OSError(28, "No space left on device (injected)")

        def close(self):
            pass

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", DiskFullWriter)
    with pytest.raises(OSError, match="No space left"):
        generate(manager, "tiny", SMALL, OptimizationSet(), out_dir=tmp_path)
    assert files(tmp_path) == []  # neither the .partial mp4 nor a sidecar
    monkeypatch.undo()
    assert_next_request_works(manager, tmp_path)


def test_a_failed_tiny_model_build_leaves_no_temporary_folder(tmp_path, monkeypatch):
    from wan_ui.core.models import materialize, resolve_model

    monkeypatch.setenv("WAN_UI_CACHE", str(tmp_path))

    def fail_save(self, *args, **kwargs):
        Path(args[0] if args else kwargs["save_directory"]).mkdir(parents=True, exist_ok=True)
        raise OSError(28, "No space left on device (injected)")

    monkeypatch.setattr("diffusers.WanPipeline.save_pretrained", fail_save)
    with pytest.raises(OSError):
        materialize(resolve_model("tiny"), log=lambda m: None)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_settings_write_keeps_the_old_file_and_leaves_no_temporary_one(tmp_path, monkeypatch):
    from wan_ui.core.settings_store import load_settings, save_settings

    path = tmp_path / "last.json"
    save_settings({"request": {"prompt": "first"}}, path)
    real_write = Path.write_text

    def disk_full(self, text, *args, **kwargs):
        real_write(self, text[: len(text) // 2])
        raise OSError(28, "No space left on device (injected)")

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError):
        save_settings({"request": {"prompt": "second"}}, path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["last.json"]
    assert load_settings(path)["request"]["prompt"] == "first"


# ---- broken model folders -----------------------------------------------------------------------------------
def damage(folder: Path, rel: str, how: str) -> None:
    f = folder / rel
    if how == "missing":
        f.unlink()
    elif how == "truncated":
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    else:  # garbage
        f.write_bytes(b"\x00not what it should be{" * 4)


# one damage per file, covering each way a load fails: a missing file, corrupt JSON, a corrupt safetensors header,
# a truncated weights file, and a tokenizer that loads but cannot encode (no padding token)
DAMAGES = [("model_index.json", "missing"), ("scheduler/scheduler_config.json", "garbage"),
           ("text_encoder/config.json", "garbage"), ("text_encoder/model.safetensors", "garbage"),
           ("tokenizer/tokenizer.json", "garbage"), ("tokenizer/tokenizer_config.json", "missing"),
           ("transformer/config.json", "missing"), ("transformer/diffusion_pytorch_model.safetensors", "missing"),
           ("vae/diffusion_pytorch_model.safetensors", "truncated")]


@pytest.fixture(scope="module")
def module_manager(tiny_folder):
    return ModelManager(device="cpu", log=lambda m: None)


@pytest.mark.parametrize("rel, how", DAMAGES)
def test_a_damaged_model_folder_is_a_clear_model_error(module_manager, tiny_folder, tmp_path, rel, how):
    mgr = module_manager
    generate(mgr, "tiny", SMALL, OptimizationSet(), out_dir=None)
    resident, builds = mgr.resident(), mgr.builds
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_folder, broken)
    damage(broken, rel, how)
    with pytest.raises(ModelLoadError) as e:
        generate(mgr, str(broken), SMALL, OptimizationSet(), out_dir=tmp_path / "out")
    assert e.value.field == "model" and str(broken) in str(e.value)
    assert mgr.resident() == resident and mgr.builds == builds and files(tmp_path / "out") == []
    assert generate(mgr, "tiny", SMALL, OptimizationSet(), out_dir=None).frames.shape == (5, 16, 16, 3)

