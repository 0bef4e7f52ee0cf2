"""What the README's install gives: every preset the app lists can run on an H100-class GPU with the packages
requirements.txt installed (the GPU is simulated; the packages are the ones this environment really has)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from wan_ui.core.hardware import OPTIONAL_PACKAGES, Hardware, probe_hardware
from wan_ui.core.options import PRESETS, check_available, preset
from wan_ui.ui.values import preset_choices

ROOT = Path(__file__).resolve().parents[1]


def simulated_h100() -> Hardware:
    return Hardware(True, "NVIDIA H100 80GB HBM3", (9, 0), 81559.0, probe_hardware().packages)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_listed_preset_runs_on_an_h100_with_the_installed_packages(name):
    check_available(preset(name), simulated_h100())


def test_the_presets_dropdown_marks_none_unavailable_there():
    labels = [label for label, _ in preset_choices(simulated_h100())]
    assert not [label for label in labels if "unavailable" in label]


def test_the_packages_presets_need_are_pinned_in_requirements():
    pinned = {re.split(r"[=<>\s]", line)[0].lower() for line in (ROOT / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith(("#", "-"))}
    needed = {"bitsandbytes", "torchao"}  # "Report best" (NF4) and the Fast presets (FP8)
    assert needed <= pinned and needed <= probe_hardware().packages
    assert needed <= set(OPTIONAL_PACKAGES)
