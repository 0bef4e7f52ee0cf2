"""LoRA training on the tiny model (CPU): data discovery and skip report, loss going down, the saved LoRA
loading through the app's LoRA option, checkpoints/resume, stop and Ctrl-C, lever checks, the CLI."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from train_files import FRAMES, SIZE, moving_square, write_dataset

from wan_ui.core.errors import IncompatibleOptionsError, UnavailableError, UserError, ValidationError
from wan_ui.core.video import write_video
from wan_ui.train.cli import main
from wan_ui.train.config import TrainConfig
from wan_ui.train.data import discover_clips, read_clip
from wan_ui.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one OpenMP thread for the tiny model


@pytest.fixture(scope="module")
def one_clip(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("one_clip"), 1)


@pytest.fixture(scope="module")
def train_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("train_cache"))


def config(data, out, cache, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), model="tiny", rank=8, width=SIZE, height=SIZE, frames=FRAMES,
                lr=1e-2, steps=30, device="cpu", progress=False, cache_dir=cache, seed=0)
    return TrainConfig(**{**base, **kw})


# ---- data ------------------------------------------------------------------------------------------------------
def test_read_clip_resizes_center_crops_and_cuts_frames(tmp_path):
    path = write_video(moving_square(0, frames=12, size=48), tmp_path / "c.mp4", fps=8)
    video = read_clip(path, 32, 16, 5)
    assert video.shape == (3, 5, 16, 32) and video.dtype == torch.float32
    assert -1.0 <= float(video.min()) and float(video.max()) <= 1.0
    with pytest.raises(ValueError, match="has 12 frames, needs 13"):
        read_clip(path, 32, 16, 13)


def test_bad_clips_are_skipped_with_a_report(tmp_path, tiny_folder, train_cache):
    data = write_dataset(tmp_path / "data", 2, captions="jsonl")
    (data / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video")
    write_video(moving_square(5), data / "uncaptioned.mp4", fps=8)
    write_video(moving_square(6, frames=5), data / "short.mp4", fps=8)
    with open(data / "metadata.jsonl", "a") as f:
        f.write(json.dumps({"file": "broken.mp4", "caption": "broken"}) + "\n")
        f.write(json.dumps({"file": "short.mp4", "caption": "too short"}) + "\n")
        f.write(json.dumps({"file": "gone.mp4", "caption": "missing file"}) + "\n")
        f.write("not json\n")

    clips, skipped = discover_clips(data)
    assert sorted(c.path.name for c in clips) == ["broken.mp4", "clip0.mp4", "clip1.mp4", "short.mp4"]
    reasons = {s.file: s.reason for s in skipped}
    assert "no caption" in reasons["uncaptioned.mp4"] and "does not exist" in reasons["gone.mp4"]
    assert "metadata.jsonl:" in " ".join(reasons)

    logs = []
    result = train(config(data, tmp_path / "l.safetensors", train_cache, steps=2), log=logs.append)
    reasons = {s.file: s.reason for s in result.skipped}
    assert "unreadable video" in reasons["broken.mp4"]
    assert "has 5 frames, needs 9" in reasons["short.mp4"]
    assert result.steps_done == 2 and result.precompute.latents_encoded + result.precompute.latents_cached == 2
    assert any("skipped 5 clip(s)" in m for m in logs)


def test_no_usable_clip_is_a_user_error(tmp_path, tiny_folder, train_cache):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.mp4").write_bytes(b"garbage")
    (data / "a.txt").write_text("caption")
    with pytest.raises(UserError, match="no usable clips"):
        train(config(data, tmp_path / "l.safetensors", train_cache, steps=1), log=lambda m: None)


# ---- training --------------------------------------------------------------------------------------------------
def test_loss_goes_down_and_the_lora_loads_in_the_app(tmp_path, one_clip, train_cache, lora_root, manager,
                                                      smoke_request):
    from wan_ui.core.generate import generate
    from wan_ui.core.options import OptimizationSet

    metrics = tmp_path / "m.jsonl"
    result = train(config(one_clip, lora_root / "squares.safetensors", train_cache, metrics_jsonl=str(metrics),
                          validate_every=30, validation_prompt="a red square", validation_steps=2),
                   log=lambda m: None)
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert len(result.losses) == 30 and last < 0.85 * first, (first, last)

    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [r for r in records if r["event"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 31))
    assert all(r["peak_vram_mb"] is None and r["tokens_per_sample"] == 48 and r["step_time_s"] > 0 for r in steps)
    summary = records[-1]
    assert summary["event"] == "summary" and summary["median_step_s"] > 0 and summary["tokens_per_s"] > 0
    video = [r for r in records if r["event"] == "validation"][0]
    assert video["step"] == 30 and video["path"].endswith("step-000030.mp4")

    plain = generate(manager, "tiny", smoke_request, OptimizationSet(), out_dir=None).frames
    tuned = generate(manager, "tiny", smoke_request, OptimizationSet(lora="squares.safetensors"), out_dir=None)
    assert tuned.frames.shape == plain.shape
    assert np.abs(tuned.frames.astype(int) - plain.astype(int)).mean() > 1.0
    again = generate(manager, "tiny", smoke_request, OptimizationSet(), out_dir=None).frames
    np.testing.assert_array_equal(again, plain)  # removing the LoRA restores the base model


def test_resume_continues_from_the_saved_step(tmp_path, one_clip, train_cache):
    full = train(config(one_clip, tmp_path / "a.safetensors", train_cache, steps=6, save_every=3),
                 log=lambda m: None)
    ckpt = tmp_path / "a_checkpoints" / "step-000003"
    assert (ckpt / "state.json").is_file() and full.checkpoint.endswith("step-000006")

    logs = []
    resumed = train(config(one_clip, tmp_path / "b.safetensors", train_cache, steps=6, resume=str(ckpt)),
                    log=logs.append)
    assert resumed.start_step == 3 and resumed.steps_done == 6 and len(resumed.losses) == 3
    np.testing.assert_allclose(resumed.losses, full.losses[3:], rtol=1e-5)  # same data, noise, optimizer state
    assert resumed.precompute.loaded == [] and resumed.precompute.latents_cached == 1  # encoders never loaded
    assert any("resumed" in m for m in logs)

    train(config(one_clip, tmp_path / "c.safetensors", train_cache, steps=4, save_every=1, keep_checkpoints=2),
          log=lambda m: None)
    assert sorted(p.name for p in (tmp_path / "c_checkpoints").iterdir()) == ["step-000003", "step-000004"]



def test_a_dense_checkpoint_does_not_resume_into_a_sparse_run(tmp_path, one_clip, train_cache, tiny_folder):
    """Two different models (dense, sparse attention) must not train into one LoRA; the check reads the window the
    checkpoint was trained with (training itself with a window needs CUDA, so the loader is called directly)."""
    from wan_ui.train.checkpoint import load_checkpoint
    from wan_ui.train.levers import build_optimizer, prepare_transformer
    from wan_ui.train.model import load_transformer
    from wan_ui.train.step import BatchSampler

    cfg = config(one_clip, tmp_path / "d.safetensors", train_cache, steps=2, save_every=2)
    ckpt = Path(train(cfg, log=lambda m: None).checkpoint)
    transformer = load_transformer(tiny_folder, cfg, "cpu")
    lora_config, params, _ = prepare_transformer(transformer, cfg, "cpu")
    args = (ckpt, transformer, build_optimizer(params, 1e-3, 0.0, False, "cpu"), BatchSampler(1, 1, 0),
            torch.Generator().manual_seed(0), lora_config)
    with pytest.raises(UserError, match="trained with sparse window none \\(dense\\), this run asks for 3,1,1") as e:
        load_checkpoint(*args, sparse_window="3,1,1")
    assert e.value.field == "resume"
    assert load_checkpoint(*args) == 2  # the same (dense) setting resumes


def test_rng_states_round_trip_through_safetensors_and_json(tmp_path):
    import random

    from wan_ui.train.checkpoint import load_rng, save_rng
    from wan_ui.train.step import BatchSampler

    sampler, noise = BatchSampler(5, 2, seed=3), torch.Generator().manual_seed(4)
    sampler.next(), torch.randn(3, generator=noise), random.random(), np.random.standard_normal()  # mid-stream
    save_rng(tmp_path, noise, sampler)

    def draws(s, g):
        return (s.next(), s.next(), s.next(), torch.randn(4, generator=g).tolist(), torch.rand(2).tolist(),
                random.random(), np.random.standard_normal(3).tolist())

    expected = draws(sampler, noise)
    sampler2, noise2 = BatchSampler(5, 2, seed=99), torch.Generator().manual_seed(99)
    load_rng(tmp_path, noise2, sampler2)
    assert draws(sampler2, noise2) == expected


class _RunsCode:
    """What a malicious pickle would hold: unpickling it calls print (any function, in a real attack)."""

    def __reduce__(self):
        return (print, ("this ran while loading the checkpoint",))


def test_checkpoints_load_without_pickle_and_a_pickled_object_is_refused(tmp_path, one_clip, train_cache):
    import shutil

    first = train(config(one_clip, tmp_path / "a.safetensors", train_cache, steps=2), log=lambda m: None)
    ckpt = tmp_path / "a_checkpoints" / "step-000002"
    assert first.checkpoint == str(ckpt)
    assert sorted(p.name for p in ckpt.iterdir()) == ["adapter.safetensors", "optimizer.pt", "rng.json",
                                                      "rng.safetensors", "state.json"]
    torch.load(ckpt / "optimizer.pt", weights_only=True)  # tensors, numbers, containers only

    def resume_from(folder):
        return train(config(one_clip, tmp_path / "b.safetensors", train_cache, steps=3, resume=str(folder)),
                     log=lambda m: None)

    poisoned = shutil.copytree(ckpt, tmp_path / "poisoned")
    state = torch.load(ckpt / "optimizer.pt", weights_only=True)
    torch.save({**state, "extra": _RunsCode()}, poisoned / "optimizer.pt")
    with pytest.raises(UserError, match="optimizer.pt holds more than tensors and numbers \\(print\\)") as e:
        resume_from(poisoned)
    assert e.value.field == "resume"

    old = shutil.copytree(ckpt, tmp_path / "old_format")  # before this change: the RNG states pickled in rng.pt
    (old / "rng.safetensors").unlink()
    (old / "rng.json").unlink()
    torch.save({"python": __import__("random").getstate(), "numpy": np.random.get_state()}, old / "rng.pt")
    with pytest.raises(UserError, match="pickled rng.pt of an older version, which is not loaded"):
        resume_from(old)
    assert resume_from(ckpt).steps_done == 3


def test_stop_event_and_ctrl_c_save_a_checkpoint_and_the_lora(tmp_path, one_clip, train_cache):
    stop = threading.Event()

    def stop_at_2(record):
        if record["step"] == 2:
            stop.set()

    result = train(config(one_clip, tmp_path / "s.safetensors", train_cache), on_step=stop_at_2, stop=stop,
                   log=lambda m: None)
    assert result.stopped and result.steps_done == 2 and (tmp_path / "s.safetensors").is_file()
    assert result.checkpoint.endswith("step-000002")
    # a stop that comes while the data is prepared ends the run before its first step: nothing trained to save
    result = train(config(one_clip, tmp_path / "e.safetensors", train_cache), stop=stop, log=lambda m: None)
    assert result.stopped and result.steps_done == 0 and result.lora_path is None and result.checkpoint is None
    assert not (tmp_path / "e.safetensors").exists()

    def ctrl_c_at_3(record):
        if record["step"] == 3:
            raise KeyboardInterrupt

    result = train(config(one_clip, tmp_path / "k.safetensors", train_cache), on_step=ctrl_c_at_3,
                   log=lambda m: None)
    assert result.interrupted and result.steps_done == 3 and (tmp_path / "k.safetensors").is_file()
    resumed = train(config(one_clip, tmp_path / "k.safetensors", train_cache, steps=4, resume="latest"),
                    log=lambda m: None)
    assert resumed.start_step == 3 and resumed.steps_done == 4


# ---- levers ----------------------------------------------------------------------------------------------------
def _one_step_grads(tiny_folder, **levers):
    from wan_ui.train.levers import prepare_transformer
    from wan_ui.train.model import load_transformer
    from wan_ui.train.step import flow_matching_loss

    cfg = TrainConfig(data="", model="tiny", rank=4, width=SIZE, height=SIZE, frames=FRAMES, **levers)
    torch.manual_seed(0)
    transformer = load_transformer(tiny_folder, cfg, "cpu")
    _, params, _ = prepare_transformer(transformer, cfg, "cpu")
    for p in params:  # non-zero B so that every LoRA weight gets a gradient
        torch.nn.init.normal_(p, std=0.1)
    g = torch.Generator().manual_seed(0)
    latents, text = torch.randn(1, 16, 3, 8, 8, generator=g), torch.randn(1, 512, 32, generator=g)
    loss = flow_matching_loss(transformer, latents, text, torch.tensor([0.4]), torch.randn(latents.shape, generator=g),
                              torch.bfloat16 if cfg.bf16 else None)
    loss.backward()
    return loss.item(), [p.grad.clone() for p in params]


@pytest.mark.parametrize("levers", [{"grad_checkpointing": "full"}, {"grad_checkpointing": "selective"},
                                    {"grad_checkpointing": "full", "checkpoint_skip_blocks": 1}])
def test_checkpointing_keeps_the_numbers(tiny_folder, levers):
    ref_loss, ref_grads = _one_step_grads(tiny_folder)
    loss, grads = _one_step_grads(tiny_folder, **levers)
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("levers", [{}, {"grad_checkpointing": "selective"}])
def test_compile_keeps_the_numbers(tiny_folder, levers):
    """The blocks (or, with checkpointing, the runners) compiled through the inference catalogue's regional compile
    (optim/compile.py): graphs are captured, and one step's loss and LoRA gradients match eager (~35 s on CPU)."""
    from torch._dynamo.utils import counters

    ref_loss, ref_grads = _one_step_grads(tiny_folder, **levers)
    torch._dynamo.reset()
    counters.clear()
    loss, grads = _one_step_grads(tiny_folder, compile=True, **levers)
    assert counters["stats"]["unique_graphs"] > 0
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    torch._dynamo.reset()


