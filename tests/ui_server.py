"""The app on 127.0.0.1 in this process (tiny model, CPU), for the gradio_client and browser tests; `app.py`'s
launch arguments recorded instead of a server started.

Import the `ui_app` fixture into a test module; it is module-scoped: one launched app per module. The `launches`
fixture (function-scoped) is imported the same way.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class LaunchedApp:
    url: str
    outputs: Path
    settings_file: Path
    manager: object
    demo: object


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ui_app(tiny_folder, tmp_path_factory):
    from wan_ui.manager import ModelManager
    from wan_ui.quality import BaselineCache, QualityConfig, QualityScorer
    from wan_ui.ui import create_demo, launch_kwargs

    root = tmp_path_factory.mktemp("ui_app")
    manager = ModelManager(device="cpu", log=lambda m: None)
    # random-weight metric models: nothing is downloaded, the numbers only prove the wiring
    demo = create_demo(manager, model="tiny", scorer=QualityScorer(QualityConfig.random_weights()),
                       baseline_cache=BaselineCache(), outputs=root / "outputs", settings_file=root / "last.json")
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            **launch_kwargs(root / "outputs"))
    yield LaunchedApp(url, root / "outputs", root / "last.json", manager, demo)
    demo.close()


@pytest.fixture
def launches(monkeypatch):
    """Record create_demo's and launch's arguments instead of starting a server: one dict per `app.main` call,
    {"manager", "create": create_demo's keywords, "launch": launch's keywords}."""
    calls = []

    class FakeDemo:
        def launch(self, **kwargs):
            calls[-1]["launch"] = kwargs

    def fake_create_demo(manager, **kwargs):
        calls.append({"manager": manager, "create": kwargs})
        return FakeDemo()

    monkeypatch.setattr("wan_ui.ui.create_demo", fake_create_demo)
    return calls
