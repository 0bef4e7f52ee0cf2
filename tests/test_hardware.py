"""The allocator default: expandable segments unless the user configured PyTorch's allocator themselves."""

from wan_ui.hardware import ALLOC_CONF_DEFAULT, configure_allocator


def test_allocator_defaults_to_expandable_segments():
    env = {}
    assert configure_allocator(env) == ALLOC_CONF_DEFAULT
    assert env == {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}


def test_users_allocator_settings_are_kept():
    for name in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):  # the old and the torch >= 2.9 name
        env = {name: "max_split_size_mb:128"}
        assert configure_allocator(env) is None
        assert env == {name: "max_split_size_mb:128"}


def test_entry_points_configure_the_allocator_before_cuda(monkeypatch, tmp_path):
    """The CLI sets the default in its process environment (its `options` command needs no model)."""
    import os

    from wan_ui import cli

    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    assert cli.main(["options"]) == 0
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == ALLOC_CONF_DEFAULT
