"""The Train tab's core (`wan_ui.train.job`) on the tiny model, CPU: a background run with progress, Stop with a
saved checkpoint, Resume from it, one run at a time, and widget values checked like the CLI's (confined paths)."""

from __future__ import annotations

import os
import time

import pytest
from train_files import write_dataset

from wan_ui.core.errors import UserError, ValidationError
from wan_ui.core.hardware import Hardware
from wan_ui.train.job import TrainJob, config_from_values, default_values, lever_availability

CPU = Hardware(False, "cpu", None, None, frozenset())


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one OpenMP thread for the tiny model


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_data")
    write_dataset(root / "squares", 2)
    return root


@pytest.fixture
def roots(data_root, tmp_path, monkeypatch):
    """The two folders the tab confines paths to, through their environment variables as the app reads them."""
    loras = tmp_path / "loras"
    loras.mkdir()
    monkeypatch.setenv("WAN_UI_TRAIN_DIR", str(data_root))
    monkeypatch.setenv("WAN_UI_LORA_DIR", str(loras))
    return data_root, loras


def values(**kw) -> dict:
    return {**default_values(cuda=False), "data": "squares", "lora_name": "squares", "steps": 6, "save_every": 0,
            **kw}


def config(resume=False, **kw):
    return config_from_values(values(**kw), model="tiny", device="cpu", resume=resume)


def wait_until(job, condition, what: str, timeout_s: float = 60):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        status = job.status()
        if condition(status):
            return status
        time.sleep(0.01)
    pytest.fail(f"timed out waiting until {what}: {job.status()}")


def test_a_run_reports_progress_and_writes_the_lora_the_generate_tab_names(roots, tiny_folder):
    from wan_ui.optim.lora import parse_lora_spec

    job = TrainJob()
    assert job.status().phase == "idle" and not job.stop()
    started = job.start(config(), CPU)
    assert started.phase == "preparing" and started.lora_name == "squares.safetensors" and started.steps == 6
    done = job.wait(60)
    assert done.phase == "done" and done.error is None, done
    assert [r["step"] for r in done.records] == [1, 2, 3, 4, 5, 6]
    last = done.last
    assert last["loss"] > 0 and last["step_time_s"] > 0 and last["samples_per_s"] > 0 and last["eta_s"] == 0
    assert done.records[0]["eta_s"] > 0 and last["peak_vram_mb"] is None  # CPU: no VRAM reading
    assert done.summary["median_step_s"] > 0 and any("clip(s); precompute" in m for m in done.log)
    (source,) = parse_lora_spec(done.lora_name)  # what the user types in the Generate tab resolves to the file
    assert os.path.join(source.location, source.weight_name) == done.lora_path == str(roots[1] / "squares.safetensors")
    assert done.checkpoint.endswith("squares_checkpoints/step-000006")
    with pytest.raises(UserError, match="squares.safetensors has checkpoints .* click Resume"):
        job.start(config(), CPU)  # a new run under a used name would mix its checkpoints with this one's


def test_a_batch_of_two_clips_per_step(roots, tiny_folder):
    job = TrainJob()
    job.start(config(lora_name="batch2", batch_size=2, steps=2), CPU)
    done = job.wait(60)
    assert done.phase == "done" and done.error is None, done
    assert [r["batch_size"] for r in done.records] == [2, 2]
    assert done.last["samples_per_s"] == pytest.approx(2 / done.last["step_time_s"], rel=1e-6)


def test_stop_saves_a_checkpoint_and_resume_continues_from_it(roots, tiny_folder):
    job = TrainJob()
    job.start(config(steps=100_000), CPU)
    wait_until(job, lambda s: len(s.records) >= 2, "two steps are done")
    with pytest.raises(UserError, match="already going .* one run at a time"):
        job.start(config(lora_name="other"), CPU)
    assert job.stop() and job.status().phase == "stopping"
    stopped = job.wait(60)
    at = stopped.last["step"]
    assert stopped.phase == "stopped" and at < 100_000, stopped
    assert stopped.checkpoint.endswith(f"step-{at:06d}") and os.path.isfile(stopped.lora_path)
    assert any(f"stop requested at step {at}" in m for m in stopped.log)

    with pytest.raises(ValidationError, match=f"steps must be more than the checkpoint's step {at}"):
        job.start(config(resume=True, steps=at), CPU)
    resumed = job.start(config(resume=True, steps=at + 3), CPU)
    assert resumed.start_step == at and [r["step"] for r in resumed.records] == list(range(1, at + 1))
    done = job.wait(60)
    assert done.phase == "done" and [r["step"] for r in done.records] == list(range(1, at + 4))
    assert any("resumed from" in m and f"at step {at}" in m for m in done.log)
    assert done.checkpoint.endswith(f"step-{at + 3:06d}")


def test_resume_needs_a_checkpoint_and_a_failed_run_is_reported(roots, tiny_folder):
    job = TrainJob()
    with pytest.raises(UserError, match="no checkpoint in") as e:
        job.start(config(resume=True, lora_name="never_trained"), CPU)
    assert e.value.field == "resume"
    broken = roots[0] / "broken"
    broken.mkdir(exist_ok=True)
    (broken / "a.mp4").write_bytes(b"not a video")
    (broken / "a.txt").write_text("a caption")
    job.start(config(data="broken", lora_name="broken"), CPU)  # captioned, so only decoding finds it unusable
    failed = job.wait(60)
    assert failed.phase == "failed" and "no usable clips" in failed.error and "unreadable video" in failed.error
    assert not failed.running and job.status().phase == "failed"


