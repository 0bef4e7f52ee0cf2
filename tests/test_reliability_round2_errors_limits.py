"""Bounded cost and exposure: a job costing more token-forwards than the server allows is refused when it joins the
queue, naming the fields to lower; one client address holds at most its share of the queue; uploads are bounded;
failed logins are throttled per address; Gradio's cached copies are deleted; `--listen` or `--share` without
`--auth` is refused unless `--no-auth-i-know` (docs/RELIABILITY.md, "Round two: errors and limits")."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from pathlib import Path

import httpx
import pytest
from ui_server import browser_page, free_port, launches, set_number  # noqa: F401  (launches: a fixture)

from wan_ui.core.requests import (
    DEFAULT_MAX_COST_CPU,
    DEFAULT_MAX_COST_GPU,
    TINY_MODEL_DEFAULTS,
    WORKLOADS,
    CostLimitError,
    GenerationRequest,
    check_cost,
)
from wan_ui.ui.generate_tab import RUN_OUTPUTS
from wan_ui.ui.limits import LoginThrottle, ServerLimits, check_job_cost

MAX_COST = 5_000  # token-forwards: 16x16, 1 frame, 200 steps with CFG (400) runs; 256x256, 17 frames, 8 steps doesn't
LIMITS = ServerLimits(max_cost=MAX_COST, jobs_per_user=1, upload_mb=0.002, cache_hours=2 / 3600)
SMALL = dict(prompt="a lighthouse in a storm", width=16, height=16, num_frames=1, num_inference_steps=1, seed=1)


@pytest.fixture(scope="module")
def limited_app(tiny_folder, tmp_path_factory):
    """The app (tiny model, CPU) with LIMITS: create_demo's and launch's arguments as app.py passes them."""
    from wan_ui.core.manager import ModelManager
    from wan_ui.ui.app import create_demo, launch_kwargs

    outputs = tmp_path_factory.mktemp("limits") / "outputs"
    demo = create_demo(ModelManager(device="cpu", log=lambda m: None), model="tiny", outputs=outputs,
                       save_settings=False, limits=LIMITS)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            **launch_kwargs(outputs, LIMITS))
    yield url, outputs
    demo.close()


def client_of(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False)


def generate(client, **kwargs) -> dict:
    return dict(zip(RUN_OUTPUTS, client.predict(**{**SMALL, **kwargs}, api_name="/generate")))


def refused_on_join(client, api_name: str = "/generate", **kwargs) -> str:
    """The message of a job the queue refused (gradio_client's ValidationError: '- <input>: <message>')."""
    from gradio_client.exceptions import ValidationError

    with pytest.raises(ValidationError) as e:
        client.predict(**kwargs, api_name=api_name)
    return str(e.value)


# ---- cost ---------------------------------------------------------------------------------------------------------
def test_cost_is_tokens_times_steps_times_forwards_per_step():
    report, official = WORKLOADS["report"].request, WORKLOADS["official480"].request
    assert report.cost() == 87_750 * 65 * 2 and official.cost() == 32_760 * 50 * 2
    assert dataclasses.replace(report, guidance_scale=1.0).cost() == 87_750 * 65  # CFG off: one forward a step
    check_cost(report, DEFAULT_MAX_COST_GPU)  # the report's workload and Wan's 480p default run on a GPU
    assert DEFAULT_MAX_COST_GPU == 2 * report.cost() and DEFAULT_MAX_COST_GPU // official.cost() == 6
    with pytest.raises(CostLimitError, match=r"^this request costs 3,276,000 token-forwards \(32,760 tokens per "
                                             r"forward x 50 num_inference_steps x 2 forwards per step\), more than "
                                             r"this server's limit of 200,000 \(--max-cost\): lower "
                                             r"num_inference_steps, width, height or num_frames, or guidance_scale "
                                             r"<= 1 \(CFG off halves it\)$"):
        check_cost(official, DEFAULT_MAX_COST_CPU)
    check_cost(GenerationRequest("x", **TINY_MODEL_DEFAULTS), DEFAULT_MAX_COST_CPU)  # the CPU's first click runs
    check_cost(report, None)  # no limit


def test_the_gpu_default_bounds_a_jobs_time_at_every_size():
    """Above the report's size each token-forward counts tokens / 87,750 times (attention grows with tokens^2), so
    a job the GPU default admits denoises at most twice as long as the report's workload at any size, by the
    per-forward times fitted to the H200 floors (ui/zerogpu.py); the linear cost let the largest frames hold the
    card for hours."""
    from wan_ui.ui.zerogpu import FORWARD_A, FORWARD_B

    def denoise_s(r: GenerationRequest) -> float:
        tokens = r.tokens_per_forward()
        return r.num_inference_steps * r.forwards_per_step * (FORWARD_A * tokens + FORWARD_B * tokens ** 2)

    report = WORKLOADS["report"].request
    bound_s = 2 * denoise_s(report)
    admitted = 0
    for width, height in ((256, 256), (832, 480), (1248, 720), (1280, 1280), (2048, 2048)):
        for frames in (17, 81, 97, 257):
            for guidance in (1.0, 5.0):
                one = GenerationRequest("x", width=width, height=height, num_frames=frames, guidance_scale=guidance,
                                        num_inference_steps=1)
                steps = min(200, DEFAULT_MAX_COST_GPU // one.cost())  # the most the default admits
                if steps:
                    longest = dataclasses.replace(one, num_inference_steps=steps)
                    check_cost(longest, DEFAULT_MAX_COST_GPU)
                    assert denoise_s(longest) <= bound_s * 1.001, (width, height, frames, guidance, steps)
                    admitted += 1
    assert admitted >= 30
    largest = GenerationRequest("x", width=2048, height=2048, num_frames=257, num_inference_steps=1)
    linear = largest.tokens_per_forward() * 2  # what the cost was before: 23 steps of it fit 25 M, ~2.4 h
    assert 25_000_000 // linear * denoise_s(largest) > 2 * 3600
    with pytest.raises(CostLimitError, match=r"^this request costs 25,849,340 token-forwards \(1,064,960 tokens "
                                             r"per forward x 1 num_inference_steps x 2 forwards per step x 12.14 for "
                                             r"attention above 87,750 tokens\), more than this server's limit of "
                                             r"22,815,000 \(--max-cost\): lower"):
        check_cost(largest, DEFAULT_MAX_COST_GPU)
    check_cost(dataclasses.replace(largest, guidance_scale=1.0), DEFAULT_MAX_COST_GPU)  # one forward still runs
    tiny = GenerationRequest("x", **TINY_MODEL_DEFAULTS)
    assert tiny.attention_factor() == 1.0 and tiny.cost() == 720 * 8 * 2  # below the report's size: unchanged


def test_a_costly_job_is_refused_when_it_joins_naming_the_fields(limited_app):
    url, outputs = limited_app
    client = client_of(url)
    before = set(outputs.glob("*"))
    message = refused_on_join(client, **{**SMALL, "width": 256, "height": 256, "num_frames": 17,
                                         "num_inference_steps": 8, "guidance_scale": 5.0})
    assert message == ("1 parameter(s) failed validation:\n- num_inference_steps: this request costs 20,480 "
                       "token-forwards (1,280 tokens per forward x 8 num_inference_steps x 2 forwards per step), more "
                       "than this server's limit of 5,000 (--max-cost): lower num_inference_steps, width, height or "
                       "num_frames, or guidance_scale <= 1 (CFG off halves it)")
    assert set(outputs.glob("*")) == before  # nothing ran
    # two sets of a request that runs alone: a comparison runs one per set
    cheap = {**SMALL, "width": 64, "height": 64, "num_frames": 17, "num_inference_steps": 32, "guidance_scale": 1.0}
    assert GenerationRequest(**cheap).cost() == 2_560 <= MAX_COST and generate(client, **cheap)["status"].startswith(
        "Done")
    message = refused_on_join(client, "/compare", **cheap, set_1_preset="Defaults", set_2_preset="CPU quick")
    assert "this comparison costs 5,120 token-forwards (2 x 80 tokens per forward x 32" in message
    assert message.endswith("or compare fewer sets")
    # a bad value is still the handler's, which names it (AppError), not a cost refusal
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=r"width must be a multiple of 16"):
        generate(client, width=70)


@pytest.mark.browser
def test_the_page_shows_the_cost_refusal(limited_app):
    from playwright.sync_api import expect

    url, _ = limited_app
    with browser_page(url) as page:
        set_number(page, "steps", 150)
        page.click("#generate-btn")
        expect(page.locator(".toast-body").filter(
            has_text="this request costs 216,000 token-forwards (720 tokens per forward x 150 num_inference_steps")
        ).to_be_visible()


def test_the_handler_checks_the_cost_again():
    values = {**SMALL, "num_inference_steps": 200, "width": 64, "height": 64}
    check_job_cost(values, None)
    with pytest.raises(CostLimitError, match="6,400 token-forwards"):
        check_job_cost(values, MAX_COST)


# ---- each user's share of the queue -----------------------------------------------------------------------------
def test_an_address_holds_at_most_its_share_of_the_queue(limited_app, monkeypatch):
    from wan_ui.ui import generate_tab

    url, _ = limited_app
    release, started = threading.Event(), threading.Event()
    real = generate_tab.generate

    def held(*args, **kwargs):  # the first job holds the GPU slot until the test lets it go
        started.set()
        release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(generate_tab, "generate", held)
    first = client_of(url).submit(**SMALL, api_name="/generate")
    try:
        assert started.wait(60)
        other_page = client_of(url)  # another session from the same address
        message = refused_on_join(other_page, **SMALL)
        assert message.endswith("- prompt: this address already has 1 GPU jobs waiting or running, this server's "
                                "limit per user (--max-jobs-per-user 1); wait for one to finish")
    finally:
        release.set()
    assert dict(zip(RUN_OUTPUTS, first.result(timeout=120)))["status"].startswith("Done")
    monkeypatch.setattr(generate_tab, "generate", real)
    assert generate(other_page)["status"].startswith("Done")  # its place is free again


def test_a_burst_of_joins_from_one_address_gets_one_place(limited_app, monkeypatch):
    """Twelve calls from one address join at the same moment (raw HTTP, concurrently): one job is queued, eleven
    refused, because each join sees the ones before it."""
    from wan_ui.ui import generate_tab

    url, _ = limited_app
    release = threading.Event()
    real = generate_tab.generate
    monkeypatch.setattr(generate_tab, "generate", lambda *a, **k: (release.wait(60), real(*a, **k))[1])
    params = client_of(url).view_api(return_format="dict", print_info=False)["named_endpoints"]["/generate"]
    data = [None] + [SMALL.get(p["parameter_name"], p["parameter_default"]) for p in params["parameters"]]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as http:
            return await asyncio.gather(*(http.post(url + "gradio_api/call/generate", json={"data": data})
                                          for _ in range(12)))

    try:
        answers = asyncio.run(burst())
    finally:
        release.set()
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] + [422] * 11, codes
    refused = next(a for a in answers if a.status_code == 422).json()["detail"]
    assert [d["message"] for d in refused if not d["is_valid"]] == [
        "this address already has 1 GPU jobs waiting or running, this server's limit per user "
        "(--max-jobs-per-user 1); wait for one to finish"]
    event = next(a for a in answers if a.status_code == 200).json()["event_id"]
    stream = httpx.get(f"{url}gradio_api/call/generate/{event}", timeout=120).text
    assert "event: complete" in stream and "Done:" in stream


