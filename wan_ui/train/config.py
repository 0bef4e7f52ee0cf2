"""What a training run is asked to do: `TrainConfig`, one field per CLI flag and Train tab widget.

Each field declares its `FieldSpec` once (wan_ui/core/fields.py): `__post_init__` checks it, the CLI's flags
(train/cli.py) and the Train tab's ranges (train/job.py) are built from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass

import torch

from wan_ui.core.errors import ValidationError
from wan_ui.core.fields import FieldSpec, spec_field, specs_of
from wan_ui.core.requests import REQUEST_SPECS
from wan_ui.optim.sparse import parse_window
from wan_ui.train.levers import CHECKPOINT_MODES

# The tiny random-weight model's training defaults (the CLI's and the Train tab's): 30 steps at 64x64x9 run in
# seconds on a 2-core CPU, where the real model's defaults (832x480x49, 1000 steps) would take days; the higher
# learning rate makes the loss visibly fall within those steps. Every value stays settable.
TINY_MODEL_TRAINING = {"width": 64, "height": 64, "frames": 9, "steps": 30, "rank": 8, "lr": 1e-2}
MAX_STEPS = 1_000_000  # a bound on step counts, not a goal: a million steps at ~1 s each is 11.6 days


def _cfg(default=MISSING, help: str = "", **spec_args):
    """A TrainConfig field with its spec; refusals state the whole rule (the Train tab's wording)."""
    return spec_field(default, FieldSpec(help=help, whole_rule=True, **spec_args))


def _as_request(name: str, default, help: str):
    """A field that takes what the request field `name` takes: the same spec, declared once in requests.py."""
    return spec_field(default, dataclasses.replace(REQUEST_SPECS[name], help=help, whole_rule=True))


@dataclass(frozen=True)
class TrainConfig:
    data: str = _cfg(kind="str", help="folder of clips (.mp4) with captions (.txt beside each, or metadata.jsonl)")
    out: str = _cfg("loras/wan_lora.safetensors", help="LoRA file written at the end and on Ctrl-C / stop "
                    "(.safetensors); put it in the app's LoRA folder to use it")
    model: str | None = _cfg(None, kind="str", optional=True, help="tiny | random-full | hub id | local folder "
                             "(default: the hub model on CUDA, else tiny)")
    # LoRA
    rank: int = _cfg(32, bounds=(1, 256), help="LoRA rank")
    # (0, 4096): 16x the largest rank, far beyond the usual alpha = rank or 2 x rank
    alpha: float | None = _cfg(None, kind="float", optional=True, bounds=(0, 4096), exclusive=True,
                               help="lora_alpha (default: rank, i.e. scale 1)")
    ffn: bool = _cfg(False, help="also train LoRA on the feed-forward linears (2 more per block)")
    # optimisation
    lr: float = _cfg(1e-4, bounds=(0, 1), exclusive=True, help="learning rate (1e-4 is the usual LoRA value)")
    weight_decay: float = _cfg(1e-4, bounds=(0.0, 1.0), help="AdamW weight decay")
    warmup_steps: int = _cfg(0, bounds=(0, MAX_STEPS), help="linear learning-rate warm-up, in steps")
    max_grad_norm: float = _cfg(1.0, bounds=(0.0, 1000.0), help="gradient clipping norm; 0 = off")
    steps: int = _cfg(1000, bounds=(1, MAX_STEPS), help="total optimizer steps (a resumed run continues up to this)")
    batch_size: int = _cfg(1, bounds=(1, 64), help="clips per optimizer step")
    seed: int = _as_request("seed", 0, "random seed of the batch order, noise and timesteps")
    # data shape: clips are resized/centre-cropped to width x height and cut to `frames` (4k+1)
    width: int = _as_request("width", 832, "clip width after resize and centre crop")
    height: int = _as_request("height", 480, "clip height after resize and centre crop")
    frames: int = _as_request("num_frames", 49, "frames per clip, 4k+1 (the VAE compresses time 4x after the "
                              "first frame)")
    # > 0: a shift of 0 would draw sigma = 0 at every step
    flow_shift: float = _cfg(3.0, bounds=(0.0, 20.0), exclusive=True,
                             help="timestep shift, as at inference (3.0 for 480p, 5.0 for 720p)")
    # speed levers (train/levers.py)
    bf16: bool = _cfg(False, help="bf16 base weights + autocast (LoRA weights stay fp32)")
    grad_checkpointing: str = _cfg("off", choices=CHECKPOINT_MODES,
                                   help="recompute activations in backward: full, or selective (keeps "
                                        "self-attention outputs); the CLI flag alone means full")
    checkpoint_skip_blocks: int = _cfg(0, bounds=(0, 64),
                                       help="with checkpointing: the last N blocks keep their activations")
    adamw8bit: bool = _cfg(False, help="bitsandbytes 8-bit AdamW (CUDA)")
    fp8_base: bool = _cfg(False, help="store the frozen weights in float8 (layerwise casting)")
    float8_training: bool = _cfg(False, help="torchao float8 matmuls for the base linears (CUDA, compute "
                                 "capability >= 8.9)")
    compile: bool = _cfg(False, help="regional torch.compile of the transformer blocks")
    # "t,h,w": self-attention through the sliding tile window of the "(sparse)" inference presets (a LoRA for them,
    # STA-style sparse fine-tuning); "" = dense, the model as it is
    sparse_window: str = _cfg("", help="train with the sparse self-attention of the '(sparse)' presets, window "
                              "in tiles (e.g. 3,1,1): a LoRA for sparse inference; empty = dense")
    # files
    cache_dir: str | None = _cfg(None, kind="str", optional=True,
                                 help="latent/text-embedding cache (default $WAN_UI_CACHE/train_cache)")
    checkpoint_dir: str | None = _cfg(None, kind="str", optional=True,
                                      help="default: <out stem>_checkpoints beside --out")
    resume: str | None = _cfg(None, kind="str", optional=True,
                              help="a checkpoint folder, or 'latest' (the newest in the checkpoint folder)")
    save_every: int = _cfg(0, bounds=(0, MAX_STEPS), help="checkpoint every N steps; 0 = only at the end / on "
                           "interrupt")
    keep_checkpoints: int = _cfg(3, bounds=(0, 1000), help="newest checkpoints kept (each ~0.3 GB at rank 32); "
                                 "0 = all")
    metrics_jsonl: str | None = _cfg(None, kind="str", optional=True,
                                     help="one JSON record per step + a summary line")
    save_dtype: str = _cfg("bf16", choices=("bf16", "fp32"), help="dtype of the final LoRA file")
    # validation: a video from `validation_prompt` every N steps (written next to the LoRA)
    validate_every: int = _cfg(0, bounds=(0, MAX_STEPS), help="write a validation video every N steps (0 = off)")
    validation_prompt: str = _cfg("", max_length=2000, help="the validation video's prompt")
    validation_steps: int = _as_request("num_inference_steps", 20, "denoising steps of the validation video")
    validation_guidance: float = _as_request("guidance_scale", 5.0, "guidance scale of the validation video")
    # run
    device: str | None = _cfg(None, kind="str", optional=True, help="cuda | cpu (default: cuda if available)")
    progress: bool = _cfg(True, help="tqdm progress bar on stderr")

    def __post_init__(self):
        def bad(msg, f):
            raise ValidationError(msg, field=f)

        for name, spec in specs_of(TrainConfig).items():  # text and float widget values become the field's type
            object.__setattr__(self, name, spec.check(getattr(self, name)))
        if self.frames % 4 != 1:
            bad(f"frames must be 4k+1 (the VAE compresses time 4x after the first frame), got {self.frames}",
                "frames")
        if self.sparse_window:
            parse_window(self.sparse_window)  # a ValidationError naming sparse_window
        if self.validate_every and not self.validation_prompt.strip():
            bad("--validate-every needs --validation-prompt", "validation_prompt")
        if not str(self.out).endswith(".safetensors"):
            bad(f"--out must be a .safetensors file, got {self.out!r}", "out")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype the transformer computes in under autocast: bf16 with `bf16`, else None (fp32, no autocast)."""
        return torch.bfloat16 if self.bf16 else None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