def test_bf16_and_fp8_base_run_on_cpu(tiny_folder):
    ref_loss, _ = _one_step_grads(tiny_folder)
    for levers in ({"bf16": True}, {"bf16": True, "fp8_base": True}):
        loss, grads = _one_step_grads(tiny_folder, **levers)
        assert loss == pytest.approx(ref_loss, rel=0.1) and all(torch.isfinite(g).all() for g in grads)
        assert all(g.dtype == torch.float32 for g in grads)  # LoRA master weights stay fp32


def _prediction(tiny_folder, **levers) -> torch.Tensor:
    """The transformer's prediction for one fixed batch after the levers, forward only (FlexAttention has no
    backward on CPU)."""
    from wan_ui.train.levers import prepare_transformer
    from wan_ui.train.model import load_transformer

    cfg = TrainConfig(data="", model="tiny", rank=4, width=SIZE, height=SIZE, frames=FRAMES, **levers)
    torch.manual_seed(0)
    transformer = load_transformer(tiny_folder, cfg, "cpu")
    prepare_transformer(transformer, cfg, "cpu")
    g = torch.Generator().manual_seed(0)
    latents, text = torch.randn(1, 16, 3, 8, 8, generator=g), torch.randn(1, 512, 32, generator=g)
    with torch.no_grad():
        return transformer(hidden_states=latents, timestep=torch.tensor([400.0]), encoder_hidden_states=text,
                           return_dict=False)[0]


