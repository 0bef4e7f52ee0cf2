"""What the user asks for: one video (`GenerationRequest`) and the named workloads of the benchmark.

Validation lives here, once, for the UI, the CLI and the benchmark: every error names the field and the
allowed range; a frame count that is not 4k+1 is snapped and the snap is reported, never silent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass, field

from wan_ui.core.errors import ValidationError
from wan_ui.core.fields import FieldSpec, spec_field, specs_of

# Wan's own default negative prompt (Wan2.1 `shared_config.sample_neg_prompt`), as the report used it.
WAN_DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

REPORT_PROMPT = (
    "A golden retriever puppy runs joyfully through a field of blooming sunflowers under a bright blue sky, "
    "with petals floating in the air and butterflies fluttering around. The camera slowly follows the puppy "
    "from a low angle."
)

SIZE_MULTIPLE = 16  # width/height: VAE stride 8 x patch 2
MAX_PROMPT_CHARS = 4000


@dataclass(frozen=True)
class GenerationRequest:
    # Each field's range is declared once, here (wan_ui/core/fields.py): validate_request, the CLI's flags and the
    # UI's widgets all read it.
    prompt: str = spec_field(MISSING, kind="str", max_length=MAX_PROMPT_CHARS, help="what the video shows")
    negative_prompt: str = spec_field(WAN_DEFAULT_NEGATIVE_PROMPT, max_length=MAX_PROMPT_CHARS,
                                      help="what to steer away from (default: Wan's own negative prompt)")
    width: int = spec_field(832, bounds=(16, 2048), multiple_of=SIZE_MULTIPLE, unit="pixels", help="frame width")
    height: int = spec_field(480, bounds=(16, 2048), multiple_of=SIZE_MULTIPLE, unit="pixels", help="frame height")
    num_frames: int = spec_field(81, bounds=(1, 257), help="frames; snapped to 4k+1 (VAE time stride 4), reported")
    fps: int = spec_field(16, bounds=(1, 60), help="frames per second of the written mp4 (not of the model)")
    seed: int = spec_field(0, bounds=(0, 2**32 - 1), help="random seed of the initial noise")
    guidance_scale: float = spec_field(5.0, bounds=(0.0, 20.0), help="classifier-free guidance scale; <= 1 turns "
                                                                     "CFG off (one transformer forward per step)")
    num_inference_steps: int = spec_field(50, bounds=(1, 200), help="denoising steps")
    notes: tuple[str, ...] = field(default=(), compare=False)  # what validation changed (e.g. frame snap)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["notes"] = list(self.notes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GenerationRequest":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValidationError(f"unknown request field(s) {unknown}; valid: {sorted(known)}", field=unknown[0])
        if "prompt" not in d:
            raise ValidationError("request has no prompt", field="prompt")
        notes = d.get("notes", ())
        if not isinstance(notes, (list, tuple)) or not all(isinstance(n, str) for n in notes):
            raise ValidationError(f"notes must be a list of text, got {notes!r}", field="notes")
        return cls(**{**d, "notes": tuple(notes)})

    @property
    def latent_frames(self) -> int:
        return (self.num_frames - 1) // 4 + 1

    def tokens_per_forward(self) -> int:
        """Transformer sequence length: latent frames x (H/16) x (W/16)."""
        return self.latent_frames * (self.height // 16) * (self.width // 16)

    @property
    def forwards_per_step(self) -> int:
        """Transformer forwards per denoising step: 2 with classifier-free guidance (guidance_scale > 1: a
        conditional and an unconditional pass, as the pipeline decides), else 1."""
        return 2 if self.guidance_scale > 1.0 else 1

    def attention_factor(self) -> float:
        """How many times `cost` counts each token-forward: 1 up to ATTENTION_TOKENS tokens per forward, then
        tokens / ATTENTION_TOKENS (see there)."""
        return max(1.0, self.tokens_per_forward() / ATTENTION_TOKENS)

    def cost(self) -> int:
        """What a request asks of the one job slot, in token-forwards: tokens per forward x steps x forwards per
        step, each counted attention_factor() times above the report's size, so that a cost bounds the time at
        every size (docs/RELIABILITY.md, "Round two: errors and limits"). Options that skip work (caches, CFG
        truncation) are not counted: the limit holds for any option set."""
        return round(self.tokens_per_forward() * self.attention_factor() * self.num_inference_steps
                     * self.forwards_per_step)


def snap_frames(n: int) -> int:
    """Nearest 4k+1 at or above 1 (ties go up): 24 -> 25, 96 -> 97, 97 -> 97."""
    k = round((n - 1) / 4 + 1e-9)
    return max(1, 4 * k + 1)


REQUEST_SPECS: dict[str, FieldSpec] = specs_of(GenerationRequest)
# (min, max) of each number field: a view of the specs for code that only needs the range
LIMITS: dict[str, tuple] = {name: spec.bounds for name, spec in REQUEST_SPECS.items() if spec.bounds}


def validate_request(req: GenerationRequest) -> GenerationRequest:
    """Check every field; return a request with frames snapped to 4k+1 and the snap noted in `notes`."""
    if not REQUEST_SPECS["prompt"].check(req.prompt).strip():
        raise ValidationError("prompt must not be empty", field="prompt")
    values = {name: spec.check(getattr(req, name)) for name, spec in REQUEST_SPECS.items()}
    frames = values["num_frames"]
    notes = list(req.notes)
    snapped = snap_frames(frames)
    if snapped > LIMITS["num_frames"][1]:
        snapped -= 4
    if snapped != frames:
        notes.append(f"num_frames {frames} is not of the form 4k+1; snapped to {snapped}")
    values["num_frames"] = snapped
    return dataclasses.replace(req, notes=tuple(notes), **values)


class CostLimitError(ValidationError):
    """A request whose every field is in range but whose whole costs more than the server allows (`check_cost`)."""


def check_cost(request: GenerationRequest, max_cost: int | None, runs: int = 1, what: str = "this request") -> None:
    """Refuse a job that would hold the job slot too long: `runs` generations of `request` (a comparison runs one per
    set) against `max_cost` token-forwards (None: no limit). The message says what to lower."""
    cost = request.cost() * runs
    if max_cost is None or cost <= max_cost:
        return
    times = f"{runs} x " if runs > 1 else ""
    fewer = ", or compare fewer sets" if runs > 1 else ""
    cfg = ", or guidance_scale <= 1 (CFG off halves it)" if request.forwards_per_step == 2 else ""
    factor = request.attention_factor()
    attention = f" x {factor:.2f} for attention above {ATTENTION_TOKENS:,} tokens" if factor > 1 else ""
    raise CostLimitError(
        f"{what} costs {cost:,} token-forwards ({times}{request.tokens_per_forward():,} tokens per forward x "
        f"{request.num_inference_steps} num_inference_steps x {request.forwards_per_step} forwards per "
        f"step{attention}), more than this server's limit of {max_cost:,} (--max-cost): lower num_inference_steps, "
        f"width, height or num_frames{cfg}{fewer}", field="num_inference_steps")


# The tiny random-weight model's own defaults: a video in about 10 s on a 2-core CPU. The real model's defaults
# (832x480, 81 frames, 50 steps) would take hours there (one step at that size: ~3 min). Every size, frame count
# and step count within the limits still runs on the tiny model; these only pick where a first click lands.
TINY_MODEL_DEFAULTS = {"width": 256, "height": 144, "num_frames": 17, "num_inference_steps": 8, "fps": 8}


def default_request(tiny_model: bool, prompt: str = "") -> GenerationRequest:
    """The request a user gets without touching anything: Wan's own defaults, or the tiny model's."""
    return GenerationRequest(prompt, **(TINY_MODEL_DEFAULTS if tiny_model else {}))


def describe_defaults(tiny_model: bool) -> str | None:
    """One line saying that (and how) the defaults follow the model; None for the real model's defaults."""
    if not tiny_model:
        return None
    d = TINY_MODEL_DEFAULTS
    return (f"tiny random-weight model: defaults {d['width']}x{d['height']}, {d['num_frames']} frames, "
            f"{d['num_inference_steps']} steps (about 10 s on a CPU); any size works, larger ones take minutes")


