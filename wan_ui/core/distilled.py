"""Few-step distilled presets: a step-/CFG-distilled LoRA plus the request settings its authors publish.

A preset in `options.PRESETS` holds options only (the LoRA by hub id, its flow shift, the kernels). A distilled
LoRA also needs request settings — steps and guidance 1 — so each preset here carries `request_hints`, applied
by the CLI's `--preset` where the user did not set those flags (and printed). Settings are the published ones
(each entry's `source` says whose); speed is measured with random LoRA weights of the same rank
(wan_ui/bench/random_lora.py).

The LoRA loads by hub id through the `lora` option (diffusers downloads `owner/repo` + the file path inside it;
Kijai's ComfyUI key layout goes through diffusers' non-diffusers Wan converter). Offline, put the file at the same
path under the LoRA folder (`$WAN_UI_LORA_DIR/Kijai/WanVideo_comfy/...`): a local file wins over the hub.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from wan_ui.core.requests import validate_request
from wan_ui.optim.lora import split_lora_spec

# The kernels of "Fast (quick start)" that hold with a fused LoRA: bf16 + regional compile + cuDNN attention +
# bf16 decode with channels-last VAE weights. Not FP8 (a fused LoRA cannot be merged into torchao FP8 weights),
# not MagCache (its ratios are calibrated on the 50-step base model), no CFG truncation (guidance is 1: no
# unconditional pass at all).
_KERNELS = {"precision": "bf16", "compile": "regional", "attention_backend": "cudnn", "vae_precision": "bf16",
            "vae_channels_last": True}


@dataclass(frozen=True)
class DistilledLora:
    name: str  # preset name
    lora: str  # hub id owner/repo/path/in/repo.safetensors
    strength: float  # LoRA scale
    steps: int  # num_inference_steps
    guidance: float  # CFG scale (1 = no unconditional pass)
    shift: float  # flow_shift of the scheduler
    scheduler: str  # one of the catalogue's samplers
    source: str  # where the settings come from
    licence: str  # what a user must check before use
    options: dict[str, Any] = field(default_factory=lambda: dict(_KERNELS))

    def preset_options(self) -> dict[str, Any]:
        return {**self.options, "lora": f"{self.lora}:{self.strength:g}", "lora_fuse": True,
                "scheduler": self.scheduler, "flow_shift": self.shift}

    def request_hints(self) -> dict[str, Any]:
        return {"num_inference_steps": self.steps, "guidance_scale": self.guidance}


DISTILLED = [
    # CausVid (Yin et al., arXiv 2412.07772, DMD-distilled bidirectional Wan 1.3B), extracted as a rank-32 LoRA by
    # Kijai. Wan2GP's 1.3B profile: 8 steps, CFG 1, shift 2, strength 1; ComfyUI users run it with UniPC.
    DistilledLora(
        name="CausVid 8-step", lora="Kijai/WanVideo_comfy/Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors",
        strength=1.0, steps=8, guidance=1.0, shift=2.0, scheduler="unipc",
        source="Wan2GP's CausVid profile for Wan2.1-T2V-1.3B (8 steps, CFG 1, shift 2, strength 1)",
        licence="community LoRA (Kijai/WanVideo_comfy) derived from CausVid; no licence is stated with the file: "
                "check the CausVid release terms (tianweiy/CausVid) before commercial use; base model Apache-2.0"),
    # Self-Forcing (Huang et al., arXiv 2506.08009), DMD checkpoint for Wan 1.3B extracted as a rank-32 LoRA by Kijai:
    # 4 steps, CFG 1, shift 8. Its sampler is a few-step distillation schedule, not a multistep solver: plain
    # flow-matching Euler is the closest the catalogue offers.
    DistilledLora(
        name="Self-Forcing DMD 4-step",
        lora="Kijai/WanVideo_comfy/LoRAs/Wan2_1_self_forcing_1_3B/Wan2_1_self_forcing_dmd_1_3B_lora_rank_32_fp16"
             ".safetensors",
        strength=1.0, steps=4, guidance=1.0, shift=8.0, scheduler="euler",
        source="Self-Forcing DMD LoRA for Wan2.1-T2V-1.3B as its community users run it (4 steps, CFG 1, shift 8)",
        licence="community LoRA (Kijai/WanVideo_comfy) derived from Self-Forcing (gdhe17/Self-Forcing); no licence "
                "is stated with the file: check the Self-Forcing release terms before commercial use; base model "
                "Apache-2.0"),
]

# Self-Forcing + sliding-tile sparse attention, the window of "Fast (sparse)" (+-3 frames x +-1 tile), first step
# dense: faster than dense at both workloads, and most at `report` (measured: docs/benchmarks/SPARSE.md, "Results").
# The window is ours, not the LoRA authors' setting.
DISTILLED.append(replace(DISTILLED[1], name="Self-Forcing DMD 4-step (sparse)",
                         options={**_KERNELS, "sparse_attention": "sta", "sparse_window": "3,1,1"},
                         source=DISTILLED[1].source + "; sparse self-attention (sliding tile window, ours) on steps 2-4"))


def _with_tiny_decoder(d: DistilledLora) -> DistilledLora:
    """`d` decoding with TAEHV's tiny decoder instead of Wan's VAE (the `vae_decoder` option), named after it:
    "X (tiny decoder)", "X (sparse, tiny decoder)". Channels-last VAE weights are dropped: the VAE does not decode."""
    name = f"{d.name[:-1]}, tiny decoder)" if d.name.endswith(")") else f"{d.name} (tiny decoder)"
    options = {k: v for k, v in d.options.items() if k != "vae_channels_last"}
    return replace(d, name=name, options={**options, "vae_decoder": "tiny"},
                   source=d.source + "; TAEHV's tiny decoder (madebyollin/taehv, taew2_1) instead of Wan's VAE")


# The Self-Forcing presets with the tiny decoder: the VAE decode is a large share of the sparse preset's 480p clip
# (docs/benchmarks/README.md). Its quality cost is TAEHV's author's published one; the benchmark compares each with
# its full-VAE twin.
DISTILLED.extend([_with_tiny_decoder(d) for d in DISTILLED[1:3]])

DISTILLED_PRESETS: dict[str, dict[str, Any]] = {d.name: d.preset_options() for d in DISTILLED}
# preset name -> GenerationRequest fields the preset needs (applied where the user did not set them)
PRESET_REQUEST_HINTS: dict[str, dict[str, Any]] = {d.name: d.request_hints() for d in DISTILLED}
PRESET_NOTES: dict[str, str] = {d.name: f"{d.source}. Licence: {d.licence}" for d in DISTILLED}


def request_hints_for(preset_name: str | None, explicit: dict[str, Any]) -> dict[str, Any]:
    """The preset's request hints, less those the user set (`explicit`: field -> value or None if unset)."""
    hints = PRESET_REQUEST_HINTS.get(preset_name or "", {})
    return {k: v for k, v in hints.items() if explicit.get(k) is None}


def hints_for_lora(lora_spec: str) -> dict[str, Any]:
    """The request hints of the distilled LoRA that a `lora` option value loads ({} if none): the same file name
    as a DISTILLED entry's, by hub id or as a local copy, whatever the set or preset is called."""
    for src, _ in split_lora_spec(lora_spec):
        for d in DISTILLED:
            if src.replace("\\", "/").rsplit("/", 1)[-1] == d.lora.rsplit("/", 1)[-1]:
                return d.request_hints()
    return {}


def request_for_set(request, opts):
    """`request` with the steps and guidance a few-step distilled LoRA needs when the set `opts` loads one (found
    from its `lora` option, so a renamed or custom set gets them too): a 4-step LoRA run at 50 steps with CFG
    measures nothing useful. Used by Compare and the benchmark."""

    hints = hints_for_lora(opts.lora)
    return validate_request(replace(request, **hints)) if hints else request
