"""scripts/screenshots.py, the README's pictures: one family run end to end in Debian's chromium."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.browser


def load_script():
    spec = importlib.util.spec_from_file_location("screenshots", ROOT / "scripts" / "screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_one_family_makes_its_picture_and_a_cpu_skips_quantization(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("WAN_UI_LORA_DIR", str(tmp_path / "loras"))
    script = load_script()
    assert script.main(["--only", "scheduler", "quantization", "--out", str(tmp_path)]) == 0
    png = (tmp_path / "scheduler.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    skipped = json.loads((tmp_path / "skipped.json").read_text())
    assert list(skipped) == ["quantization"] and "CUDA" in skipped["quantization"]


def test_every_family_of_the_catalogue_has_a_picture():
    from wan_ui.core.options import OptimizationSet

    families = {spec.family for spec in OptimizationSet.specs().values()}
    assert families <= set(load_script().FAMILIES)
