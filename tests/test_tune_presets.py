"""The user-preset store (core/user_presets.py) the tuner writes, found by options.preset, the CLI and the app's
dropdown; and the prompt suite reader (core/prompts.py)."""

from __future__ import annotations

import json

import pytest

from wan_ui.core.errors import ValidationError
from wan_ui.core.hardware import Hardware
from wan_ui.core.options import PRESETS, OptimizationSet, preset, preset_names
from wan_ui.core.prompts import DEFAULT_PROMPTS, parse_prompts, read_prompts
from wan_ui.core.user_presets import (
    load_user_presets,
    save_user_preset,
    user_preset_names,
    user_preset_options,
    user_presets_path,
)
from wan_ui.ui.assets import example_prompts
from wan_ui.ui.values import preset_choices


@pytest.fixture
def store(tmp_path, monkeypatch):
    path = tmp_path / "config" / "presets.json"
    monkeypatch.setenv("WAN_UI_PRESETS", str(path))
    return path


def test_the_store_lives_under_the_config_folder_unless_the_environment_says(tmp_path, monkeypatch):
    monkeypatch.delenv("WAN_UI_PRESETS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert user_presets_path() == tmp_path / "wan_ui" / "presets.json"
    monkeypatch.setenv("WAN_UI_PRESETS", str(tmp_path / "x.json"))
    assert user_presets_path() == tmp_path / "x.json"


def test_a_saved_preset_is_found_by_preset_and_listed_after_the_built_in_ones(store):
    assert load_user_presets() == {} and user_preset_names() == []  # no file yet
    save_user_preset("Mine", {"cache": "mag", "cfg_truncation": 0.75}, builtin=PRESETS, note="tuned")
    save_user_preset("Other", {"cache": "first_block"}, builtin=PRESETS)
    assert preset("Mine") == OptimizationSet(cache="mag", cfg_truncation=0.75)
    assert preset_names() == [*PRESETS, "Mine", "Other"]
    data = json.loads(store.read_text())
    assert data["schema"] == "wan_ui.presets/1" and data["presets"]["Mine"]["note"] == "tuned"
    save_user_preset("Mine", {"cache": "none"}, builtin=PRESETS)  # replaced, the others kept
    assert preset("Mine") == OptimizationSet() and user_preset_options("Other") == {"cache": "first_block"}
    with pytest.raises(ValidationError, match="unknown preset 'Nope'.*Mine"):
        preset("Nope")


def test_built_in_and_reserved_names_and_bad_names_are_refused(store):
    for name in ("Fast", "fast", "Defaults", "Custom", "(none)", "", "  ", "a\nb", "x" * 81):
        with pytest.raises(ValidationError):
            save_user_preset(name, {}, builtin=PRESETS)
    assert not store.exists()


def test_a_user_preset_with_an_unknown_option_fails_when_used_naming_the_option(store):
    save_user_preset("Old", {"no_such_option": 1}, builtin=PRESETS)
    with pytest.raises(ValidationError, match="no_such_option"):
        preset("Old")


def test_a_broken_store_hides_no_built_in_preset_and_says_so_when_a_user_preset_is_asked_for(store):
    store.parent.mkdir(parents=True)
    for text in ("{not json", json.dumps({"presets": {"x": {"no_options": 1}}}), json.dumps([1, 2])):
        store.write_text(text)
        assert user_preset_names() == [] and preset_names() == list(PRESETS)
        assert preset("Fast") == OptimizationSet.from_dict(PRESETS["Fast"])
        with pytest.raises(ValidationError, match="presets"):
            preset("Mine")
        with pytest.raises(ValidationError):  # saving would lose what the file holds: refused
            save_user_preset("Mine", {}, builtin=PRESETS)


def test_the_app_dropdown_offers_user_presets(store):
    save_user_preset("Tuned CPU", {"cache": "first_block"}, builtin=PRESETS)
    save_user_preset("Needs a GPU", {"quantization": "torchao_fp8"}, builtin=PRESETS)
    cpu = Hardware(cuda=False, device_name="cpu", capability=None, total_memory_mb=None, packages=frozenset())
    labels = dict((value, label) for label, value in preset_choices(cpu))
    assert labels["Tuned CPU"] == "Tuned CPU"
    assert labels["Needs a GPU"].startswith("Needs a GPU — unavailable:")
    assert list(labels)[-3:] == ["Tuned CPU", "Needs a GPU", "Custom"]


def test_the_prompt_suite_skips_comments_and_blank_lines(tmp_path):
    assert parse_prompts("# c\n\n a \n#b\nc\n") == ["a", "c"]
    suite = read_prompts()
    assert len(suite) >= 2 and not any(p.startswith("#") for p in suite)
    assert example_prompts() == suite == read_prompts(DEFAULT_PROMPTS)
    (tmp_path / "empty.txt").write_text("# only a comment\n")
    (tmp_path / "long.txt").write_text("ok\n" + "x" * 4001 + "\n")
    for path, says in [(tmp_path / "missing.txt", "cannot read"), (tmp_path / "empty.txt", "holds no prompts"),
                       (tmp_path / "long.txt", "prompt 2 .* 4,001 characters")]:
        with pytest.raises(ValidationError, match=says):
            read_prompts(path)
