"""One spec per bounded value (`wan_ui.core.fields`): the check of each kind, the CLI flags and widget ranges built
from it, and the request, option and trainer validators agreeing because they read the same specs. No models."""

from __future__ import annotations

import argparse
import dataclasses
import math

import gradio as gr
import pytest

from wan_ui.cli import build_parser as build_generate_parser
from wan_ui.core.errors import ValidationError
from wan_ui.core.fields import FieldSpec, add_argument, specs_of, widget_range
from wan_ui.core.hardware import Hardware
from wan_ui.core.options import OptimizationSet
from wan_ui.core.requests import LIMITS, REQUEST_SPECS, GenerationRequest, validate_request
from wan_ui.train.cli import CLI_GROUPS, config_from_args
from wan_ui.train.cli import build_parser as build_train_parser
from wan_ui.train.config import TINY_MODEL_TRAINING, TrainConfig
from wan_ui.train.job import INT_LIMITS, LR_RANGE, PROMPT_MAX, config_from_values, default_values
from wan_ui.ui.values import option_widgets, request_from_values
from wan_ui.ui.widgets import build_request_widgets

STEPS = FieldSpec("steps", "int", bounds=(1, 200))
SIZE = FieldSpec("width", "int", bounds=(16, 2048), multiple_of=16)
SCALE = FieldSpec("scale", "float", bounds=(0.0, 20.0))
RATE = FieldSpec("lr", "float", bounds=(0, 1), exclusive=True, whole_rule=True)
SWITCH = FieldSpec("tiling", "bool")
MODE = FieldSpec("mode", "choice", choices=("off", "full"))
WINDOW = FieldSpec("window", "str", pattern=r"\d+,\d+", max_length=8, help="'t,h' in tiles")
TRAIN_SPECS = specs_of(TrainConfig)
CPU = Hardware(False, "cpu", None, None, frozenset())


def refusal(spec: FieldSpec, value) -> str:
    with pytest.raises(ValidationError) as e:
        spec.check(value)
    assert e.value.field == spec.name
    return str(e.value)


# ---- the check, kind by kind --------------------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [(64, 64), ("64", 64), (" 7 ", 7), (7.0, 7), ("1e2", 100),
                                             ("12.0", 12)])
def test_whole_numbers_coerce_text_and_integral_floats(value, expected):
    v = STEPS.check(value)
    assert v == expected and type(v) is int


@pytest.mark.parametrize("value, fragment", [
    (0, "steps must be in [1, 200], got 0"),
    (201, "steps must be in [1, 200], got 201"),
    (2**70, "steps must be in [1, 200]"),
    ("1e400", "steps must be a number in [1, 200]"),  # inf as text
    (2.5, "steps must be a whole number in [1, 200], got 2.5"),
    ("2.5", "steps must be a whole number"),
    (math.nan, "steps must be a number in [1, 200]"),
    (math.inf, "steps must be a number in [1, 200]"),
    (True, "steps must be a number"),  # a bool is no number
    ("many", "steps must be a number in [1, 200], got 'many'"),
    ([3], "steps must be a number"),
    (None, "steps is empty; enter a number in [1, 200]"),
])
def test_whole_numbers_refuse_fractions_junk_and_out_of_range_naming_the_field(value, fragment):
    assert fragment in refusal(STEPS, value)


def test_multiples_say_the_nearest_one_inside_the_range():
    assert SIZE.check("832") == 832
    assert "width must be a multiple of 16 in [16, 2048], got 100 (nearest: 96)" in refusal(SIZE, 100)
    assert "(nearest: 2048)" in refusal(SIZE, 2047)
    assert "width must be in [16, 2048], got 8" in refusal(SIZE, 8)


def test_floats_coerce_numbers_and_refuse_nan_inf_and_huge_ints():
    assert SCALE.check("0.5") == 0.5 and SCALE.check(3) == 3.0 and type(SCALE.check(3)) is float
    for value in (math.nan, math.inf, -math.inf, "nan", 25):
        assert refusal(SCALE, value) == f"scale must be in [0.0, 20.0], got {value!r}"
    assert refusal(SCALE, 10**400).startswith("scale must be a number in [0.0, 20.0], got 1000")  # float overflow
    assert "scale must be a number in [0.0, 20.0], got 'x'" in refusal(SCALE, "x")
    assert "scale must be a number" in refusal(SCALE, False)


def test_exclusive_bounds_and_the_whole_rule_wording():
    assert RATE.check("1e-4") == 1e-4
    for value in (0, 1, "fast", None, math.nan):
        assert refusal(RATE, value) == f"lr must be a number in (0, 1), got {value!r}"
    whole = dataclasses.replace(STEPS, whole_rule=True)
    for value in (0, 2.5, None, "many"):
        assert refusal(whole, value) == f"steps must be a whole number in [1, 200], got {value!r}"


def test_bools_take_words_and_refuse_numbers():
    assert SWITCH.check("yes") is True and SWITCH.check(" OFF ") is False and SWITCH.check(True) is True
    for value in (1, 0, "maybe", 1.0):
        assert "tiling must be bool (true or false)" in refusal(SWITCH, value)


