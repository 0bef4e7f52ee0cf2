"""The tiny video decoder (`vae_decoder=tiny`, wan_ui/core/tiny_vae.py + wan_ui/optim/tiny_decoder.py): Wan's
frame count, causal memory, chunked decoding, the published file's tensor names, where its weights come from and
the error when they cannot be fetched, the run-time option's round trip on the tiny pipeline, the live preview, and
the tiny-decoder presets end to end on CPU."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
from lora_files import write_kijai_lora
from safetensors.torch import save_file

from wan_ui.core.distilled import PRESET_REQUEST_HINTS
from wan_ui.core.errors import ModelLoadError
from wan_ui.core.generate import generate
from wan_ui.core.models import MARKER
from wan_ui.core.options import OptimizationSet, fidelity_of, fidelity_of_value, preset, preset_description
from wan_ui.core.preview import LatentToRGB, TinyDecoderPreview, previewer_for
from wan_ui.core.tiny_vae import (
    DEFAULT_SOURCE,
    SOURCE_ENV,
    TinyVideoDecoder,
    build_tiny_decoder,
    load_published_state,
    random_tiny_decoder,
    to_published_state,
)
from wan_ui.optim.tiny_decoder import tiny_decoder_of

SF_FILE = "LoRAs/Wan2_1_self_forcing_1_3B/Wan2_1_self_forcing_dmd_1_3B_lora_rank_32_fp16.safetensors"
TINY_PRESETS = ("Self-Forcing DMD 4-step (tiny decoder)", "Self-Forcing DMD 4-step (sparse, tiny decoder)")
CPU = {"compile": "none", "attention_backend": "native"}  # the presets' GPU kernels, off for the CPU tests
FP32 = OptimizationSet().with_(precision="fp32", text_encoder_precision="fp32")


@pytest.fixture(scope="module")
def decoder():
    return random_tiny_decoder()


def _latents(t: int, h: int = 2, w: int = 3, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 16, t, h, w, generator=torch.Generator().manual_seed(seed))


# ---- the decoder ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("t, h, w, batch", [(1, 2, 3, 1), (2, 3, 2, 1), (3, 2, 2, 2), (21, 1, 2, 1)])
def test_frames_come_out_as_wan_vae_gives_them(decoder, t, h, w, batch):
    """1 + k latent frames -> 1 + 4k frames (21 -> 81, the official480 clip), 8x the size, in [-1, 1]."""
    video = decoder.decode(_latents(t, h, w, batch))
    assert video.shape == (batch, 3, 1 + 4 * (t - 1), 8 * h, 8 * w)
    assert video.min() >= -1 and video.max() <= 1 and torch.isfinite(video).all()


def test_decoding_is_causal_and_the_same_in_any_chunks(decoder):
    z = _latents(6)
    whole = decoder.decode(z, time_chunk=100)
    for chunk in (1, 2, 4):
        torch.testing.assert_close(decoder.decode(z, time_chunk=chunk), whole, rtol=0, atol=1e-5)
    later = z.clone()
    later[:, :, 3] += 1.0  # latent frame 3 makes frames 9-12
    changed = decoder.decode(later)
    assert torch.equal(changed[:, :, :9], whole[:, :, :9])
    assert not torch.equal(changed[:, :, 9:], whole[:, :, 9:])  # the memory carries it forward


def test_channels_last_weights_decode_the_same_frames(decoder):
    """NHWC conv weights (cuDNN's tensor-core layout) take the frames NHWC too; the video is the same."""
    z = _latents(3)
    nhwc = random_tiny_decoder().to(memory_format=torch.channels_last)
    assert nhwc.stem.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(nhwc.decode(z), decoder.decode(z), rtol=0, atol=1e-5)


def test_dtype_and_device_follow_the_decoder():
    half = random_tiny_decoder().to(torch.bfloat16)
    video = half.decode(_latents(2))  # fp32 latents in: cast to the decoder's dtype
    assert video.dtype == torch.bfloat16 and video.device.type == "cpu"
    fp32 = random_tiny_decoder().decode(_latents(2))
    assert (video.float() - fp32).abs().max() < 0.05  # the same decoder in bf16 rounding
    d, origin = build_tiny_decoder(True, "cpu", torch.bfloat16)
    assert d.stem.weight.dtype == torch.bfloat16 and origin == "random weights (seed 0)"
    assert torch.equal(d.stem.weight.float(), random_tiny_decoder().stem.weight.bfloat16().float())  # seeded


# ---- the published file format ----------------------------------------------------------------------------------
def test_published_names_round_trip_and_have_the_file_shapes(decoder):
    state = to_published_state(decoder)
    assert len(state) == 64  # stem and head (weight, bias) + 3 stages x (3 blocks x 3 convs x 2 + grow + proj)
    shapes = {"decoder.1.weight": (256, 16, 3, 3), "decoder.3.conv.0.weight": (256, 512, 3, 3),
              "decoder.5.conv.4.bias": (256,), "decoder.7.conv.weight": (256, 256, 1, 1),
              "decoder.8.weight": (128, 256, 3, 3), "decoder.13.conv.weight": (256, 128, 1, 1),
              "decoder.17.conv.2.weight": (64, 64, 3, 3), "decoder.19.conv.weight": (128, 64, 1, 1),
              "decoder.20.weight": (64, 64, 3, 3), "decoder.22.weight": (3, 64, 3, 3), "decoder.22.bias": (3,)}
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    other = TinyVideoDecoder()
    load_published_state(other, {**state, "encoder.0.weight": torch.zeros(64, 3, 3, 3)})  # the file's encoder
    for (k, a), b in zip(decoder.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), k


def test_a_grow_conv_stored_for_two_frames_gives_the_last_frames_channels(decoder):
    state = to_published_state(decoder)
    two = torch.randn(512, 256, 1, 1)
    other = TinyVideoDecoder()
    load_published_state(other, {**state, "decoder.7.conv.weight": two})
    assert torch.equal(other.stages[0].grow.weight, two[256:])


@pytest.mark.parametrize("change, needle", [
    (lambda s: s.pop("decoder.13.conv.weight"), "missing ['decoder.13.conv.weight']"),
    (lambda s: s.update({"decoder.23.weight": torch.zeros(1)}), "unexpected ['decoder.23.weight']"),
    (lambda s: s.update({"decoder.1.weight": torch.zeros(256, 48, 3, 3)}), "decoder.1.weight has shape"),
])
def test_a_foreign_file_is_refused_naming_the_option(decoder, change, needle):
    state = to_published_state(decoder)
    change(state)
    with pytest.raises(ModelLoadError) as e:
        load_published_state(TinyVideoDecoder(), state)
    assert e.value.field == "vae_decoder" and needle in str(e.value) and "vae_decoder=tiny" in str(e.value)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_from_a_local_file_named_by_the_environment(decoder, tmp_path, monkeypatch, suffix):
    path = tmp_path / f"taew2_1{suffix}"
    state = {k: v.half() for k, v in to_published_state(decoder).items()}  # the published files are fp16
    torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))
    monkeypatch.setenv(SOURCE_ENV, str(path))
    loaded, origin = build_tiny_decoder(False, "cpu", torch.float32)
    assert origin == str(path)
    assert torch.equal(loaded.head.weight, decoder.head.weight.half().float())