def test_sparse_attention_training_routes_self_attention_through_the_window(tiny_folder, tmp_path):
    """The tiny clip is 3 x 4 x 4 patches = 3 tiles of one frame each: a window of 9 tiles keeps every block (the
    dense model), a window of 0 frames keeps each frame to itself. Training itself needs CUDA (FlexAttention's
    backward), which the lever says on CPU."""
    dense = _prediction(tiny_folder)
    torch.testing.assert_close(_prediction(tiny_folder, sparse_window="9,9,9"), dense, rtol=1e-4, atol=1e-5)
    narrow = _prediction(tiny_folder, sparse_window="0,0,0")  # blocks 1.. sparse; block 0 dense as at inference
    assert (narrow - dense).abs().max() > 1e-3 * dense.abs().max()  # the mask changes what the model computes
    with pytest.raises(ValidationError) as e:
        TrainConfig(data="x", sparse_window="3,1")
    assert e.value.field == "sparse_window"
    with pytest.raises(UnavailableError, match="--sparse-window needs a CUDA GPU") as e:
        train(TrainConfig(data=str(tmp_path), device="cpu", sparse_window="3,1,1"), log=lambda m: None)
    assert e.value.field == "sparse_window"


@pytest.mark.parametrize("flag,field", [("adamw8bit", "adamw8bit"), ("float8_training", "float8_training")])
def test_cuda_only_levers_say_why_on_cpu(tmp_path, flag, field):
    with pytest.raises(UnavailableError, match=f"--{flag.replace('_', '-')} needs a CUDA GPU") as e:
        train(TrainConfig(data=str(tmp_path), device="cpu", **{flag: True}), log=lambda m: None)
    assert e.value.field == field


