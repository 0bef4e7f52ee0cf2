"""The same faults through the app's API (gradio_client): out of GPU memory and a damaged model folder become an
error toast that says what to do, a cancelled comparison leaves no files, and the app keeps serving."""

from __future__ import annotations

import shutil
import time

import pytest
import torch
from ui_server import compare_answer, free_port

from wan_ui.ui.generate_tab import RUN_OUTPUTS

SMALL = dict(prompt="a lighthouse in a storm", width=16, height=16, num_frames=1, num_inference_steps=1)


def raise_oom(*args, **kwargs):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected by the test)")


@pytest.fixture(scope="module")
def app_on_a_copy(tiny_folder, tmp_path_factory):
    """The app serving a local copy of the tiny model (a folder the tests can damage and repair)."""
    from gradio_client import Client

    from wan_ui.core.manager import ModelManager
    from wan_ui.ui.app import create_demo, launch_kwargs

    root = tmp_path_factory.mktemp("faults_app")
    model = root / "model"
    shutil.copytree(tiny_folder, model)
    outputs = root / "outputs"
    manager = ModelManager(device="cpu", log=lambda m: None)
    demo = create_demo(manager, model=str(model), outputs=outputs, save_settings=False)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            **launch_kwargs(outputs))
    yield Client(url, verbose=False, download_files=False), manager, model, outputs
    demo.close()


def generate(client, **kwargs) -> dict:
    return dict(zip(RUN_OUTPUTS, client.predict(**{**SMALL, **kwargs}, api_name="/generate")))


def assert_app_serves(client) -> None:
    assert "options" in client.predict(api_name="/options")
    assert generate(client)["status"].startswith("Done")


def test_out_of_memory_is_a_toast_naming_the_low_vram_preset(app_on_a_copy, monkeypatch):
    from gradio_client.exceptions import AppError

    client, manager, *_ = app_on_a_copy
    generate(client)
    monkeypatch.setattr("diffusers.WanTransformer3DModel.forward", raise_oom)
    with pytest.raises(AppError, match="out of GPU memory during generation; choose the 'Low VRAM' preset"):
        generate(client)
    assert manager.resident() == []  # the pipeline whose state is unknown was dropped
    monkeypatch.undo()
    assert_app_serves(client)
    assert len(manager.resident()) == 1


def test_a_damaged_model_folder_is_a_toast_and_a_repair_needs_no_restart(app_on_a_copy):
    from gradio_client.exceptions import AppError

    client, manager, model, _ = app_on_a_copy
    manager.clear()
    weights = model / "transformer" / "diffusion_pytorch_model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # a download cut short
    try:
        with pytest.raises(AppError, match="could not load model"):
            generate(client)
        assert "options" in client.predict(api_name="/options") and manager.resident() == []
    finally:
        weights.write_bytes(good)
    assert_app_serves(client)


def test_cancelling_a_comparison_leaves_no_files_and_the_next_one_runs(app_on_a_copy):
    client, _, _, outputs = app_on_a_copy
    before = {p for p in outputs.rglob("*") if p.is_file()}
    sets = dict(set_1_preset="Defaults", set_2_preset="Defaults", set_2_options="cache=first_block")
    job = client.submit(**{**SMALL, "num_inference_steps": 40}, **sets, api_name="/compare")
    deadline = time.time() + 120
    while time.time() < deadline:  # the first set has written its video; the second has begun (it stops at a step)
        progress = job.status().progress_data
        if progress and "(2/2)" in (progress[-1].desc or ""):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the comparison never reached its second set")
    assert client.predict(api_name="/cancel_compare").startswith("Run cancelled at")
    out = compare_answer(job.result(timeout=60))
    assert out["status"].startswith("Cancelled: cancelled after step")
    assert {p for p in outputs.rglob("*") if p.is_file()} == before  # no video, sidecar or table left behind
    out = compare_answer(client.predict(**SMALL, **sets, api_name="/compare"))
    assert out["status"].startswith("Compared 2 sets") and out["video_2"]["value"]["path"].endswith(".mp4")
