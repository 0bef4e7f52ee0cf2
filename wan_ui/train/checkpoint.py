"""What a run writes to disk and reads back: checkpoints (save, prune, find, resume, with every RNG state) and the
final LoRA file.

A checkpoint is `<checkpoint dir>/step-000123/`: adapter.safetensors (fp32, peft names), optimizer.pt,
rng.safetensors + rng.json, state.json. Nothing in it needs pickle to load: a checkpoint from elsewhere must not be
able to run code. Both the checkpoint folder and the LoRA file are written through `atomic_path`, so a crash or a
full disk never leaves a half-written one under its final name (and `--resume latest` never picks one up).
"""

from __future__ import annotations

import json
import pickle
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from diffusers import WanPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from wan_ui.core.errors import UserError
from wan_ui.core.files import atomic_path
from wan_ui.train.config import TrainConfig
from wan_ui.train.step import BatchSampler


# ---- where checkpoints are -------------------------------------------------------------------------------------
def default_checkpoint_dir(cfg: TrainConfig) -> Path:
    out = Path(cfg.out)
    return Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else out.with_name(out.stem + "_checkpoints")


def resolve_resume(cfg: TrainConfig) -> Path | None:
    """The checkpoint folder `cfg.resume` names ('latest': the newest in the checkpoint folder); None: a new run."""
    if not cfg.resume:
        return None
    if cfg.resume == "latest":
        found = sorted(default_checkpoint_dir(cfg).glob("step-*"))
        if not found:
            raise UserError(f"--resume latest: no checkpoint in {default_checkpoint_dir(cfg)}", field="resume")
        return found[-1]
    path = Path(cfg.resume)
    if not (path / "state.json").is_file():
        raise UserError(f"--resume {path}: not a checkpoint folder (no state.json)", field="resume")
    return path


