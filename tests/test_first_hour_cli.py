"""The CLI and the trainer with only their required arguments, on a machine without a GPU (the tiny model):
both succeed, with the tiny model's own defaults, and say so."""

from __future__ import annotations

import json

import imageio.v3 as iio
from train_files import write_dataset

from wan_ui.cli import main as generate_main
from wan_ui.core.requests import TINY_MODEL_DEFAULTS
from wan_ui.train.cli import main as train_main
from wan_ui.train.config import TINY_MODEL_TRAINING


def test_generate_with_only_a_prompt(tiny_folder, tmp_path, capsys, one_thread):
    out = tmp_path / "first.mp4"
    assert generate_main(["generate", "--prompt", "a red fox in the snow", "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    d = TINY_MODEL_DEFAULTS
    assert (result["request"]["width"], result["request"]["height"]) == (d["width"], d["height"])
    assert result["request"]["num_inference_steps"] == d["num_inference_steps"]
    assert iio.imread(out).shape == (d["num_frames"], d["height"], d["width"], 3)
    assert "tiny random-weight model: defaults 256x144" in captured.err


def test_a_flag_the_user_gives_wins_over_the_tiny_models_default(tiny_folder, tmp_path, capsys, one_thread):
    out = tmp_path / "small.mp4"
    assert generate_main(["generate", "--prompt", "x", "--width", "64", "--height", "64", "--frames", "5",
                          "--steps", "1", "--out", str(out)]) == 0
    assert iio.imread(out).shape == (5, 64, 64, 3)


def test_train_with_only_the_data_folder(tiny_folder, tmp_path, capsys, monkeypatch, one_thread):
    data = write_dataset(tmp_path / "clips", 2)
    monkeypatch.chdir(tmp_path)  # the default --out is loras/wan_lora.safetensors under the working folder
    assert train_main(["--data", str(data), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert (tmp_path / "loras" / "wan_lora.safetensors").is_file()
    assert f"steps 0 -> {TINY_MODEL_TRAINING['steps']}" in captured.out
    assert "tiny random-weight model: training defaults" in captured.err
