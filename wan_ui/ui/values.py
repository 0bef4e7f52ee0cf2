"""Pure conversions between the UI's widget values and the core's dataclasses (no Gradio here, unit-tested).

Widgets are named after the fields they fill: the request widgets after `GenerationRequest` fields, the option
widgets after `OptimizationSet` fields (both come from the dataclasses, never from a second list), plus a few UI
names (`resolution`, `randomize_seed`, `preset`, `quality`). A handler collects `{name: value}`, calls
`request_from_values` / `options_from_values`, runs the core, and shows `display_values(result)`.
"""

from __future__ import annotations

import dataclasses
import platform
import random
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from wan_ui.core.compare import DEFAULTS_NAME, MAX_SETS, named_set
from wan_ui.core.devices import describe_host, describe_placement
from wan_ui.core.errors import UserError
from wan_ui.core.fields import FieldSpec, widget_range
from wan_ui.core.options import (PRESETS, OptimizationSet, check_available, fidelity_info, fidelity_summary,
                                 options_table, preset, preset_names)
from wan_ui.core.report import fmt_or_na
from wan_ui.core.requests import REQUEST_SPECS, GenerationRequest, validate_request

# ---- widget names -------------------------------------------------------------------------------------
REQUEST_FIELDS = tuple(f.name for f in dataclasses.fields(GenerationRequest) if f.name != "notes")
OPTION_FIELDS = tuple(OptimizationSet.specs())
SWITCH = FieldSpec(kind="bool")  # the UI's own checkboxes (switch_value), named per call

# Resolution shortcuts; width/height stay editable ("Custom"). 1248x720 is what the report's UI called 720p.
RESOLUTIONS: dict[str, tuple[int, int]] = {
    "1248x720 (report's 720p)": (1248, 720),
    "832x480 (Wan 480p default)": (832, 480),
    "480x832 (Wan 480p portrait)": (480, 832),
    "1280x720 (720p)": (1280, 720),
    "640x368 (quick)": (640, 368),
    "256x256 (quick)": (256, 256),
    "256x144 (tiny model's default)": (256, 144),
    "64x64 (tiny model)": (64, 64),
}
CUSTOM = "Custom"
CUSTOM_PRESET = "Custom"  # the presets dropdown after a manual change
DEFAULTS_PRESET = DEFAULTS_NAME  # the OptimizationSet defaults
NO_SET = "(none)"  # an unused row of the Compare tab


def resolution_label(width, height) -> str:
    for label, size in RESOLUTIONS.items():
        if size == (width, height):
            return label
    return CUSTOM


# ---- widgets -> request / options ---------------------------------------------------------------------
def request_from_values(values: dict, rng: random.Random | None = None) -> GenerationRequest:
    """Widget values -> validated request. With `randomize_seed`, a fresh seed is drawn (and shown after)."""
    fields = {name: values[name] for name in REQUEST_FIELDS if name in values}  # an emptied box: None, refused
    if switch_value(values, "randomize_seed"):
        fields["seed"] = (rng or random.SystemRandom()).randint(*REQUEST_SPECS["seed"].bounds)
    return validate_request(GenerationRequest(**fields))


def switch_value(values: dict, name: str) -> bool:
    """A checkbox outside the dataclasses (randomize_seed, quality): true or false, also as text from an API call
    ("true", "off"); anything else is refused naming it. Absent or None: off."""
    value = values.get(name)
    return False if value is None else dataclasses.replace(SWITCH, name=name).check(value)


def options_from_values(values: dict) -> OptimizationSet:
    """Option widget values (strings, bools, floats from number boxes) -> OptimizationSet, checked per field."""
    return OptimizationSet.from_dict({name: values[name] for name in OPTION_FIELDS if name in values})


