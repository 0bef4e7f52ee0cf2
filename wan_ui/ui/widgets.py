"""Gradio widgets built from the core's dataclasses, and the small pieces every tab shares.

`Widgets` maps a field name to its component, so handlers receive `{name: value}` through `inputs_kwargs`
(and gradio_client calls endpoints with the same keyword names) and restores return `{component: value}`.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from typing import Iterable

import gradio as gr
from gradio import component_meta

from wan_ui.core.errors import UserError
from wan_ui.core.fields import FieldSpec, widget_range
from wan_ui.core.requests import REQUEST_SPECS, WAN_DEFAULT_NEGATIVE_PROMPT, GenerationRequest
from wan_ui.ui.values import (
    CUSTOM,
    DEFAULTS_PRESET,
    RESOLUTIONS,
    OptionWidget,
    option_widgets,
    preset_choices,
    resolution_label,
)


# ---- components whose values the fields' specs check ---------------------------------------------------------
# Gradio checks some values before a handler runs, and its refusals name no field: Number and Slider refuse a value
# outside minimum/maximum ("Value 0 is less than minimum value 16."), a whole-number Number rounds 32.5 to 32
# silently and fails on text ("abc") with an exception API callers see only as "The upstream Gradio app has raised
# an exception"; Radio and Dropdown refuse a value that is not one of their choices, even the text "512" that the
# API schema advertises for vae_tile (a Radio's schema type is "string" whatever its values). These components
# hand the value to the handler as it was sent, where the field's FieldSpec (wan_ui/core/fields.py) converts it or
# refuses it naming the field and its range. `is_template` makes Gradio draw each as its base component;
# minimum/maximum/step still bound the page's spinner and slider. Subclasses, not a patched instance: Gradio
# rebuilds a component from its class when a handler updates its properties.
@contextmanager
def _no_stub_files():
    """Gradio's ComponentMeta writes a .pyi stub beside the module of every component class it creates (for custom
    component packages); these need none, and a package must not write into its own folder when imported."""
    write = component_meta.create_or_modify_pyi
    component_meta.create_or_modify_pyi = lambda *args, **kwargs: None
    try:
        yield
    finally:
        component_meta.create_or_modify_pyi = write


with _no_stub_files():
    class FieldNumber(gr.Number):
        is_template = True

        def preprocess(self, payload):
            return payload

    class FieldSlider(gr.Slider):
        is_template = True

        def preprocess(self, payload):
            return payload

    class FieldRadio(gr.Radio):
        is_template = True

        def preprocess(self, payload):
            return payload

    class FieldDropdown(gr.Dropdown):
        is_template = True

        def preprocess(self, payload):
            return payload


class Widgets(dict):
    """name -> component."""

    def pick(self, names: Iterable[str]) -> "Widgets":
        return Widgets({n: self[n] for n in names if n in self})

    def updates(self, values: dict) -> dict:
        """{name: value} -> {component: value} for the names this set holds."""
        return {self[n]: v for n, v in values.items() if n in self}


# The request fields whose box on the page says something else than the field's name. The core's messages name the
# field (what an API caller sends); on the page an error about one names the box too: "Steps (num_inference_steps)
# must be in [1, 200], got 0" (guard.describe).
REQUEST_LABELS = {"num_frames": "Frames", "fps": "FPS of the mp4", "guidance_scale": "Guidance (CFG)",
                  "num_inference_steps": "Steps"}


def with_box_label(field: str | None, message: str) -> str:
    """`message` about `field` with the box's label beside the field's name, where the two differ."""
    label = REQUEST_LABELS.get(field or "")
    if label is None:
        return message
    if message.startswith(field):
        return f"{label} ({field}){message[len(field):]}"
    return f"{label} ({field}): {message}"


def error_title(field: str | None) -> str:
    """A user error's toast title: "Invalid num inference steps" for a field's error, "Cannot run" for one that
    names no field. One place for both paths a UserError reaches the page: user_errors_as_toasts (the gr.Error it
    raises) and guard.describe (a guarded handler's toast)."""
    return f"Invalid {field.replace('_', ' ')}" if field else "Cannot run"


@contextmanager
def user_errors_as_toasts():
    """A UserError becomes a gr.Error toast naming the field (its message already says the allowed range);
    the app stays up and the outputs keep their values. The gr.Error carries the field (`.field`) for the page's
    wording (guard.describe)."""
    try:
        yield
    except UserError as e:
        error = gr.Error(str(e), title=error_title(e.field))
        error.field = e.field
        raise error from None


# ---- parameters -----------------------------------------------------------------------------------------
def build_prompt_box(defaults: GenerationRequest | None = None) -> gr.Textbox:
    return gr.Textbox((defaults or GenerationRequest("")).prompt, label="Prompt", lines=3,
                      placeholder="Describe the video…", elem_id="prompt")


def build_request_widgets(defaults: GenerationRequest | None = None, prompt: gr.Textbox | None = None) -> Widgets:
    """Prompt, negative prompt, size, frames, fps, seed, guidance, steps, starting at `defaults` (the model's own:
    requests.default_request; GenerationRequest's when None). prompt: the prompt box when the caller placed it
    elsewhere (the Generate tab puts its Generate button right after it); built here first otherwise."""
    d = defaults or GenerationRequest("")
    w = Widgets()
    w["prompt"] = prompt or build_prompt_box(d)
    w["negative_prompt"] = gr.Textbox(value=WAN_DEFAULT_NEGATIVE_PROMPT, label="Negative prompt (Wan's default)",
                                      lines=2, max_lines=4, elem_id="negative-prompt")
    with gr.Row():
        w["resolution"] = FieldDropdown([*RESOLUTIONS, CUSTOM], value=resolution_label(d.width, d.height),
                                      label="Resolution", elem_id="resolution", scale=2)
        w["width"] = _int_box("width", d.width, "Width")
        w["height"] = _int_box("height", d.height, "Height")
    with gr.Row():
        w["num_frames"] = _int_box("num_frames", d.num_frames, REQUEST_LABELS["num_frames"],
                                   info="4k+1 (VAE time stride 4); other counts are snapped")
        w["fps"] = _int_box("fps", d.fps, REQUEST_LABELS["fps"])
    with gr.Row():
        w["seed"] = _int_box("seed", d.seed, "Seed")
        w["randomize_seed"] = gr.Checkbox(False, label="Randomize seed", elem_id="randomize-seed")
    with gr.Row():
        w["guidance_scale"] = _slider("guidance_scale", d.guidance_scale, "≤ 1 turns CFG off", step=0.5)
        w["num_inference_steps"] = _slider("num_inference_steps", d.num_inference_steps, "whole steps")
    for name in ("width", "height"):
        w[name].input(lambda width, height: resolution_label(width, height), [w["width"], w["height"]],
                      w["resolution"], queue=False, api_visibility="private", show_progress="hidden")
    w["resolution"].input(_resolution_size, w["resolution"], [w["width"], w["height"]], queue=False,
                          api_visibility="private", show_progress="hidden")
    return w


def _int_box(name: str, value: int, label: str, info: str | None = None) -> gr.Number:
    """A whole-number box whose range and step (16 for sizes) are the request field's spec."""
    return FieldNumber(value, label=label, precision=0, info=info, elem_id=name.replace("_", "-"), min_width=90,
                     **widget_range(REQUEST_SPECS[name]))


# ---- sliders that say their range -------------------------------------------------------------------------------
# Gradio's Slider sets a number typed into its box outside [minimum, maximum] to the nearest end when the box loses
# focus (a typed 100000 Steps became 200, and a 200-step run started, without a word). Gradio allows no other
# behaviour, but the box's `release` event carries the typed value just before that (checked in chromium, Gradio
# 6.31: focus sends the old value, leaving the box the typed one, then the box is clamped). So each slider's info
# states its range, and a value its field's spec refuses puts the spec's message there instead, with what the box
# now holds; the next value within the range puts the range back.
def _slider(name: str, value, info: str, step: float | None = None) -> FieldSlider:
    spec = REQUEST_SPECS[name]
    default_info = slider_info(spec, info)
    slider = FieldSlider(value=value, label=REQUEST_LABELS[name], info=default_info, elem_id=_elem_id(name),
                         **widget_range(spec, step=step))
    slider.release(partial(slider_note, spec, default_info), slider, slider, queue=False, api_visibility="private",
                   show_progress="hidden")
    return slider


def slider_info(spec: FieldSpec, info: str) -> str:
    """A slider's info: what it means, then its range ("whole steps · 1–200", kept on one line: word joiners
    around the dash, where a narrow column broke "0–" from "20")."""
    lo, hi = spec.bounds
    return f"{info} · {lo:g}\u2060–\u2060{hi:g}"


def slider_note(spec: FieldSpec, default_info: str, value):
    """The slider's info after a value was typed in its box: `default_info` for a value its spec takes, else the
    spec's message naming the box ("⚠ Steps (num_inference_steps) must be in [1, 200], got 100000: set to 200", the
    end Gradio's slider then puts in the box)."""
    try:
        spec.check(value)
    except UserError as e:
        note = f"⚠ {with_box_label(spec.name, str(e))}"
        lo, hi = spec.bounds
        if isinstance(value, (int, float)) and not lo <= value <= hi:
            note += f": set to {min(max(value, lo), hi):g}"
        return gr.update(info=note)
    return gr.update(info=default_info)


def _elem_id(name: str) -> str:
    return {"num_inference_steps": "steps"}.get(name, name.replace("_", "-"))


def _resolution_size(label: str):
    if label in RESOLUTIONS:
        return RESOLUTIONS[label]
    return gr.skip(), gr.skip()


# ---- optimizations ----------------------------------------------------------------------------------------
FAMILY_LABELS = {"lora": "LoRA", "cfg": "CFG (classifier-free guidance)", "vae": "VAE decode",
                 "cache": "Step cache", "offload": "Offloading", "compile": "Compile (operator fusion)"}


def family_label(family: str) -> str:
    """An option family's section title on the Generate tab."""
    return FAMILY_LABELS.get(family, family.capitalize())


def build_option_widgets(hw) -> Widgets:
    """One widget per OptimizationSet field, grouped by family, from `options.options_table` + a presets dropdown."""
    w = Widgets()
    w["preset"] = FieldDropdown(preset_choices(hw), value=DEFAULTS_PRESET, label="Preset",
                              info="fills the options below; change any afterwards. The Status box then names its "
                                   "lossy levers (docs/FIDELITY.md)", elem_id="preset")
    groups = option_widgets(hw)
    for family, specs in groups.items():
        with gr.Accordion(family_label(family), open=family in ("precision", "cache", "vae"),
                          elem_id=f"family-{family}"):
            for spec in specs:
                w[spec.name] = _option_component(spec)
    return w


def _option_component(spec: OptionWidget):
    common = dict(label=spec.label, info=spec.info, interactive=spec.interactive,
                  elem_id=f"opt-{spec.name.replace('_', '-')}")
    if spec.kind == "checkbox":
        return gr.Checkbox(spec.default, **common)
    if spec.kind == "radio":
        return FieldRadio(list(spec.choices), value=spec.default, **common)
    if spec.kind == "dropdown":
        return FieldDropdown(list(spec.choices), value=spec.default, **common)
    if spec.kind == "number":
        return FieldNumber(spec.default, precision=spec.precision, **spec.range, **common)
    return gr.Textbox(spec.default, placeholder="e.g. path/to/lora.safetensors:0.8", **common)
