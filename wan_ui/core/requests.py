"""What the user asks for: one video (`GenerationRequest`) and the named workloads of the benchmark.

Validation lives here, once, for the UI, the CLI and the benchmark: every error names the field and the
allowed range; a frame count that is not 4k+1 is snapped and the snap is reported, never silent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from wan_ui.core.errors import ValidationError

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

# Allowed ranges: (min, max). Width/height must also be multiples of SIZE_MULTIPLE (VAE stride 8 x patch 2).
SIZE_MULTIPLE = 16
LIMITS = {
    "width": (16, 2048),
    "height": (16, 2048),
    "num_frames": (1, 257),
    "fps": (1, 60),
    "seed": (0, 2**32 - 1),
    "guidance_scale": (0.0, 20.0),
    "num_inference_steps": (1, 200),
}
MAX_PROMPT_CHARS = 4000


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str = WAN_DEFAULT_NEGATIVE_PROMPT
    width: int = 832  # pixels, multiple of 16
    height: int = 480  # pixels, multiple of 16
    num_frames: int = 81  # 4k+1 (VAE time stride 4)
    fps: int = 16  # of the written mp4 only
    seed: int = 0
    guidance_scale: float = 5.0  # CFG scale; <= 1 turns CFG off (one forward per step)
    num_inference_steps: int = 50
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


def snap_frames(n: int) -> int:
    """Nearest 4k+1 at or above 1 (ties go up): 24 -> 25, 96 -> 97, 97 -> 97."""
    k = round((n - 1) / 4 + 1e-9)
    return max(1, 4 * k + 1)


def _check_range(name: str, value, kind=int):
    lo, hi = LIMITS[name]
    try:
        v = kind(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
        raise ValidationError(f"{name} must be a number in [{lo}, {hi}], got {value!r}", field=name) from None
    if kind is int and isinstance(value, float) and not float(value).is_integer():
        raise ValidationError(f"{name} must be a whole number in [{lo}, {hi}], got {value!r}", field=name)
    if v != v or not (lo <= v <= hi):  # v != v catches NaN
        raise ValidationError(f"{name} must be in [{lo}, {hi}], got {value!r}", field=name)
    return v


def validate_request(req: GenerationRequest) -> GenerationRequest:
    """Check every field; return a request with frames snapped to 4k+1 and the snap noted in `notes`."""
    if not isinstance(req.prompt, str) or not req.prompt.strip():
        raise ValidationError("prompt must not be empty", field="prompt")
    for name in ("prompt", "negative_prompt"):
        text = getattr(req, name)
        if not isinstance(text, str):
            raise ValidationError(f"{name} must be text", field=name)
        if len(text) > MAX_PROMPT_CHARS:
            raise ValidationError(f"{name} is {len(text)} characters; at most {MAX_PROMPT_CHARS}", field=name)
    values = {}
    for name in ("width", "height"):
        v = _check_range(name, getattr(req, name))
        if v % SIZE_MULTIPLE:
            lo, hi = LIMITS[name]
            raise ValidationError(
                f"{name} must be a multiple of {SIZE_MULTIPLE} in [{lo}, {hi}], got {v} "
                f"(nearest: {max(lo, round(v / SIZE_MULTIPLE) * SIZE_MULTIPLE)})",
                field=name,
            )
        values[name] = v
    for name in ("fps", "seed", "num_inference_steps"):
        values[name] = _check_range(name, getattr(req, name))
    values["guidance_scale"] = _check_range("guidance_scale", getattr(req, "guidance_scale"), float)
    frames = _check_range("num_frames", req.num_frames)
    notes = list(req.notes)
    snapped = snap_frames(frames)
    if snapped > LIMITS["num_frames"][1]:
        snapped -= 4
    if snapped != frames:
        notes.append(f"num_frames {frames} is not of the form 4k+1; snapped to {snapped}")
    values["num_frames"] = snapped
    return dataclasses.replace(req, notes=tuple(notes), **values)


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