# ---- settings -> widgets ------------------------------------------------------------------------------
def values_from_settings(settings: dict) -> dict[str, Any]:
    """Saved settings ({"request": ..., "optimizations": ...}) -> widget values. Unknown keys are errors."""
    if not isinstance(settings, dict) or not isinstance(settings.get("request"), dict):
        raise UserError("settings must be an object with a 'request' object", field="settings_file")
    request = validate_request(GenerationRequest.from_dict({k: v for k, v in settings["request"].items()
                                                            if k != "notes"}))
    optimizations = settings.get("optimizations") or {}
    if not isinstance(optimizations, dict):
        raise UserError(f"optimizations must be an object of option: value, got {optimizations!r}",
                        field="settings_file")
    opts = OptimizationSet.from_dict(optimizations)
    values = {name: getattr(request, name) for name in REQUEST_FIELDS}
    values.update(opts.to_dict())
    values["resolution"] = resolution_label(request.width, request.height)
    values["randomize_seed"] = False  # restoring a video's settings restores the seed that made it
    values["preset"] = preset_of(opts)
    ui = settings.get("ui") if isinstance(settings.get("ui"), dict) else {}  # the last-used file keeps UI switches
    values.update({k: bool(ui[k]) for k in ("randomize_seed", "quality") if k in ui})
    return values


def preset_of(opts: OptimizationSet) -> str:
    if opts == OptimizationSet():
        return DEFAULTS_PRESET
    return next((name for name in PRESETS if preset(name) == opts), CUSTOM_PRESET)


def preset_values(name: str) -> dict[str, Any]:
    """Every option's value under a preset (the defaults for fields the preset leaves alone)."""
    opts = OptimizationSet() if name == DEFAULTS_PRESET else preset(name)
    return opts.to_dict()


def preset_fidelity_note(values: dict) -> str:
    """A preset's status note: each lossy and close lever of its option values, with its class (docs/FIDELITY.md)."""
    return f"Fidelity: {fidelity_summary(options_from_values(values))}."


def preset_choices(hw) -> list[tuple[str, str]]:
    """(label, value) for the presets dropdown; presets this machine cannot run say why in their label."""
    choices = [(DEFAULTS_PRESET, DEFAULTS_PRESET)]
    for name in preset_names():  # the user's own presets (core/user_presets.py) after the built-in ones
        try:
            check_available(preset(name), hw)
            choices.append((name, name))
        except UserError as e:
            choices.append((f"{name} — unavailable: {e}", name))
    return choices + [(CUSTOM_PRESET, CUSTOM_PRESET)]


def named_sets_from_values(values: dict) -> list[tuple[str, OptimizationSet]]:
    """Compare rows `set_i_preset` + `set_i_options` ('key=value, ...') -> [(name, set)], unused rows skipped."""
    sets = []
    for i in range(1, MAX_SETS + 1):
        name = values.get(f"set_{i}_preset")
        if not name or name == NO_SET:
            continue
        try:
            sets.append(named_set(name, values.get(f"set_{i}_options") or ""))
        except UserError as e:
            raise UserError(f"set {i}: {e}", field=f"set_{i}_options") from None
    return sets


# ---- option widgets, generated from options_table -----------------------------------------------------
@dataclasses.dataclass(frozen=True)
class OptionWidget:
    name: str
    family: str
    kind: str  # "checkbox" | "radio" | "dropdown" | "number" | "text"
    label: str
    default: Any
    info: str
    choices: tuple = ()  # (label, value) pairs; unavailable values are labelled "(n/a)"
    interactive: bool = True  # False when nothing but the default can run here
    precision: int | None = None  # 0 for whole numbers
    range: dict | None = None  # a number's minimum / maximum / step (fields.widget_range of its spec)


def option_widgets(hw) -> dict[str, list[OptionWidget]]:
    """family -> widgets, in OptimizationSet field order, from `options.options_table`."""
    groups: dict[str, list[OptionWidget]] = {}
    for row in options_table(hw):
        groups.setdefault(row["family"], []).append(_widget(row))
    return groups