def wait_for(condition, what: str, timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.02)


def test_a_running_batch_is_one_job_in_its_owners_share(limited_app, monkeypatch):
    """The Batch tab runs outside the queue: its running batch takes one place of its owner's share, and a user who
    holds the share cannot start one (the app's one batch, one video at a time: each video counting would make a
    batch larger than the share impossible)."""
    from gradio_client.exceptions import AppError

    from wan_ui.core import batch
    from wan_ui.ui import generate_tab

    url, _ = limited_app
    client = client_of(url)
    release, item = threading.Event(), threading.Event()
    real = batch.generate

    def held_item(*args, **kwargs):
        item.set()
        release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "generate", held_item)
    try:
        client.predict(**SMALL, prompts="one\ntwo", api_name="/batch_start")
        assert item.wait(60)
        message = refused_on_join(client, **SMALL)
        assert message.endswith("- prompt: this address already has 1 GPU jobs waiting or running (a running batch "
                                "counts as one), this server's limit per user (--max-jobs-per-user 1); wait for one "
                                "to finish")
    finally:
        release.set()
    wait_for(lambda: client.predict(api_name="/batch_status")[3]["phase"] == "done", "the batch is done")
    assert generate(client)["status"].startswith("Done")  # its place is free again

    started, release = threading.Event(), threading.Event()
    real_generate = generate_tab.generate
    monkeypatch.setattr(generate_tab, "generate", lambda *a, **k: (started.set(), release.wait(60),
                                                                   real_generate(*a, **k))[2])
    job = client.submit(**SMALL, api_name="/generate")
    try:
        assert started.wait(60)
        with pytest.raises(AppError, match=r"this address already has 1 GPU jobs waiting or running, this server's "
                                           r"limit per user \(--max-jobs-per-user 1\); wait for one to finish"):
            client.predict(**SMALL, prompts="three", api_name="/batch_start")
    finally:
        release.set()
    assert dict(zip(RUN_OUTPUTS, job.result(timeout=120)))["status"].startswith("Done")


