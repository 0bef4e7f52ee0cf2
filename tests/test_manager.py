import shutil

import numpy as np
import pytest

from wan_ui.core.errors import ModelLoadError
from wan_ui.core.generate import generate
from wan_ui.core.manager import ModelManager
from wan_ui.core.models import MARKER, resolve_model
from wan_ui.core.options import OptimizationSet


def test_tiny_model_loads_through_from_pretrained_folder(tiny_folder):
    import json
    import os

    index = json.load(open(os.path.join(tiny_folder, "model_index.json")))
    assert index["_class_name"] == "WanPipeline"
    assert index["transformer"] == ["diffusers", "WanTransformer3DModel"]
    assert index["text_encoder"] == ["transformers", "UMT5EncoderModel"]
    assert os.path.isfile(os.path.join(tiny_folder, MARKER))
    src = resolve_model("tiny")
    assert src.random_weights and "output is noise" in src.label


def test_runtime_changes_never_reload_weights(manager, smoke_request):
    base = OptimizationSet()
    _, info, fresh = manager.get("tiny", base, smoke_request)
    assert manager.builds == 1 and info.rebuilt and fresh
    for change in ({"cache": "mag"}, {"scheduler": "dpmpp"}, {"attention_slicing": 32}, {"vae_tiling": True},
                   {"cfg_truncation": 0.5}, {}):
        _, info, fresh = manager.get("tiny", base.with_(**change), smoke_request)
        assert manager.builds == 1 and not info.rebuilt
    # nothing changed since the last call: no re-apply, not fresh
    _, info, fresh = manager.get("tiny", base, smoke_request)
    assert info.reapplied == [] and not fresh


def test_load_time_changes_rebuild_and_the_bound_evicts(manager, smoke_request):
    manager.get("tiny", OptimizationSet(), smoke_request)
    manager.get("tiny", OptimizationSet().with_(precision="fp32"), smoke_request)
    assert manager.builds == 2 and len(manager.resident()) == 1
    manager.get("tiny", OptimizationSet(), smoke_request)
    assert manager.builds == 3  # evicted earlier: rebuilt
    two = ModelManager(device="cpu", max_resident=2, log=lambda m: None)
    two.get("tiny", OptimizationSet(), smoke_request)
    two.get("tiny", OptimizationSet().with_(precision="fp32"), smoke_request)
    two.get("tiny", OptimizationSet(), smoke_request)
    assert two.builds == 2 and len(two.resident()) == 2


def test_failed_build_leaves_previous_state(manager, smoke_request, tmp_path, tiny_folder):
    pipe, _, _ = manager.get("tiny", OptimizationSet(), smoke_request)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_folder, broken)
    weights = next((broken / "transformer").glob("*.safetensors"))
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="could not load model"):
        manager.get(str(broken), OptimizationSet(), smoke_request)
    assert manager.builds == 1 and len(manager.resident()) == 1
    again, info, _ = manager.get("tiny", OptimizationSet(), smoke_request)
    assert again is pipe and not info.rebuilt


def test_missing_folder_and_unknown_names(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        resolve_model(str(empty))
    with pytest.raises(ModelLoadError, match="neither 'tiny'"):
        resolve_model("not a model")
    assert resolve_model("Wan-AI/Wan2.1-T2V-1.3B-Diffusers").kind == "hub"


def test_hub_download_offline_is_a_clear_error(manager, smoke_request, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="could not download 'nobody/no-such-wan-model'"):
        manager.get("nobody/no-such-wan-model", OptimizationSet(), smoke_request)
    assert manager.resident() == []


def test_same_seed_same_options_identical_frames(manager, smoke_request):
    a = generate(manager, "tiny", smoke_request, OptimizationSet(), out_dir=None).frames
    b = generate(manager, "tiny", smoke_request, OptimizationSet(), out_dir=None).frames
    assert a.shape == (9, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    c = generate(manager, "tiny", smoke_request.__class__(**{**smoke_request.to_dict(), "seed": 1, "notes": ()}),
                 OptimizationSet(), out_dir=None).frames
    assert not np.array_equal(a, c)