def _widget(row: dict) -> OptionWidget:
    name, values, unavailable = row["name"], row["values"], row["unavailable_values"]
    kind_tag = "load-time: changing it rebuilds the pipeline" if row["load_time"] else "run-time"
    info = f"{row['help']} ({kind_tag})"
    if unavailable:
        info += ". Unavailable here — " + _group_reasons(name, unavailable)
    info += f". Fidelity — {fidelity_info(name)}"  # each value's class (docs/FIDELITY.md)
    label = name.replace("_", " ")
    if values is None:
        if row["bounds"] is None:
            return OptionWidget(name, row["family"], "text", label, row["default"], info)
        spec = OptimizationSet.specs()[name]
        whole = spec.kind == "int"
        return OptionWidget(name, row["family"], "number", label, row["default"], info,
                            precision=0 if whole else None,
                            range=widget_range(spec, step=None if whole else 0.05))  # 0.05: 1/20 of the [0, 1] fractions
    if values == [False, True]:
        return OptionWidget(name, row["family"], "checkbox", label, row["default"], info,
                            interactive=str(True) not in unavailable)
    choices = tuple((f"{v} (n/a)" if str(v) in unavailable else str(v), v) for v in values)
    runnable = len(values) - len(unavailable)
    return OptionWidget(name, row["family"], "radio" if len(values) <= 6 else "dropdown", label, row["default"],
                        info, choices, interactive=runnable > 1)


def _group_reasons(name: str, unavailable: dict[str, str]) -> str:
    """{'bnb_nf4': 'quantization=bnb_nf4 needs a CUDA GPU; ...', ...} -> 'bnb_nf4, bnb_int8: needs a CUDA GPU; ...'"""
    by_reason: dict[str, list[str]] = {}
    for value, reason in unavailable.items():
        by_reason.setdefault(reason.removeprefix(f"{name}={value} "), []).append(value)
    return " · ".join(f"{', '.join(values)}: {reason}" for reason, values in by_reason.items())


# ---- result -> display --------------------------------------------------------------------------------
def status_line(info: dict) -> str:
    """One line after a run: what was made, how fast, what validation changed."""
    m = info["metrics"]
    # the video by name (in the outputs folder): the page does not show where the server keeps its files
    line = (f"Done: {info['frames']} frames at {info['width']}x{info['height']} in {m['clip_latency_s']:.2f} s "
            f"({m['throughput_fps']:.3f} fps), seed {info['seed']} → {Path(info['video']).name}")
    notes = [f"note: {n}" for n in info.get("notes", [])]
    if info.get("random_weights"):
        notes.append(f"model: {info['model_label']}")
    return "\n".join([line, *notes])


def hardware_markdown(m: dict) -> str:
    if m.get("peak_vram_mb") is None:
        return f"**This run:** peak GPU memory n/a — {m.get('vram_note') or 'not measured'}"
    phases = ", ".join(f"{k} {v:,.0f} MiB" for k, v in (m.get("phase_peak_vram_mb") or {}).items())
    return (f"**This run:** peak allocated **{m['peak_vram_mb']:,.0f} MiB**, reserved "
            f"{fmt_or_na(m.get('peak_reserved_mb'), '{:,.0f} MiB')}, NVML peak used "
            f"{fmt_or_na(m.get('nvml_peak_used_mb'), '{:,.0f} MiB')}" + (f"  \nper phase: {phases}" if phases else ""))


def efficiency_markdown(m: dict) -> str:
    ph = m.get("phases") or {}
    phases = " · ".join(f"{k.removesuffix('_s').replace('_', ' ')} {v:.3f} s" for k, v in ph.items())
    steps = m.get("step_latencies_s") or []
    skipped = (m["forwards_planned"] - m["forwards_computed"]
               if m.get("forwards_planned") is not None and m.get("forwards_computed") is not None else None)
    rows = [
        ("Warm-up", fmt_or_na(m.get("warmup_time_s"), "{:.3f} s") + f" — {m.get('warmup_method', '')}"),
        ("Clip-wise latency", fmt_or_na(m.get("clip_latency_s"), "{:.3f} s") + (f" ({phases})" if phases else "")),
        ("Frame-wise latency", fmt_or_na(m.get("frame_latency_s"), "{:.4f} s")),
        ("Throughput", fmt_or_na(m.get("throughput_fps"), "{:.3f} fps")),
        ("Denoising steps", f"{len(steps)}" + (f", median {sorted(steps)[len(steps) // 2]:.3f} s" if steps else "")),
        ("Transformer forwards", f"{fmt_or_na(m.get('forwards_computed'), '{}')} computed of "
                                 f"{fmt_or_na(m.get('forwards_planned'), '{}')} planned"
                                 + (f" ({skipped} skipped by the cache)" if skipped else "")),
    ]
    return _table(rows)


