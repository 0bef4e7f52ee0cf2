"""20 users click Generate at once (gradio_client, tiny model, smallest request): every call completes or is refused
with the queue-full error, the videos are distinct complete files, and the server keeps serving. The figures of
the same run on the real `app.py` are in docs/RELIABILITY.md (scripts/load_test.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from ui_server import free_port, launches  # noqa: F401  (launches: a fixture)

from wan_ui.options import OptimizationSet

ROOT = Path(__file__).resolve().parents[1]
MAX_QUEUE = 4  # small, so that 20 simultaneous calls take both paths: run, and refused at once


def load_script():
    spec = importlib.util.spec_from_file_location("load_test", ROOT / "scripts" / "load_test.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def small_queue_app(tiny_folder, tmp_path_factory):
    from wan_ui.manager import ModelManager
    from wan_ui.ui import create_demo, launch_kwargs

    outputs = tmp_path_factory.mktemp("load") / "outputs"
    manager = ModelManager(device="cpu", log=lambda m: None)
    demo = create_demo(manager, model="tiny", outputs=outputs, save_settings=False, max_queue=MAX_QUEUE)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            **launch_kwargs(outputs))
    yield url, outputs, manager
    demo.close()


def test_twenty_concurrent_generations_complete_or_get_a_queue_full_error(small_queue_app):
    url, outputs, manager = small_queue_app
    report = load_script().fire(url, calls=20, steps=1, outputs=outputs, max_queue=MAX_QUEUE, timeout_s=240)
    assert report.problems == []  # no other error, distinct complete videos, no .partial, server still serving
    completed, rejected = report.count("completed"), report.count("queue full")
    assert completed + rejected == 20 and completed >= 1
    # joined together: one runs, MAX_QUEUE wait, the rest are refused at once rather than queued without bound
    assert rejected >= 1 and completed <= 20 - rejected
    videos = sorted(outputs.glob("*.mp4"))
    assert len(videos) == completed + 1  # + the check's own normal request
    assert manager.resident() == [manager.key("tiny", OptimizationSet())]


def test_the_queue_bound_has_a_default_and_a_flag(small_queue_app, launches):  # noqa: F811
    import app
    from wan_ui.ui import MAX_QUEUE as DEFAULT

    url, _, _ = small_queue_app
    assert 8 <= DEFAULT <= 64  # a GPU job takes minutes: a bound, but one a small team does not meet
    for argv, expected in ((["--max-queue", "5"], 5), (["--max-queue", "0"], None)):
        assert app.main(["--model", "tiny", *argv]) == 0
        assert launches[-1]["create"]["max_queue"] == expected
    assert app.main(["--model", "tiny"]) == 0 and "max_queue" not in launches[-1]["create"]  # create_demo's default
