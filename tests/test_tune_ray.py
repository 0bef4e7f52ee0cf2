"""The tuner on a Ray cluster (`python -m wan_ui.tune --ray`): each set's prompts (and the baseline's) run at once,
one per worker, after a warm-up on every worker, and give the videos one machine gives. A local cluster of two
CPU workers on 127.0.0.1 (tests/ray_cluster.py, the session's), the tiny model."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from wan_ui.core.generate import generate
from wan_ui.core.manager import ModelManager
from wan_ui.core.options import OptimizationSet
from wan_ui.tune.cli import main
from wan_ui.tune.run import BASELINE_FOLDER, BaselineStore, TuneConfig, run_tune
from wan_ui.tune.search import Budget

TINY = {"width": 64, "height": 64, "num_frames": 5, "num_inference_steps": 2}
PROMPTS = ["A red fox runs.", "A cat sleeps."]


def test_an_address_nothing_answers_at_is_one_line_naming_the_flag(tmp_path, capsys, monkeypatch):
    """As a process not connected to Ray yet: one already connected (the session's cluster may run by now, started
    by another module) keeps its connection."""
    if "ray" in sys.modules:
        monkeypatch.setattr(sys.modules["ray"], "is_initialized", lambda: False)
    assert main(["--workload", "smoke", "--model", "tiny", "--budget", "psnr>=30", "--out", str(tmp_path),
                 "--ray", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "--ray 127.0.0.1:1" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def pool(ray_cluster):
    """Two workers on the session's cluster (tests/conftest.py `ray_cluster`: this package shipped to them)."""
    from wan_ui.cluster.serving import build_ray_pool

    pool = build_ray_pool("local", workers=2, log=lambda m: None)  # keeps the session's connection
    yield pool
    pool.close()


def test_each_sets_prompts_run_on_the_workers_and_give_one_machines_videos(pool, tmp_path, random_scorer):
    cfg = TuneConfig("smoke", PROMPTS, Budget.parse("psnr>=0"), tmp_path / "t", model="tiny",
                     starts=("cfg_truncation=0.5",), overrides=TINY, max_sets=2)
    outcome = run_tune(cfg, pool, random_scorer, charts=False)
    base, start = outcome.result.trials
    assert base.measurement.status == start.measurement.status == "ok"
    assert [p["prompt"] for p in start.measurement.per_prompt] == PROMPTS  # in the suite's order
    assert base.fidelity["psnr"] == 100.0 and start.fidelity["psnr"] < 100.0
    assert all(worker.resident() for worker in pool.workers)  # the warm-ups reached every worker
    # the baseline kept on disk is the video this machine makes of the same request
    store, request = BaselineStore(tmp_path / "t" / BASELINE_FOLDER), cfg.requests()[1]
    frames, _ = store.get("tiny", request, pool.hw.device_name)
    local = generate(ModelManager(device="cpu", log=lambda m: None), "tiny", request, OptimizationSet(),
                     out_dir=None)
    assert np.array_equal(frames, local.frames)

