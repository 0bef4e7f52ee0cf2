import json
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from background import Started

from wan_ui.cli import main as cli_main
from wan_ui.core.errors import GenerationCancelled
from wan_ui.core.generate import generate
from wan_ui.core.options import OptimizationSet
from wan_ui.core.video import read_metadata, read_video


def test_generate_writes_playable_mp4_and_sidecar(manager, smoke_request, tmp_path):
    phases = []
    r = generate(manager, "tiny", smoke_request, OptimizationSet(), out_dir=tmp_path,
                 on_progress=lambda p, d, t: phases.append((p, d, t)))
    frames, fps = read_video(r.video_path)
    assert frames.shape == (9, 64, 64, 3) and fps == smoke_request.fps
    # H.264 is lossy: decoded frames are close to, not equal to, what we wrote
    assert np.abs(frames.astype(int) - r.frames.astype(int)).mean() < 12
    meta = read_metadata(r.video_path)
    assert meta["request"]["seed"] == smoke_request.seed and meta["random_weights"] is True
    assert [p for p, _, _ in phases if p != "denoising"] == ["loading", "encoding", "decoding", "writing"]
    assert [d for p, d, _ in phases if p == "denoising"] == [1, 2]
    # a second run never overwrites the first
    r2 = generate(manager, "tiny", smoke_request, OptimizationSet(), out_dir=tmp_path)
    assert r2.video_path != r.video_path
    assert not list(tmp_path.glob("*.partial*"))


def test_metrics_phases_and_counts(manager, smoke_request):
    r = generate(manager, "tiny", smoke_request, OptimizationSet(), out_dir=None)
    m = r.metrics
    assert set(m.phases) == {"text_encode_s", "denoise_s", "decode_s"}
    assert abs(sum(m.phases.values()) - m.clip_latency_s) < 1e-9
    assert len(m.step_latencies_s) == smoke_request.num_inference_steps
    assert m.forwards_planned == 2 * smoke_request.num_inference_steps == m.forwards_computed
    assert m.peak_vram_mb is None and "no CUDA" in m.vram_note
    assert m.frame_latency_s == pytest.approx(m.clip_latency_s / 9)


def test_cancel_stops_mid_denoise_and_writes_nothing(manager, smoke_request, tmp_path):
    cancel = threading.Event()
    steps = []

    def progress(phase, done, total):
        if phase == "denoising":
            steps.append(done)
            cancel.set()

    req = smoke_request.__class__(**{**smoke_request.to_dict(), "num_inference_steps": 10, "notes": ()})
    with pytest.raises(GenerationCancelled, match="after step 1 of 10"):
        generate(manager, "tiny", req, OptimizationSet(), out_dir=tmp_path, on_progress=progress, cancel=cancel)
    assert steps == [1] and list(tmp_path.iterdir()) == []
    ok = generate(manager, "tiny", smoke_request, OptimizationSet(), out_dir=tmp_path)  # next run works
    assert ok.video_path


ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, cwd) -> Started:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return Started([sys.executable, "-m", "wan_ui", *args], timeout_s=240, cwd=cwd, env=env)


CLI_ERROR_BASE = ["generate", "--model", "tiny", "--prompt", "x", "--width", "64", "--height", "64", "--frames",
                  "9", "--steps", "1"]


@pytest.fixture(scope="module")
def cli_runs(tiny_folder, tmp_path_factory):
    """This module's `python -m wan_ui` processes, started together (tests/background.py): each spends ~9 s of one
    core on imports, and two cores run two at once. {name: the started process}, each in a folder of its own."""
    folders = {name: tmp_path_factory.mktemp(name) for name in ("generate", "user_error", "options")}
    runs = {
        "generate": _cli("generate", "--model", "tiny", "--prompt", "a red ball", "--width", "64", "--height", "64",
                         "--frames", "8", "--steps", "2", "--fps", "8", "--set", "cache=first_block", "--out",
                         str(folders["generate"] / "v.mp4"), "--json", cwd=folders["generate"]),
        "user_error": _cli(*CLI_ERROR_BASE, "--width", "100", cwd=folders["user_error"]),
        "options": _cli("options", "--json", cwd=folders["options"]),
    }
    yield runs
    for run in runs.values():
        run.close()


def test_cli_generate_json_snaps_frames(cli_runs):
    p = cli_runs["generate"].result()
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    for key in ("video", "frames", "width", "height", "fps", "seed", "model", "optimizations", "metrics"):
        assert key in data
    assert data["frames"] == 9 and data["optimizations"]["cache"] == "first_block"
    assert "snapped to 9" in p.stderr and "output is noise" in p.stderr
    assert read_video(data["video"])[0].shape[0] == 9


@pytest.mark.parametrize("args,fragment", [
    (["--width", "100"], "width must be a multiple of 16"),
    (["--set", "cache=huge"], "option cache must be one of"),
    (["--set", "quantization=torchao_fp8"], "needs a CUDA GPU"),
    (["--preset", "Turbo"], "unknown preset"),
    (["--prompt", ""], "prompt must not be empty"),
])
def test_cli_user_errors_are_one_line(tmp_path, tiny_folder, args, fragment, capsys, monkeypatch):
    """In-process through main(argv): any exception would escape here (no traceback is possible unseen)."""
    monkeypatch.chdir(tmp_path)
    try:
        code = cli_main([*CLI_ERROR_BASE, *args])
    except SystemExit as e:  # argparse refuses a flag by exiting
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err and "Traceback" not in err
    assert err.strip().count("\n") == 0


def test_cli_user_error_is_one_line_from_a_real_process(cli_runs):
    """The same through `python -m wan_ui`: no import-time warning or traceback joins the line."""
    p = cli_runs["user_error"].result()
    assert p.returncode == 2
    assert "width must be a multiple of 16" in p.stderr and "Traceback" not in p.stderr
    assert p.stderr.strip().count("\n") == 0


def test_cli_options_json_lists_every_family(cli_runs):
    p = cli_runs["options"].result()
    assert p.returncode == 0
    rows = json.loads(p.stdout)["options"]
    assert {r["family"] for r in rows} >= {"precision", "quantization", "compile", "offload", "lora", "attention",
                                           "scheduler", "cache", "cfg", "vae"}
    for r in rows:
        assert {"name", "family", "load_time", "values", "default", "available", "unavailable_values"} <= set(r)
