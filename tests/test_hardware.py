"""The allocator default: expandable segments unless the user configured PyTorch's allocator themselves."""

import pytest

from wan_ui.core.hardware import ALLOC_CONF_DEFAULT, configure_allocator


def test_allocator_defaults_to_expandable_segments():
    env = {}
    assert configure_allocator(env) == ALLOC_CONF_DEFAULT
    assert env == {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}


def test_users_allocator_settings_are_kept():
    for name in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF", "PYTORCH_HIP_ALLOC_CONF"):  # old, new, ROCm
        env = {name: "max_split_size_mb:128"}
        assert configure_allocator(env) is None
        assert env == {name: "max_split_size_mb:128"}


@pytest.mark.parametrize("entry", ["app", "wan_ui.cli", "wan_ui.bench.runner", "wan_ui.train.cli"])
def test_entry_points_configure_the_allocator_first(entry, monkeypatch):
    """Each entry point sets the default before anything else (even `--help` gets it), so it is in place before
    CUDA starts."""
    import importlib
    import os

    for name in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF", "PYTORCH_HIP_ALLOC_CONF"):
        monkeypatch.setenv(name, "x")  # recorded, so the test's change is undone afterwards
        monkeypatch.delenv(name)
    module = importlib.import_module(entry)
    with pytest.raises(SystemExit):
        module.main(["--help"])
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == ALLOC_CONF_DEFAULT
