"""Shared fixtures: an offline environment, one tiny random-weight model cache per session, a manager."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def wan_cache(tmp_path_factory):
    """All model caches of the test session live in one temporary folder (the tiny model is built once)."""
    root = os.environ.get("WAN_UI_TEST_CACHE") or str(tmp_path_factory.mktemp("wan_cache"))
    os.environ["WAN_UI_CACHE"] = root
    return root


@pytest.fixture(scope="session")
def tiny_folder(wan_cache):
    from wan_ui.core.models import materialize, resolve_model

    folder, _ = materialize(resolve_model("tiny"), log=lambda m: None)
    return folder


@pytest.fixture
def manager(tiny_folder):
    from wan_ui.core.manager import ModelManager

    return ModelManager(device="cpu", log=lambda m: None)


@pytest.fixture
def smoke_request():
    from wan_ui.core.requests import WORKLOADS

    return WORKLOADS["smoke"].request


@pytest.fixture
def lora_root(tmp_path, monkeypatch):
    root = tmp_path / "loras"
    root.mkdir()
    monkeypatch.setenv("WAN_UI_LORA_DIR", str(root))
    return root


@pytest.fixture
def one_thread():
    """The tiny model's ops are microseconds long; with 2 OpenMP threads on a busy 2-core machine each one
    waits milliseconds for the other thread. One thread is 20x faster here (the training tests use it)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