def test_the_hub_fetch_failure_names_the_option_and_the_way_out(tmp_path, monkeypatch):
    monkeypatch.delenv(SOURCE_ENV, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))  # nothing cached
    with pytest.raises(ModelLoadError) as e:
        build_tiny_decoder(False, "cpu", torch.float32)
    text = str(e.value)
    assert e.value.field == "vae_decoder" and "\n" not in text
    assert f"option vae_decoder=tiny: the tiny decoder's weights file {DEFAULT_SOURCE} is not downloaded and the hub " \
           "is offline" in text
    assert SOURCE_ENV in text and "vae_decoder=full needs nothing" in text
    monkeypatch.setenv(SOURCE_ENV, str(tmp_path / "nowhere.pth"))
    with pytest.raises(ModelLoadError, match=f"{SOURCE_ENV}=.*is neither a weights file nor a hub id"):
        build_tiny_decoder(False, "cpu", torch.float32)


# ---- the option on the tiny pipeline ------------------------------------------------------------------------------
def test_fidelity_class_is_declared_and_published():
    assert fidelity_of_value("vae_decoder", "full").cls == "exact"
    tiny = fidelity_of_value("vae_decoder", "tiny")
    assert tiny.cls == "lossy-published" and "madebyollin/taehv" in tiny.source
    assert [lv.name for lv in fidelity_of(OptimizationSet(vae_decoder="tiny")) if lv.fidelity.cls != "close"] == \
        ["vae_decoder"]
    assert not OptimizationSet.specs()["vae_decoder"].load_time  # swapped without rebuilding