@dataclass(frozen=True)
class Workload:
    name: str
    request: GenerationRequest
    model_hint: str  # which model the workload is meant for
    description: str


WORKLOADS: dict[str, Workload] = {
    "report": Workload(
        "report",
        GenerationRequest(REPORT_PROMPT, width=1248, height=720, num_frames=97, fps=16, seed=33,
                          guidance_scale=6.0, num_inference_steps=65),
        "full",
        "the profiling report's benchmark: 1248x720, 97 frames, 65 steps, CFG 6 (87,750 tokens per forward)",
    ),
    "official480": Workload(
        "official480",
        GenerationRequest(REPORT_PROMPT, width=832, height=480, num_frames=81, fps=16, seed=42,
                          guidance_scale=5.0, num_inference_steps=50),
        "full",
        "Wan's own default for the 1.3B model: 832x480, 81 frames, 50 steps, CFG 5 (32,760 tokens)",
    ),
    "smoke": Workload(
        "smoke",
        GenerationRequest(REPORT_PROMPT, width=64, height=64, num_frames=9, fps=8, seed=0,
                          guidance_scale=6.0, num_inference_steps=2),
        "tiny",
        "CPU tests and CI: 64x64, 9 frames, 2 steps on the tiny model",
    ),
}


# ---- what one job may cost (`python app.py --max-cost`) ----------------------------------------------------------
# A transformer forward of N tokens takes about a*N + b*N^2 seconds: linear layers grow with N, attention with N^2
# (ui/zerogpu.py fits a and b to the H200 floors of ../shared/WORKLOADS.md; attention is most of a forward at the
# report's size). A cost linear in N bounds the time only up to a size: at the largest frames a job that the linear
# cost admitted held an H200 for hours (docs/RELIABILITY.md, "Round two: errors and limits"). So `cost` counts a
# token-forward N / ATTENTION_TOKENS times above the report's size. For any a, b >= 0 the time per cost unit is then
# at most the report's at every size, so a job's cost over the report's bounds its time over the report's (same
# options, same card).
ATTENTION_TOKENS = WORKLOADS["report"].request.tokens_per_forward()  # 25 x 45 x 78 = 87,750 (WORKLOADS.md)
# Default largest cost per job. On a GPU: twice the largest documented workload, the profiling report's (1248x720,
# 97 frames, 65 steps, CFG: 87,750 x 65 x 2 = 11.4 M): a job at the default holds the card at most about twice as
# long as the report's workload in the same options, at any size, plus its VAE decode (not counted; its time per
# size: README.md and docs/RELIABILITY.md); Wan's 480p default (3.3 M) fits 6 times. On a CPU: 512x512, 33 frames,
# 10 steps with CFG (184,320) fits, about a minute on the tiny model (docs/RELIABILITY.md), minutes of the real
# model (its CPU speed: TINY_MODEL_DEFAULTS above).
DEFAULT_MAX_COST_GPU = 2 * WORKLOADS["report"].request.cost()
DEFAULT_MAX_COST_CPU = 200_000


def default_max_cost(cuda: bool) -> int:
    return DEFAULT_MAX_COST_GPU if cuda else DEFAULT_MAX_COST_CPU