def test_text_and_choices():
    assert MODE.check("full") == "full"
    assert "mode must be one of ['off', 'full'], got 'FULL'" in refusal(MODE, "FULL")
    assert "mode must be one of ['off', 'full'], got 3" in refusal(MODE, 3)
    assert WINDOW.check("3,1") == "3,1"
    assert "window has the wrong form ('t,h' in tiles), got '3'" in refusal(WINDOW, "3")
    assert "window must be at most 8 characters, got 9" in refusal(WINDOW, "123456,78")
    assert "window must be text of at most 8 characters, got 31" in refusal(WINDOW, 31)
    assert dataclasses.replace(WINDOW, optional=True).check(None) is None


def test_a_number_without_bounds_cannot_be_declared():
    with pytest.raises(TypeError, match="needs bounds"):
        FieldSpec("n", "int")
    with pytest.raises(TypeError, match="kind must be one of"):
        FieldSpec("n", "decimal", bounds=(0, 1))


def test_every_declared_number_refuses_huge_values_naming_its_field():
    for cls in (GenerationRequest, OptimizationSet, TrainConfig):
        for name, spec in specs_of(cls).items():
            if spec.kind in ("int", "float"):
                with pytest.raises(ValidationError) as e:
                    spec.check(10**30)
                assert e.value.field == name and name in str(e.value)