def test_the_option_swaps_the_decode_and_its_undo_restores_the_full_one(manager, smoke_request, one_thread):
    full = generate(manager, "tiny", smoke_request, FP32, out_dir=None)
    builds = manager.builds
    tiny = generate(manager, "tiny", smoke_request, FP32.with_(vae_decoder="tiny"), out_dir=None)
    assert tiny.frames.shape == full.frames.shape == (9, 64, 64, 3) and tiny.frames.dtype == np.uint8
    assert not np.array_equal(tiny.frames, full.frames)
    assert tiny.build.reapplied[-1] == "vae_decoder" and not tiny.build.rebuilt
    pipe, _, _ = manager.get("tiny", FP32, smoke_request)  # back to full: the record is removed
    assert tiny_decoder_of(pipe) is None
    again = generate(manager, "tiny", smoke_request, FP32, out_dir=None)
    np.testing.assert_array_equal(again.frames, full.frames)
    assert manager.builds == builds  # no rebuild on the way there or back


def test_a_real_weight_pipeline_fetches_by_hub_id_and_fails_clearly_offline(manager, tiny_folder, smoke_request,
                                                                           tmp_path, monkeypatch, one_thread):
    """A model folder without the random-weight marker wants the published weights; offline the run stops before
    any denoising, naming the option, and the pipeline still generates with the full decoder."""
    folder = tmp_path / "copy"
    shutil.copytree(tiny_folder, folder)
    (folder / MARKER).unlink()
    monkeypatch.delenv(SOURCE_ENV, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelLoadError, match="option vae_decoder=tiny: the tiny decoder.s weights file .* is not "
                                             "downloaded") as e:
        generate(manager, str(folder), smoke_request, FP32.with_(vae_decoder="tiny"), out_dir=None)
    assert e.value.field == "vae_decoder"
    published = tmp_path / "taew2_1.pth"
    torch.save(to_published_state(random_tiny_decoder(seed=5)), published)
    monkeypatch.setenv(SOURCE_ENV, str(published))
    r = generate(manager, str(folder), smoke_request, FP32.with_(vae_decoder="tiny"), out_dir=None)
    pipe, _, _ = manager.get(str(folder), FP32.with_(vae_decoder="tiny"), smoke_request)
    assert torch.equal(tiny_decoder_of(pipe).head.weight, random_tiny_decoder(seed=5).head.weight)
    assert r.frames.shape == (9, 64, 64, 3)


def test_the_preview_keeps_the_linear_map_on_cpu_and_the_tiny_strip_matches_its_size(manager, smoke_request):
    pipe, _, _ = manager.get("tiny", FP32.with_(vae_decoder="tiny"), smoke_request)
    assert isinstance(previewer_for(pipe), LatentToRGB)  # CPU: the decoder would cost more than the steps
    latents = _latents(3, 8, 8)
    strip = TinyDecoderPreview(tiny_decoder_of(pipe)).strip(latents)
    assert strip.shape == previewer_for(pipe).strip(latents).shape and strip.dtype == np.uint8


@pytest.mark.parametrize("name", TINY_PRESETS)
def test_tiny_decoder_presets_run_end_to_end_and_write_an_mp4(name, manager, smoke_request, lora_root, tmp_path,
                                                              one_thread):
    write_kijai_lora(lora_root / "Kijai/WanVideo_comfy" / SF_FILE, rank=32)  # the preset's LoRA, at its hub path
    opts = preset(name).with_(**CPU)
    assert opts.vae_decoder == "tiny" and "tiny decoder (TAEHV) (published: madebyollin/taehv" in \
        preset_description(name)
    req = dataclasses.replace(smoke_request, **PRESET_REQUEST_HINTS[name])
    r = generate(manager, "tiny", req, opts, out_path=tmp_path / "clip.mp4")
    assert r.frames.shape == (9, 64, 64, 3) and len(r.metrics.step_latencies_s) == 4
    assert (tmp_path / "clip.mp4").stat().st_size > 0 and r.metrics.phases["decode_s"] > 0