def prune_checkpoints(folder: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` step-* checkpoints; return the deleted ones."""
    found = sorted(folder.glob("step-*"))
    old = found[:-keep] if keep > 0 else []
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    return old


# ---- save and load ---------------------------------------------------------------------------------------------
def save_checkpoint(folder: Path, transformer, optimizer, step: int, sampler: BatchSampler,
                    noise_gen: torch.Generator, cfg: TrainConfig, lora_config: LoraConfig) -> Path:
    """Write folder/step-NNNNNN/ (see the module's docstring) and return it."""
    final = folder / f"step-{step:06d}"
    with atomic_path(final) as tmp:
        tmp.mkdir()
        adapter = {k: v.detach().float().cpu().contiguous()
                   for k, v in get_peft_model_state_dict(transformer).items()}
        save_file(adapter, str(tmp / "adapter.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")  # tensors, numbers and lists: weights_only loads it
        save_rng(tmp, noise_gen, sampler)
        (tmp / "state.json").write_text(json.dumps({
            "step": step, "rank": lora_config.r, "alpha": lora_config.lora_alpha,
            "targets": sorted(lora_config.target_modules), "config": cfg.to_dict()}, indent=2))
    return final


def load_checkpoint(path: Path, transformer, optimizer, sampler: BatchSampler, noise_gen: torch.Generator,
                    lora_config: LoraConfig, sparse_window: str = "") -> int:
    """Restore everything `save_checkpoint` wrote; return the step it was taken at."""
    state = json.loads((path / "state.json").read_text())
    _check_same_adapter(path, state, lora_config, sparse_window)
    result = set_peft_model_state_dict(transformer, load_file(str(path / "adapter.safetensors")))
    if getattr(result, "unexpected_keys", None):
        raise UserError(f"checkpoint {path} does not match the model: {result.unexpected_keys[:3]}", field="resume")
    optimizer.load_state_dict(_load_optimizer_state(path))
    load_rng(path, noise_gen, sampler)
    return int(state["step"])


def _check_same_adapter(path: Path, state: dict, lora_config: LoraConfig, sparse_window: str) -> None:
    """Refuse a checkpoint trained with another LoRA shape or attention: it would not continue the same model."""
    mine = (lora_config.r, lora_config.lora_alpha, sorted(lora_config.target_modules))
    theirs = (state["rank"], state["alpha"], state["targets"])
    if mine != theirs:
        raise UserError(f"checkpoint {path} has LoRA rank/alpha/targets {theirs}, this run asks for {mine}; "
                        f"resume with the same --rank/--ffn", field="resume")
    trained_sparse = state.get("config", {}).get("sparse_window", "")
    if trained_sparse != sparse_window:  # a dense and a sparse run would train two different models into one LoRA
        raise UserError(f"checkpoint {path} was trained with sparse window {trained_sparse or 'none (dense)'}, this "
                        f"run asks for {sparse_window or 'none (dense)'}; resume with the same --sparse-window",
                        field="resume")


def _load_optimizer_state(path: Path) -> dict:
    try:
        return torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # an object other than tensors/numbers/containers: never unpickled
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        raise UserError(f"checkpoint {path}: optimizer.pt holds more than tensors and numbers"
                        f"{f' ({found[1]})' if found else ''} and is not loaded: a pickle can run code",
                        field="resume") from None


# ---- RNG states ------------------------------------------------------------------------------------------------
# As tensors (safetensors) + numbers (JSON): loading them runs no code, unlike a pickled rng.pt.
def save_rng(folder: Path, noise_gen: torch.Generator, sampler: BatchSampler) -> None:
    """rng.safetensors: the byte states of the noise, data-order, torch and CUDA generators and numpy's MT19937
    key (624 words); rng.json: the data order, numpy's position/cached gaussian and Python's `random` state."""
    order = sampler.state_dict()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    _, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, words, gauss_next = random.getstate()
    tensors = {"noise": noise_gen.get_state(), "sampler": order["gen"], "torch": torch.get_rng_state(),
               "numpy_key": torch.from_numpy(key.astype(np.int64)),
               **{f"cuda.{i}": s for i, s in enumerate(cuda)}}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "rng.safetensors"))
    (folder / "rng.json").write_text(json.dumps({
        "sampler": {"order": order["order"], "pos": order["pos"]}, "cuda_devices": len(cuda),
        "numpy": {"pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": list(words), "gauss_next": gauss_next}}))


def load_rng(folder: Path, noise_gen: torch.Generator, sampler: BatchSampler) -> None:
    if not (folder / "rng.safetensors").is_file():
        old = " (it has the pickled rng.pt of an older version, which is not loaded: a pickle can run code)" \
            if (folder / "rng.pt").exists() else ""
        raise UserError(f"checkpoint {folder} has no rng.safetensors{old}; resume from a checkpoint this version "
                        f"wrote, or start a new run", field="resume")
    tensors = load_file(str(folder / "rng.safetensors"))
    meta = json.loads((folder / "rng.json").read_text())
    noise_gen.set_state(tensors["noise"])
    sampler.load_state_dict({"gen": tensors["sampler"], **meta["sampler"]})
    torch.set_rng_state(tensors["torch"])
    for i in range(min(meta["cuda_devices"], torch.cuda.device_count())):  # the GPUs both machines have
        torch.cuda.set_rng_state(tensors[f"cuda.{i}"], i)
    n = meta["numpy"]
    np.random.set_state(("MT19937", tensors["numpy_key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    p = meta["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


# ---- the LoRA file ---------------------------------------------------------------------------------------------
def save_lora(transformer, lora_config: LoraConfig, path: str | Path, dtype: str = "bf16") -> Path:
    """The diffusers LoRA format (`transformer.` prefix, peft names, adapter config in the file's metadata): what
    `pipe.load_lora_weights(folder, weight_name=...)` and the app's LoRA option load."""
    path = Path(path)
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    layers = {k: v.detach().to("cpu", torch_dtype).contiguous()
              for k, v in get_peft_model_state_dict(transformer).items()}
    with atomic_path(path) as tmp:
        WanPipeline.save_lora_weights(str(tmp.parent), transformer_lora_layers=layers, weight_name=tmp.name,
                                      transformer_lora_adapter_metadata=lora_config.to_dict())
    return path