@pytest.fixture(scope="module")
def users_app(tiny_folder, tmp_path_factory):
    """The app behind a login of two users (ann, bob) with a share of one GPU job per user."""
    from wan_ui.core.manager import ModelManager
    from wan_ui.ui.app import create_demo, launch_kwargs

    limits = ServerLimits(jobs_per_user=1)
    outputs = tmp_path_factory.mktemp("users") / "outputs"
    demo = create_demo(ModelManager(device="cpu", log=lambda m: None), model="tiny", outputs=outputs,
                       save_settings=False, limits=limits)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            auth=[("ann", "a-pass"), ("bob", "b-pass")], **launch_kwargs(outputs, limits))
    yield url
    demo.close()


def test_logged_in_users_each_get_their_share_from_one_address(users_app, monkeypatch):
    from gradio_client import Client

    from wan_ui.ui import generate_tab

    started, release = threading.Event(), threading.Event()
    real = generate_tab.generate
    monkeypatch.setattr(generate_tab, "generate", lambda *a, **k: (started.set(), release.wait(60), real(*a, **k))[2])
    ann, bob = (Client(users_app, auth=auth, verbose=False, download_files=False)
                for auth in (("ann", "a-pass"), ("bob", "b-pass")))
    first = ann.submit(**SMALL, api_name="/generate")
    try:
        assert started.wait(60)
        assert refused_on_join(ann, **SMALL).endswith(  # ann's second job, from another session
            "- prompt: user ann already has 1 GPU jobs waiting or running, this server's limit per user "
            "(--max-jobs-per-user 1); wait for one to finish")
        second = bob.submit(**SMALL, api_name="/generate")  # same address, another user: bob's own share
    finally:
        release.set()
    for job in (first, second):
        assert dict(zip(RUN_OUTPUTS, job.result(timeout=120)))["status"].startswith("Done")


