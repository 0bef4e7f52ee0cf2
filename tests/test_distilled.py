"""Few-step distilled presets: the published settings as data, the CLI's request hints, the LoRA by hub id
(offline error, nested file path) and by a local file of Kijai's key layout at the hub id's path."""

import json
import socket

import numpy as np
import pytest
from huggingface_hub import hf_hub_url

from lora_files import write_kijai_lora
from wan_ui.cli import main
from wan_ui.core.distilled import DISTILLED, PRESET_REQUEST_HINTS, request_hints_for
from wan_ui.core import hub
from wan_ui.core.errors import ModelLoadError
from wan_ui.core.generate import generate
from wan_ui.optim.lora import parse_lora_spec
from wan_ui.core.options import OptimizationSet, check_compatible, preset

CAUSVID, SELF_FORCING = "CausVid 8-step", "Self-Forcing DMD 4-step"
CAUSVID_ID = "Kijai/WanVideo_comfy/Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors"
SF_FILE = "LoRAs/Wan2_1_self_forcing_1_3B/Wan2_1_self_forcing_dmd_1_3B_lora_rank_32_fp16.safetensors"
CPU = {"compile": "none", "attention_backend": "native"}  # the presets' GPU kernels, off for the CPU tests


def test_published_settings_are_data():
    cv, sf = preset(CAUSVID), preset(SELF_FORCING)
    assert cv.lora == CAUSVID_ID + ":1" and cv.flow_shift == 2.0 and cv.lora_fuse
    assert sf.lora == f"Kijai/WanVideo_comfy/{SF_FILE}:1" and sf.flow_shift == 8.0
    assert PRESET_REQUEST_HINTS[CAUSVID] == {"num_inference_steps": 8, "guidance_scale": 1.0}
    assert PRESET_REQUEST_HINTS[SELF_FORCING] == {"num_inference_steps": 4, "guidance_scale": 1.0}
    assert all(d.licence and d.source for d in DISTILLED)
    for name in (CAUSVID, SELF_FORCING):
        check_compatible(preset(name))
    assert request_hints_for(CAUSVID, {"num_inference_steps": 3, "guidance_scale": None}) == {"guidance_scale": 1.0}
    assert request_hints_for("Fast", {"num_inference_steps": None}) == {}


def test_hub_id_with_a_nested_file_path(lora_root):
    src = parse_lora_spec(preset(SELF_FORCING).lora, lora_root)[0]
    assert src.is_hub and src.location == "Kijai/WanVideo_comfy" and src.weight_name == SF_FILE and src.scale == 1
    # diffusers hands weight_name to hf_hub_download as the filename: the subfolder stays in the URL
    assert hf_hub_url(src.location, src.weight_name) == \
        f"https://huggingface.co/Kijai/WanVideo_comfy/resolve/main/{SF_FILE}"


def _request(smoke_request, name):
    return smoke_request.__class__(**{**smoke_request.to_dict(), **PRESET_REQUEST_HINTS[name], "notes": ()})