QUALITY_ROWS = (("CLIP score", "clip_score", "{:.3f}"), ("LPIPS vs baseline", "lpips_vs_baseline", "{:.3f}"),
                ("PSNR vs baseline", "psnr_vs_baseline", "{:.2f} dB"),
                ("SSIM vs baseline", "ssim_vs_baseline", "{:.3f}"),
                ("Temporal LPIPS (consecutive frames)", "lpips_temporal", "{:.3f}"))


def accuracy_markdown(m: dict, scored: bool) -> str:
    """Each quality metric, or 'n/a: why' (not requested, metric model unavailable, no baseline)."""
    why = "not computed (tick 'compute quality metrics')" if not scored else "not available (see note)"
    rows = [(label, fmt_or_na(m.get(key), fmt, f"n/a: {why}")) for label, key, fmt in QUALITY_ROWS]
    note = m.get("quality_note")
    return _table(rows) + (f"\n\n*Note: {note}*" if note else "")


def others_markdown(info: dict, versions: dict[str, str]) -> str:
    m = info["metrics"]
    breakdown = " · ".join(f"{k.removesuffix('_s').replace('_', ' ')} {v:.3f} s"
                           for k, v in (m.get("load_breakdown") or {}).items())
    reused = "loaded the weights (load-time options changed or first run)" if info.get("rebuilt") else \
        "reused the resident pipeline (no reload)"
    reapplied = ", ".join(info.get("reapplied") or []) or "none (unchanged)"
    rows = [
        ("Model", f"{info['model']} — {info['model_label']}"),
        ("Load time", fmt_or_na(m.get("load_time_s"), "{:.3f} s") + (f" ({breakdown})" if breakdown else "")),
        ("Manager", reused),
        ("Run-time families re-applied", reapplied),
        ("Device", info["device"]),
        ("GPUs", describe_placement(info.get("parallel"), info["device"])),
        ("Ran on", describe_host(info.get("parallel"), info["device"])),
        ("Options changed from defaults", _diff_text(info.get("optimizations") or {})),
        ("Fidelity (docs/FIDELITY.md)", fidelity_summary(OptimizationSet.from_dict(info.get("optimizations") or {}))),
        ("Versions", " · ".join(f"{k} {v}" for k, v in versions.items())),
    ]
    return _table(rows)


def _diff_text(optimizations: dict) -> str:
    diff = OptimizationSet.from_dict(optimizations).diff_from_default()
    return ", ".join(f"{k}={v}" for k, v in diff.items()) or "none"


def _table(rows: list[tuple[str, str]]) -> str:
    return "| Metric | Value |\n|---|---|\n" + "\n".join(f"| **{k}** | {v.replace('|', '/')} |" for k, v in rows)


def step_rows(m: dict) -> list[dict]:
    return [{"step": i + 1, "seconds": s} for i, s in enumerate(m.get("step_latencies_s") or [])]


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "diffusers", "transformers", "gradio"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


# ---- history ------------------------------------------------------------------------------------------
HISTORY_COLUMNS = ["#", "time", "kind", "size", "frames", "steps", "seed", "clip s", "fps", "peak MiB", "prompt",
                   "options"]


def history_entry(info: dict, kind: str = "generate") -> dict:
    """What History keeps of a run: the result JSON (settings + metrics), when, and from which tab."""
    return {"time": time.strftime("%H:%M:%S"), "kind": kind, "info": info}


def history_row(n: int, entry: dict) -> list:
    info, m = entry["info"], entry["info"]["metrics"]
    r = info["request"]
    prompt = r["prompt"] if len(r["prompt"]) <= 40 else r["prompt"][:39] + "…"
    return [n, entry["time"], entry["kind"], f"{r['width']}x{r['height']}", r["num_frames"], r["num_inference_steps"],
            r["seed"], round(m["clip_latency_s"], 3), round(m["throughput_fps"], 3),
            None if m.get("peak_vram_mb") is None else round(m["peak_vram_mb"]), prompt,
            _diff_text(info["optimizations"])]


def history_caption(n: int, entry: dict) -> str:
    info = entry["info"]
    return f"#{n} {entry['kind']} · seed {info['seed']} · {info['metrics']['clip_latency_s']:.2f} s"


def settings_of(info: dict) -> dict:
    return {"request": info["request"], "optimizations": info["optimizations"]}