def test_whose_share_a_job_counts_in():
    from types import SimpleNamespace

    from wan_ui.ui.limits import BackgroundJobs, user_key

    page = SimpleNamespace(client=SimpleNamespace(host="10.0.0.7"), username=None)
    assert user_key(page) == ("address", "10.0.0.7")
    assert user_key(SimpleNamespace(client=page.client, username="ann")) == ("user", "ann")
    assert user_key(page, username="bob") == ("user", "bob")  # as the queue passes it
    jobs, running = BackgroundJobs(), [True]
    jobs.started("batch", ("user", "ann"), lambda: running[0])
    assert jobs.held(("user", "ann")) == 1 and jobs.held(("user", "bob")) == 0
    running[0] = False
    assert jobs.held(("user", "ann")) == 0  # an ended batch holds no place
    jobs.started("batch", ("user", "bob"), lambda: True)  # the app's next batch is someone else's
    assert jobs.held(("user", "ann")) == 0 and jobs.held(("user", "bob")) == 1


# ---- uploads and Gradio's cache ---------------------------------------------------------------------------------
def test_an_upload_over_the_bound_is_refused(limited_app, tmp_path):
    from gradio_client import handle_file

    url, _ = limited_app
    small = tmp_path / "small.json"
    small.write_text('{"request": {"prompt": "a cat", "seed": 7}}')
    assert 7 in client_of(url).predict(handle_file(str(small)), api_name="/load_settings")
    answer = httpx.post(url + "gradio_api/upload", files={"files": ("big.json", b" " * 2_001)}, timeout=30)
    assert answer.status_code == 413 and "maximum allowed size of 2000 bytes" in answer.text


def test_gradios_copies_of_results_are_deleted_and_the_outputs_kept(limited_app):
    url, outputs = limited_app
    out = generate(client_of(url))
    copy, original = Path(out["video"]["path"]), Path(out["result_json"]["video"])
    assert copy.exists() and original.exists() and copy != original
    deadline = time.time() + 30
    while copy.exists() and time.time() < deadline:  # delete_cache=(1 s, 2 s)
        time.sleep(0.5)
    assert not copy.exists() and original.exists()


# ---- logins -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def login_app():
    """A page behind a login with the throttle app.py installs (3 failed logins a minute)."""
    import gradio as gr

    with gr.Blocks() as demo:
        gr.Markdown("behind a login")
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            auth=("ann", "s3cret"), **ServerLimits(logins_per_minute=3).launch_kwargs())
    yield url
    demo.close()