def test_config_checks():
    with pytest.raises(ValidationError, match="4k\\+1"):
        TrainConfig(data="x", frames=10)
    with pytest.raises(ValidationError, match="multiple of 16"):
        TrainConfig(data="x", width=100)
    with pytest.raises(ValidationError, match="validation-prompt"):
        TrainConfig(data="x", validate_every=5)
    from wan_ui.core.hardware import Hardware
    from wan_ui.train.levers import check_levers

    h100 = Hardware(True, "H100", (9, 0), 80000.0, frozenset({"torchao", "bitsandbytes"}))
    with pytest.raises(IncompatibleOptionsError, match="--fp8-base and --float8-training"):
        check_levers(TrainConfig(data="x", fp8_base=True, float8_training=True), h100)
    check_levers(TrainConfig(data="x", float8_training=True, adamw8bit=True), h100)


# ---- CLI -------------------------------------------------------------------------------------------------------
def test_cli(tmp_path, one_clip, train_cache, capsys):
    out = tmp_path / "cli.safetensors"
    code = main(["--data", str(one_clip), "--model", "tiny", "--rank", "4", "--steps", "3", "--out", str(out),
                 "--width", "64", "--height", "64", "--frames", "9", "--cache-dir", train_cache, "--device", "cpu",
                 "--grad-checkpointing", "--no-progress", "--json"])
    assert code == 0 and out.is_file()
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["steps_done"] == 3 and printed["summary"]["median_step_s"] > 0
    assert main(["--data", str(tmp_path / "nowhere"), "--model", "tiny", "--device", "cpu"]) == 2
    assert "does not exist" in capsys.readouterr().err
