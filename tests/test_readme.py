"""The README carries the compatibility table and the presets exactly as the code defines them."""

from pathlib import Path

from wan_ui.core.options import OPTION_CONFLICTS, PRESETS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_starts_with_the_two_commands():
    head = README.split("## ")[0]
    assert "pip install -r requirements.txt && python app.py" in head
    assert "python -m pytest -q" in head


def test_compatibility_table_matches_check_compatible():
    for what, _, instead in OPTION_CONFLICTS:
        assert f"| {what} | {instead} |" in README


def test_every_preset_is_documented():
    for name in PRESETS:
        assert f"**{name}**" in README