def login(url: str, user: str, password: str) -> httpx.Response:
    return httpx.post(url + "login", data={"username": user, "password": password}, timeout=30)


def test_failed_logins_are_throttled_per_address(login_app):
    assert login(login_app, "ann", "s3cret").status_code == 200  # successes are not counted
    assert [login(login_app, "ann", f"guess{i}").status_code for i in range(3)] == [400, 400, 400]
    throttled = login(login_app, "ann", "s3cret")  # the right password too: not even checked
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) in range(1, 61)
    assert "too many failed logins from this address: at most 3 a minute" in throttled.json()["detail"]


def test_the_throttle_counts_each_address_and_forgets_after_a_minute():
    now = [0.0]
    answers = []

    async def gradio(scope, receive, send):  # a /login that refuses every password
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    throttle = LoginThrottle(gradio, per_minute=2, clock=lambda: now[0])

    def attempt(address: str, path: str = "/login") -> int:
        async def send(message):
            if message["type"] == "http.response.start":
                answers.append(message["status"])

        scope = {"type": "http", "method": "POST", "path": path, "client": (address, 5000)}
        asyncio.run(throttle(scope, None, send))
        return answers[-1]

    assert [attempt("10.0.0.1") for _ in range(3)] == [400, 400, 429]
    assert attempt("10.0.0.2") == 400  # another address is not held back
    assert attempt("10.0.0.1", "/config") == 400  # only /login is throttled
    now[0] = 59.0
    assert attempt("10.0.0.1") == 429
    now[0] = 60.5
    assert attempt("10.0.0.1") == 400


# ---- app.py's flags -------------------------------------------------------------------------------------------------
def test_listen_or_share_without_auth_is_refused_unless_said(launches):  # noqa: F811
    import app

    for argv in (["--listen"], ["--share"], ["--listen", "--model", "tiny"]):
        with pytest.raises(SystemExit, match=r"without --auth anyone who reaches it can use the GPU: add --auth "
                                             r"USER:PASS, or --no-auth-i-know"):
            app.main(argv)
    assert launches == []  # refused before anything was built
    assert app.main(["--listen", "--no-auth-i-know", "--model", "tiny"]) == 0
    assert launches[-1]["launch"]["server_name"] == "0.0.0.0" and launches[-1]["launch"]["auth"] is None
    assert app.main(["--listen", "--auth", "ann:s3cret", "--model", "tiny"]) == 0
    assert app.main(["--model", "tiny"]) == 0 and launches[-1]["launch"]["server_name"] == "127.0.0.1"


def test_the_limits_have_flags_and_defaults_by_machine(launches, monkeypatch, capsys):  # noqa: F811
    import app
    from wan_ui.ui.server import build_parser, server_limits

    monkeypatch.delenv("SPACE_ID", raising=False)
    assert app.main(["--model", "tiny"]) == 0
    create, launch = launches[-1]["create"], launches[-1]["launch"]
    assert create["limits"] == ServerLimits(max_cost=DEFAULT_MAX_COST_CPU, jobs_per_user=4, upload_mb=50,
                                            logins_per_minute=10, cache_hours=24)
    assert launch["max_file_size"] == 50_000_000
    assert [m.cls for m in launch["app_kwargs"]["middleware"]] == [LoginThrottle]
    assert app.main(["--model", "tiny", "--max-cost", "0", "--max-jobs-per-user", "0", "--max-upload-mb", "0",
                     "--max-logins-per-minute", "0", "--cache-hours", "0"]) == 0
    assert launches[-1]["create"]["limits"] == ServerLimits()
    assert "max_file_size" not in launches[-1]["launch"] and "app_kwargs" not in launches[-1]["launch"]
    args = build_parser().parse_args([])
    assert server_limits(args, cuda=True).max_cost == DEFAULT_MAX_COST_GPU
    monkeypatch.setenv("SPACE_ID", "someone/wan")  # every visitor comes through the Space's proxy
    assert server_limits(args, cuda=True).jobs_per_user is None
    assert server_limits(build_parser().parse_args(["--max-jobs-per-user", "2"]), cuda=True).jobs_per_user == 2
    assert ServerLimits(cache_hours=24).delete_cache() == (3600, 86400)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("22,815,000 with a GPU, 200,000 on a CPU", "(default: 4;", "(default: 50)", "(default: 10)",
                    "(default: 24;", "--no-auth-i-know"):
        assert default in text
