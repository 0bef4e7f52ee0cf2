"""Shared fixtures: an offline environment, one tiny random-weight model cache per session, a manager, one Ray
cluster for the modules that use it (tests/ray_cluster.py)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One OpenMP thread in this process and in every process it starts (the CLI, the app, the benchmark's children, Ray
# workers), set before torch is imported. The tiny model's ops are microseconds long: beside one busy core (another
# job, a browser, a worker) two OpenMP threads wait milliseconds for each other. tests/test_compare.py: 22 s on an
# idle 2-core machine with 1 or 2 threads; beside a busy core 35 s with 2, 22 s with 1. A value already set is kept.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from ray_cluster import FIXTURE, SHARED  # noqa: E402


def pytest_collection_modifyitems(config, items):
    group_ray_modules(items)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def group_ray_modules(items) -> None:
    """The modules that use the shared Ray cluster run one after the other, where the first of them was collected,
    so the cluster starts once for all of them (~10 s each on 2 busy cores); each module keeps its own order."""
    SHARED.modules = {item.path for item in items if FIXTURE in getattr(item, "fixturenames", ())}
    if not SHARED.modules:
        return
    first = next(i for i, item in enumerate(items) if item.path in SHARED.modules)
    others = [item for item in items if item.path not in SHARED.modules]
    items[:] = others[:first] + [item for item in items if item.path in SHARED.modules] + others[first:]


@pytest.hookimpl(trylast=True)  # after the runner's own teardown: the modules' pools are closed by then
def pytest_runtest_teardown(item, nextitem):
    """Stop the shared Ray cluster once the next test is not in one of its modules: no later test runs beside
    Ray's processes or sees its `print`."""
    if nextitem is None or nextitem.path not in SHARED.modules:
        SHARED.stop()


def pytest_sessionfinish(session):
    SHARED.stop()  # an interrupted session too


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


@pytest.fixture(scope="module")
def ray_cluster(tiny_folder):
    """The `ray` module connected to the session's Ray cluster: 2 CPUs on 127.0.0.1 only, this package shipped to
    its workers (tests/ray_cluster.py). Started after the tiny model is built, so the workers inherit its cache
    folder (WAN_UI_CACHE) and build nothing; a module asking for it joins the modules that share it."""
    return SHARED.start()


@pytest.fixture(scope="session")
def random_scorer():
    """One quality scorer with random-weight metric models (nothing is downloaded; the numbers only prove the
    wiring) for the whole session: each new scorer loads CLIP ViT-B-32 and LPIPS again and runs their first
    forwards, ~1.5 s on 2 cores. A test that needs a scorer of its own (a failing loader) builds one."""
    from wan_ui.core.quality import QualityConfig, QualityScorer

    return QualityScorer(QualityConfig.random_weights())


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
    waits milliseconds for the other thread. One thread is 20x faster here (the training tests use it). The session
    runs on one already (OMP_NUM_THREADS above) unless the variable was set to more."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
