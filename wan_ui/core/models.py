"""Model sources, all loaded through diffusers' real loading code (`WanPipeline.from_pretrained`).

- the hub checkpoint `Wan-AI/Wan2.1-T2V-1.3B-Diffusers` (downloaded once with progress, timed separately),
  or any local folder in the diffusers layout;
- `tiny`: the same classes with tiny configs and seeded random weights, written once with `save_pretrained`
  into a cache folder and then loaded like the real model (no network; for trying the app and for tests);
- `random-full`: the real 1.3B architecture (configs from the model card) with random weights, for speed and
  memory measurements on a GPU without the checkpoint. Written once, loaded like the real model.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from huggingface_hub import snapshot_download
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from wan_ui.core.errors import ModelLoadError
from wan_ui.core.files import atomic_path
from wan_ui.core.hub import unreachable_reason
from wan_ui.core.requests import REPORT_PROMPT, WAN_DEFAULT_NEGATIVE_PROMPT

HUB_ID = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
TINY = "tiny"
RANDOM_FULL = "random-full"
RANDOM_LABEL = "random-weight model — output is noise; for trying the app and tests"
MARKER = ".wan_ui_complete"  # written last, so a half-written cache folder is never loaded
# Bumped whenever a random model's config changes, so a folder built from an older config is rebuilt, not loaded
# (build 2: the tiny transformer's RoPE table covers the real model's 1024 positions per axis).
RANDOM_BUILD = 2

# Real Wan2.1-T2V-1.3B transformer config (Wan-AI/Wan2.1-T2V-1.3B-Diffusers, transformer/config.json).
FULL_TRANSFORMER = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                        out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
                        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
# UMT5-XXL encoder (the same repository's text_encoder/config.json): 5.68 B parameters.
FULL_TEXT_ENCODER = dict(vocab_size=256384, d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64,
                         feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                         relative_attention_max_distance=128, tie_word_embeddings=False)
# Tiny twins (diffusers tests/pipelines/wan/test_wan.py sizes).
TINY_TRANSFORMER = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
                        out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
                        qk_norm="rms_norm_across_heads", rope_max_seq_len=1024)  # the real model's: any size works
TINY_TEXT_ENCODER = dict(vocab_size=1024, d_model=32, d_ff=37, num_layers=2, num_heads=4, d_kv=8,
                         feed_forward_proj="gated-gelu", relative_attention_num_buckets=8,
                         relative_attention_max_distance=32, tie_word_embeddings=False)
TINY_VAE = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])


@dataclass(frozen=True)
class ModelSource:
    name: str  # what the user typed: "tiny", "random-full", a hub id or a folder
    kind: str  # "hub" | "local" | "tiny" | "random-full"
    location: str  # hub id or folder given to from_pretrained
    random_weights: bool

    @property
    def label(self) -> str:
        if self.kind == TINY:
            return f"tiny {RANDOM_LABEL}"
        if self.kind == RANDOM_FULL:
            return f"full-size (1.3B architecture) {RANDOM_LABEL}"
        return f"{self.name} (real weights)"


def cache_root() -> Path:
    return Path(os.environ.get("WAN_UI_CACHE", Path.home() / ".cache" / "wan_ui"))


def default_model_name(cuda: bool) -> str:
    return HUB_ID if cuda else TINY


def resolve_model(name: str | None, cuda: bool = False) -> ModelSource:
    name = name or default_model_name(cuda)
    if name == TINY:
        return ModelSource(TINY, TINY, str(cache_root() / "tiny-wan"), True)
    if name == RANDOM_FULL:
        return ModelSource(RANDOM_FULL, RANDOM_FULL, str(cache_root() / "random-full-wan"), True)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(f"model folder {path} has no model_index.json (not a diffusers pipeline folder)",
                                 field="model")
        return ModelSource(name, "local", str(path.resolve()), False)
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return ModelSource(name, "hub", name, False)
    raise ModelLoadError(f"model {name!r} is neither 'tiny', 'random-full', an existing folder nor a hub id "
                         f"'owner/name'", field="model")


# ---- building the random-weight folders ----------------------------------------------------------
def build_tokenizer():
    """A small byte-level BPE tokenizer trained on a fixed corpus: deterministic, offline."""

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=["<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = [REPORT_PROMPT, WAN_DEFAULT_NEGATIVE_PROMPT, "a cat playing piano in a jazz bar at night"] * 4
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=512)


def build_random_pipeline(full: bool, seed: int = 0, device: str = "cpu"):
    """A WanPipeline with random weights from `seed`: tiny configs, or the real 1.3B architecture."""

    torch.manual_seed(seed)
    with torch.device(device):
        transformer = WanTransformer3DModel(**(FULL_TRANSFORMER if full else TINY_TRANSFORMER))
        vae = AutoencoderKLWan() if full else AutoencoderKLWan(**TINY_VAE)
        te_cfg = UMT5Config(**(FULL_TEXT_ENCODER if full else TINY_TEXT_ENCODER))
        text_encoder = UMT5EncoderModel._from_config(te_cfg, dtype=torch.bfloat16 if full else torch.float32)
    if full:
        transformer.to(torch.bfloat16)  # the hub checkpoint's transformer is loaded at the requested dtype anyway
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=3.0)
    return WanPipeline(tokenizer=build_tokenizer(), text_encoder=text_encoder.eval(), transformer=transformer.eval(),
                       vae=vae.eval(), scheduler=scheduler)


def materialize(source: ModelSource, log=print, tqdm_class=None) -> tuple[str, float]:
    """Make sure `source` is on disk; return (folder or hub id, seconds spent downloading/building).
    tqdm_class: the hub download's progress bars (model_download.ModelDownload records them for the UI)."""
    if source.kind in (TINY, RANDOM_FULL):
        folder = Path(source.location)
        if _built_marker(folder).get("build") == RANDOM_BUILD:
            return str(folder), 0.0
        t0 = time.perf_counter()

        device = "cuda" if source.kind == RANDOM_FULL and torch.cuda.is_available() else "cpu"
        log(f"building the {source.label} once into {folder} ...")
        pipe = build_random_pipeline(full=source.kind == RANDOM_FULL, device=device)
        with atomic_path(folder) as tmp:  # a failed write (disk full) leaves no half-written folder
            pipe.save_pretrained(tmp, safe_serialization=True)
            (tmp / MARKER).write_text(json.dumps({"seed": 0, "kind": source.kind, "build": RANDOM_BUILD}))
        del pipe
        return str(folder), time.perf_counter() - t0
    if source.kind == "hub":
        return _download(source.name, tqdm_class)
    return source.location, 0.0


def _built_marker(folder: Path) -> dict:
    """What the completion marker of a random model's folder records ({} when absent or unreadable)."""
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _download(repo_id: str, tqdm_class=None) -> tuple[str, float]:
    """Fetch the checkpoint with the hub client's progress bars; timed apart from loading."""

    t0 = time.perf_counter()
    # with the hub surely unreachable (core/hub.py), only the cache is asked: a cached checkpoint still loads, and a
    # missing one says why at once instead of after the hub client's retries
    unreachable = unreachable_reason()
    try:
        folder = snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model",
                                                             "tokenizer*", "spiece*"], tqdm_class=tqdm_class,
                                   local_files_only=unreachable is not None)
    except Exception as e:  # noqa: BLE001 — offline, unknown repo, auth: one clear message
        why = f"it is not downloaded and {unreachable}" if unreachable else f"{type(e).__name__}: {e}"
        raise ModelLoadError(f"could not download {repo_id!r}: {why}. Pass a local folder with "
                             f"--model PATH, or --model tiny / random-full", field="model") from None
    return folder, time.perf_counter() - t0