def test_offline_hub_download_fails_clearly_and_leaves_the_pipeline_usable(manager, smoke_request, lora_root,
                                                                           monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # tests run offline anyway
    req = _request(smoke_request, SELF_FORCING)
    good = generate(manager, "tiny", req, OptimizationSet(), out_dir=None).frames
    with pytest.raises(ModelLoadError, match="is not downloaded and the hub is offline") as e:
        generate(manager, "tiny", req, preset(SELF_FORCING).with_(**CPU), out_dir=None)
    assert f"Kijai/WanVideo_comfy/{SF_FILE}" in str(e.value) and str(lora_root) in str(e.value)  # where to put it
    assert np.array_equal(generate(manager, "tiny", req, OptimizationSet(), out_dir=None).frames, good)


def test_no_network_says_so_at_once_instead_of_no_such_file(manager, smoke_request, lora_root, monkeypatch):
    """Online mode on a machine with no network: diffusers said "does not appear to have a file named ..." after
    ~25 s of retries; now the preset's error names the LoRA, the network and where to put the file (core/hub.py)."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(lora_root.parent / "empty-hub-cache"))
    for name in hub.PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    req = _request(smoke_request, SELF_FORCING)
    with pytest.raises(ModelLoadError) as e:
        generate(manager, "tiny", req, preset(SELF_FORCING).with_(**CPU), out_dir=None)
    text = str(e.value)
    assert e.value.field == "lora" and "cannot reach huggingface.co" in text and str(lora_root) in text
    assert "does not appear to have a file named" not in text


def test_preset_with_a_local_file_at_the_hub_path(manager, smoke_request, lora_root):
    write_kijai_lora(lora_root / CAUSVID_ID, rank=32)  # same key layout and rank as the published file
    req = _request(smoke_request, CAUSVID)
    opts = preset(CAUSVID).with_(**CPU)
    assert not parse_lora_spec(opts.lora, lora_root)[0].is_hub  # a local file wins over the hub
    base = generate(manager, "tiny", req, OptimizationSet().with_(**{k: getattr(opts, k) for k in (
        "scheduler", "flow_shift", "vae_precision")}), out_dir=None)
    r = generate(manager, "tiny", req, opts, out_dir=None)
    assert r.frames.shape == (9, 64, 64, 3) and len(r.metrics.step_latencies_s) == 8
    assert r.metrics.forwards_computed == 8  # CFG 1: one forward per step
    assert not np.array_equal(r.frames, base.frames)  # the LoRA is in


def test_cli_preset_fills_unset_request_flags_and_says_so(tmp_path, tiny_folder, lora_root, capsys):
    write_kijai_lora(lora_root / "Kijai/WanVideo_comfy" / SF_FILE, rank=32)
    base = ["generate", "--model", "tiny", "--prompt", "a red ball", "--width", "64", "--height", "64",
            "--frames", "9", "--preset", SELF_FORCING, "--set", "compile=none", "--set", "attention_backend=native",
            "--json"]
    assert main(base + ["--out", str(tmp_path / "a.mp4")]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out.strip().splitlines()[-1])
    assert data["request"]["num_inference_steps"] == 4 and data["request"]["guidance_scale"] == 1.0
    assert data["optimizations"]["flow_shift"] == 8.0 and data["optimizations"]["scheduler"] == "euler"
    assert "set num_inference_steps=4, guidance_scale=1.0" in err and "Licence" in err
    assert main(base + ["--steps", "2", "--out", str(tmp_path / "b.mp4")]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out.strip().splitlines()[-1])
    assert data["request"]["num_inference_steps"] == 2 and data["request"]["guidance_scale"] == 1.0
    assert "set guidance_scale=1.0" in err and "num_inference_steps=4" not in err


@pytest.mark.parametrize("layout", ["kijai", "diffusers"])
def test_random_lora_with_ffn_keys_loads_in_both_layouts(tmp_path, tiny_folder, layout):
    """The benchmark's random LoRA of a distilled preset (attention + FFN, as Kijai's files) loads onto every
    projection it names: diffusers' converter maps ffn.0/ffn.2 (kijai) and ffn.net.* (diffusers)."""
    from wan_ui.core.models import TINY_TRANSFORMER
    from wan_ui.bench.random_lora import write_random_lora

    inner = TINY_TRANSFORMER["num_attention_heads"] * TINY_TRANSFORMER["attention_head_dim"]
    path = write_random_lora(tmp_path / "r.safetensors", inner=inner, layers=TINY_TRANSFORMER["num_layers"],
                             rank=4, layout=layout, ffn_dim=TINY_TRANSFORMER["ffn_dim"])
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(tiny_folder)
    pipe.load_lora_weights(str(path), adapter_name="r")
    for block in pipe.transformer.blocks:
        for layer in (block.attn1.to_q, block.attn2.to_out[0], block.ffn.net[0].proj, block.ffn.net[2]):
            assert "r" in layer.lora_A
    with pytest.raises(ValueError, match="layout must be one of"):
        write_random_lora(tmp_path / "x.safetensors", inner=inner, layers=1, layout="comfy")
