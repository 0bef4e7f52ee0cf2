"""Checkpoints and the LoRA file are written whole or not at all (train/checkpoint.py through core.files.atomic_path):
a failure mid-write leaves the previous complete one and no temporary file behind. No model: the adapter's state
dict is a few tensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig
from safetensors.torch import load_file

from wan_ui.train import checkpoint
from wan_ui.train.config import TrainConfig
from wan_ui.train.step import BatchSampler

ADAPTER = {"blocks.0.attn1.to_q.lora_A.weight": torch.ones(4, 8), "blocks.0.attn1.to_q.lora_B.weight": torch.zeros(8, 4)}


@pytest.fixture
def parts(monkeypatch):
    """(optimizer, sampler, noise generator, lora config), with peft's state dict standing in for a transformer's."""
    monkeypatch.setattr(checkpoint, "get_peft_model_state_dict", lambda transformer: ADAPTER)
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    param.sum().backward()
    optimizer.step()
    return optimizer, BatchSampler(4, 1, seed=0), torch.Generator().manual_seed(1), LoraConfig(r=4, lora_alpha=4,
                                                                                             target_modules=["to_q"])


def _save(folder, parts, step=3):
    optimizer, sampler, noise, lora = parts
    return checkpoint.save_checkpoint(folder, None, optimizer, step, sampler, noise, TrainConfig(data=""), lora)


def test_a_checkpoint_is_replaced_whole_and_a_failed_save_leaves_the_last_one(tmp_path, parts, monkeypatch):
    first = _save(tmp_path, parts)
    assert first == tmp_path / "step-000003"
    assert sorted(p.name for p in first.iterdir()) == ["adapter.safetensors", "optimizer.pt", "rng.json",
                                                       "rng.safetensors", "state.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000003"]

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_rng", fail)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, parts)  # the same step again: must not destroy the complete one
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, parts, step=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000003"]  # no half-written folder, no temporary
    assert len(list(first.iterdir())) == 5
    cfg = TrainConfig(data="", checkpoint_dir=str(tmp_path), resume="latest")
    assert checkpoint.resolve_resume(cfg) == first


def test_the_lora_file_is_replaced_whole(tmp_path, parts, monkeypatch):
    _, _, _, lora = parts
    out = tmp_path / "loras" / "x.safetensors"
    assert checkpoint.save_lora(None, lora, out, "fp32") == out
    saved = load_file(str(out))
    assert sorted(saved) == sorted(f"transformer.{k}" for k in ADAPTER)
    assert saved["transformer.blocks.0.attn1.to_q.lora_A.weight"].dtype == torch.float32

    def half_write(folder, weight_name, **kwargs):  # a file cut short, then the error
        (Path(folder) / weight_name).write_bytes(b"\x00" * 10)
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.WanPipeline, "save_lora_weights", half_write)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_lora(None, lora, out, "bf16")
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.safetensors"]
    assert load_file(str(out))["transformer.blocks.0.attn1.to_q.lora_A.weight"].dtype == torch.float32