@pytest.mark.parametrize("change,field,message", [
    ({"data": ""}, "data", "choose a dataset folder inside the training data folder"),
    ({"data": "../squares"}, "data", "may not contain '..'"),
    ({"data": "/etc"}, "data", "is outside the training data folder"),
    ({"data": "escape"}, "data", "is outside the training data folder"),  # a symlink leading out
    ({"data": "nowhere"}, "data", r"is not a folder in the training data folder .*\(folders there: .*squares"),
    ({"data": "empty"}, "data", "has no captioned clips"),
    ({"lora_name": "sub/dir"}, "lora_name", "lora_name must be 1-100 letters"),
    ({"lora_name": ""}, "lora_name", "lora_name must be"),
    ({"rank": 0}, "rank", r"rank must be a whole number in \[1, 256\], got 0"),
    ({"steps": None}, "steps", r"steps must be a whole number in \[1, 1000000\], got None"),
    ({"frames": 2.5}, "frames", "frames must be a whole number"),
    ({"frames": 10}, "frames", "4k\\+1"),
    ({"width": 100}, "width", "multiple of 16"),
    ({"lr": 0}, "lr", r"lr must be a number in \(0, 1\)"),
    ({"lr": "fast"}, "lr", "lr must be a number"),
    ({"grad_checkpointing": "some"}, "grad_checkpointing", "must be one of"),
    ({"adamw8bit": True}, "adamw8bit", "--adamw8bit needs a CUDA GPU"),
    ({"batch_size": 0}, "batch_size", r"batch_size must be a whole number in \[1, 64\], got 0"),
    ({"validate_every": 5}, "validation_prompt", "validate_every > 0 needs a validation_prompt"),
    ({"validate_every": -1}, "validate_every", r"validate_every must be a whole number in \[0, 1000000\]"),
    ({"validation_prompt": "x" * 2001}, "validation_prompt", "at most 2000 characters"),
])
def test_bad_values_name_the_field_and_the_allowed_range(roots, change, field, message):
    (roots[0] / "empty").mkdir(exist_ok=True)
    if not (roots[0] / "escape").exists():
        (roots[0] / "escape").symlink_to(roots[1])
    with pytest.raises(UserError, match=message) as e:
        TrainJob().start(config(**change), CPU)
    assert e.value.field == field


def test_validation_fields_reach_the_trainer(roots):
    cfg = config(validate_every=3, validation_prompt="  a red square moving right  ")
    assert (cfg.validate_every, cfg.validation_prompt) == (3, "a red square moving right")
    assert config().validate_every == 0 and config().batch_size == 1 and config(batch_size=2).batch_size == 2


def test_levers_this_machine_cannot_run_say_why():
    why = lever_availability(CPU)
    assert why["bf16"] is None and why["compile"] is None and why["fp8_base"] is None
    assert "needs a CUDA GPU" in why["adamw8bit"] and "needs a CUDA GPU" in why["float8_training"]
    h100 = Hardware(True, "H100", (9, 0), 80000.0, frozenset({"torchao", "bitsandbytes", "triton"}))
    assert all(reason is None for reason in lever_availability(h100).values())


def test_gpu_defaults_turn_on_the_fast_levers_this_machine_can_run():
    h100 = Hardware(True, "H100", (9, 0), 80000.0, frozenset({"torchao", "bitsandbytes", "triton"}))
    d = default_values(cuda=True, unavailable=lever_availability(h100))
    assert d["compile"] and d["grad_checkpointing"] == "selective" and d["bf16"]
    assert not d["float8_training"] and not d["fp8_base"] and not d["adamw8bit"]  # lossy or slower: opt-in
    no_triton = Hardware(True, "H100", (9, 0), 80000.0, frozenset({"torchao"}))
    why = lever_availability(no_triton)
    assert "needs Triton" in why["compile"]
    assert not default_values(cuda=True, unavailable=why)["compile"]
    unknown = default_values(cuda=True)  # nothing known to run: nothing extra turned on
    assert not unknown["compile"]


def test_sparse_window_reaches_the_trainer_and_bad_ones_name_the_field(roots):
    assert config(sparse_window=" 3,1,1 ").sparse_window == "3,1,1" and config().sparse_window == ""
    with pytest.raises(ValidationError) as e:
        config(sparse_window="3,1")
    assert e.value.field == "sparse_window"
    assert "needs a CUDA GPU" in lever_availability(CPU)["sparse_window"]
    h100 = Hardware(True, "H100", (9, 0), 80000.0, frozenset({"torchao", "bitsandbytes", "triton"}))
    assert lever_availability(h100)["sparse_window"] is None
    no_triton = Hardware(True, "H100", (9, 0), 80000.0, frozenset({"torchao"}))
    assert "needs Triton" in lever_availability(no_triton)["sparse_window"]