# ---- argparse from specs ------------------------------------------------------------------------------------
def test_a_flag_built_from_a_spec_refuses_what_the_spec_refuses_and_names_the_flag(capsys):
    p = argparse.ArgumentParser(prog="x")
    add_argument(p, STEPS, default=50)
    add_argument(p, SIZE, "--size", default=64)
    add_argument(p, SWITCH)
    add_argument(p, dataclasses.replace(SWITCH, name="progress"), default=True)
    args = p.parse_args(["--steps", "12", "--size", "32", "--tiling", "--no-progress"])
    assert (args.steps, args.width, args.tiling, args.progress) == (12, 32, True, False)
    assert p.parse_args([]).steps == 50
    for argv, message in ((["--steps", "0"], "argument --steps: steps must be in [1, 200], got '0'"),
                          (["--size", "100"], "argument --size: width must be a multiple of 16"),
                          (["--steps", "2.5"], "argument --steps: steps must be a whole number")):
        with pytest.raises(SystemExit) as e:
            p.parse_args(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert "(a whole number in [1, 200]; default 50)" in p.format_help()


def test_the_trainer_cli_is_built_from_the_config_specs(capsys):
    flags = [name for names in CLI_GROUPS.values() for name in names]
    assert sorted(flags) == sorted(f.name for f in dataclasses.fields(TrainConfig))  # each field once
    p = build_train_parser()
    cfg = config_from_args(p.parse_args(["--data", "d", "--rank", "8", "--lr", "1e-3", "--no-progress",
                                         "--grad-checkpointing"]))
    assert (cfg.rank, cfg.lr, cfg.progress, cfg.grad_checkpointing) == (8, 1e-3, False, "full")
    # the defaults are the config's for the real model, and the tiny model's own for the tiny one
    assert config_from_args(p.parse_args(["--data", "d", "--model", "random-full"])) == \
        TrainConfig(data="d", model="random-full")
    tiny = config_from_args(p.parse_args(["--data", "d", "--model", "tiny"]))
    assert tiny == TrainConfig(data="d", model="tiny", **TINY_MODEL_TRAINING)
    assert config_from_args(p.parse_args(["--data", "d", "--model", "tiny", "--steps", "7"])).steps == 7
    for argv, message in ((["--rank", "257"], "argument --rank: rank must be a whole number in [1, 256]"),
                          (["--lr", "1"], "argument --lr: lr must be a number in (0, 1)"),
                          (["--width", "100"], "argument --width: width must be a multiple of 16"),
                          (["--batch-size", "65"], "argument --batch-size: batch_size must be a whole number")):
        with pytest.raises(SystemExit):
            p.parse_args(["--data", "d", *argv])
        assert message in capsys.readouterr().err


def test_the_generate_cli_refuses_out_of_range_flags_in_one_line(capsys):
    p = build_generate_parser()
    args = p.parse_args(["generate", "--prompt", "x", "--frames", "24", "--guidance", "3.5"])
    assert (args.num_frames, args.guidance_scale, args.num_inference_steps) == (24, 3.5, None)
    for argv, message in ((["--steps", "0"], "error: argument --steps: num_inference_steps must be in [1, 200]"),
                          (["--height", "4096"], "error: argument --height: height must be in [16, 2048]"),
                          (["--fps", "nan"], "error: argument --fps: fps must be a number in [1, 60]")):
        with pytest.raises(SystemExit) as e:
            p.parse_args(["generate", "--prompt", "x", *argv])
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and err.strip().count("\n") == 0


# ---- widget ranges from specs -------------------------------------------------------------------------------
def test_widget_ranges_are_the_specs():
    assert widget_range(REQUEST_SPECS["width"]) == {"minimum": 16, "maximum": 2048, "step": 16}
    assert widget_range(REQUEST_SPECS["guidance_scale"], step=0.5) == {"minimum": 0.0, "maximum": 20.0, "step": 0.5}
    with pytest.raises(TypeError):
        widget_range(REQUEST_SPECS["guidance_scale"])  # a float widget's step is the caller's choice
    with gr.Blocks():
        widgets = build_request_widgets()
    for name, spec in REQUEST_SPECS.items():
        if spec.bounds:
            w = widgets[name]
            assert (w.minimum, w.maximum) == spec.bounds, name
    assert widgets["width"].step == 16 and widgets["num_frames"].step == 1
    options = OptimizationSet.specs()
    numbers = [w for ws in option_widgets(CPU).values() for w in ws if w.kind == "number"]
    assert {w.name for w in numbers} == {n for n, s in options.items() if s.bounds}
    for w in numbers:
        assert (w.range["minimum"], w.range["maximum"]) == options[w.name].bounds


# ---- the validators read the same specs ---------------------------------------------------------------------
def request_outcome(name: str, value):
    try:
        return getattr(validate_request(dataclasses.replace(GenerationRequest("x"), **{name: value})), name)
    except ValidationError as e:
        assert e.field == name
        return "refused"


def train_outcome(name: str, value):
    try:
        return getattr(TrainConfig(**{"data": "d", "frames": 9, name: value}), name)
    except ValidationError as e:
        assert e.field == name
        return "refused"


@pytest.mark.parametrize("request_name, train_name, values", [
    ("width", "width", [16, "64", 100, 8, 2048, 2064, 64.0, 2.5, True, None, "x"]),
    ("seed", "seed", [0, 2**32 - 1, 2**32, -1, "7", 7.5]),
    ("num_inference_steps", "validation_steps", [1, 200, 0, 201, "20", math.nan]),
    ("guidance_scale", "validation_guidance", [0, 20, 20.5, -0.1, "6", math.inf, math.nan]),
])
def test_request_and_trainer_fields_that_share_a_spec_take_the_same_values(request_name, train_name, values):
    assert TRAIN_SPECS[train_name].bounds == REQUEST_SPECS[request_name].bounds
    for value in values:
        assert request_outcome(request_name, value) == train_outcome(train_name, value), value


def test_trainer_frames_share_the_request_range_and_add_4k_plus_1():
    assert INT_LIMITS["frames"] == LIMITS["num_frames"] and INT_LIMITS["width"] == LIMITS["width"]
    assert train_outcome("frames", 261) == "refused" and request_outcome("num_frames", 261) == "refused"
    with pytest.raises(ValidationError, match=r"frames must be 4k\+1"):
        TrainConfig(data="d", frames=10)  # the request snaps 10 -> 9 instead
    assert request_outcome("num_frames", 10) == 9


def test_the_train_tab_and_the_trainer_refuse_with_the_same_message(tmp_path):
    (tmp_path / "clips").mkdir()
    values = {**default_values(cuda=False), "data": "clips", "lora_name": "a"}
    roots = {"data_root": tmp_path, "lora_root": tmp_path}
    for name, bad in (("rank", 0), ("steps", "2.5"), ("batch_size", 65), ("lr", 1), ("lr", "fast")):
        with pytest.raises(ValidationError) as tab:
            config_from_values({**values, name: bad}, model="tiny", device="cpu", **roots)
        with pytest.raises(ValidationError) as cli:
            TrainConfig(data="d", **{name: bad})
        assert str(tab.value) == str(cli.value) and tab.value.field == cli.value.field == name
    assert LR_RANGE == (0, 1) and PROMPT_MAX == TRAIN_SPECS["validation_prompt"].max_length
    cfg = config_from_values({**values, "rank": "16", "steps": 40.0}, model="tiny", device="cpu", **roots)
    assert (cfg.rank, cfg.steps) == (16, 40)


@pytest.mark.parametrize("name", list(OptimizationSet.specs()))
def test_option_sets_check_each_field_with_its_spec(name):
    spec = OptimizationSet.specs()[name]
    for value in ("1", "0.5", 3, 2.5, -1, 10**9, True, "true", None, "x", "6,1,1", "sta", "mag", math.nan):
        try:
            expected = spec.check(value)
        except ValidationError as e:
            with pytest.raises(ValidationError) as got:
                OptimizationSet.from_dict({name: value})
            assert str(got.value) == str(e) and got.value.field == name
            assert str(e).startswith(f"option {name} ")
        else:
            assert getattr(OptimizationSet.from_dict({name: value}), name) == expected


def test_an_emptied_request_box_is_refused_by_the_spec_naming_the_range():
    values = {"prompt": "a cat", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": None}
    with pytest.raises(ValidationError) as e:
        request_from_values(values)
    assert e.value.field == "num_inference_steps" and "enter a number in [1, 200]" in str(e.value)
