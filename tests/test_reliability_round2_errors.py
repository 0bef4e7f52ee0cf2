"""Every error a user can cause is named: through the app's API (gradio_client, raw HTTP) and its page, a bad value
is refused by the field's own spec, naming the field and its range, never by Gradio's unnamed "Value 0 is less
than minimum value 16." or "The upstream Gradio app has raised an exception"; internal errors are one line saying
where the log is; no message shows where the server keeps its files (docs/RELIABILITY.md, "Round two: errors and
limits")."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from ui_server import browser_page, set_number, ui_app  # noqa: F401  (ui_app: one app for this module)

from wan_ui.ui.generate_tab import RUN_OUTPUTS
from wan_ui.ui.values import OPTION_FIELDS

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(prompt="a lighthouse in a storm", width=16, height=16, num_frames=1, num_inference_steps=1, seed=1)
GRADIOS_OWN = ("Value ", "is less than minimum", "is greater than maximum", "not in the list of choices", "upstream")


@pytest.fixture(scope="module")
def client(ui_app):  # noqa: F811
    from gradio_client import Client

    return Client(ui_app.url, verbose=False, download_files=False)


def generate(client, **kwargs) -> dict:
    return dict(zip(RUN_OUTPUTS, client.predict(**{**SMALL, **kwargs}, api_name="/generate")))


def refusal(client, api_name: str = "/generate", *args, **kwargs) -> str:
    """The message of the AppError a call raises."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as e:
        client.predict(*args, **({**SMALL, **kwargs} if api_name == "/generate" else kwargs), api_name=api_name)
    message = str(e.value)
    assert not any(text in message for text in GRADIOS_OWN), message
    return message


def post(url: str, path: str, body: dict) -> tuple[int, str]:
    req = urllib.request.Request(url.rstrip("/") + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.parametrize("values, message", [
    # out of range: Gradio's Number and Slider checked their minimum/maximum first, without the field's name
    ({"width": 0}, r"^width must be in \[16, 2048\], got 0$"),
    ({"num_inference_steps": 0}, r"^num_inference_steps must be in \[1, 200\], got 0$"),
    ({"guidance_scale": 50}, r"^guidance_scale must be in \[0\.0, 20\.0\], got 50$"),
    ({"cache_threshold": 5}, r"^option cache_threshold must be in \[0\.0, 1\.0\], got 5$"),
    # text in a number field: Gradio's bound check failed on it ("upstream Gradio app has raised an exception")
    ({"width": "abc"}, r"^width must be a number in \[16, 2048\] pixels, got 'abc'$"),
    ({"seed": "x"}, r"^seed must be a number in \[0, 4294967295\], got 'x'$"),
    ({"flow_shift": "fast"}, r"^option flow_shift must be a number in \[0\.0, 20\.0\], got 'fast'$"),
    # fractions for whole numbers: precision=0 rounded them silently
    ({"width": 32.5}, r"^width must be a whole number in \[16, 2048\], got 32\.5$"),
    ({"num_frames": 8.6}, r"^num_frames must be a whole number in \[1, 257\], got 8\.6$"),
    ({"seed": 1.5}, r"^seed must be a whole number in \[0, 4294967295\], got 1\.5$"),
    ({"num_inference_steps": 2.5}, r"^num_inference_steps must be a whole number in \[1, 200\], got 2\.5$"),
    ({"attention_slicing": 2.5}, r"^option attention_slicing must be a whole number in \[0, 1048576\], got 2\.5$"),
    # not one of the choices: Gradio's Radio refused it without the option's name
    ({"precision": "fp64"}, r"^option precision must be one of \['fp32', 'bf16', 'fp16'\], got 'fp64'$"),
    ({"vae_tile": "500"}, r"^option vae_tile must be one of \[256, 384, 512\], got '500'$"),
    # a huge integer inside "t,h,w": overflowed the sparse mask (an internal error)
    ({"sparse_attention": "sta", "sparse_window": "9" * 30 + ",1,1"},
     r"^option sparse_window has the wrong form \(.*each 0-999.*\), got '9{30},1,1'$"),
])
def test_a_bad_value_is_refused_naming_the_field_and_its_range(client, values, message):
    assert re.search(message, refusal(client, **values))


def test_every_option_takes_the_type_its_api_schema_advertises(client):
    """view_api says "string" for every Radio (vae_tile's values are numbers): each option is sent as its schema's
    type; the set that ran holds the field's own type."""
    from wan_ui.core.options import OptimizationSet

    params = {p["parameter_name"]: p["type"] for p in client.view_api(return_format="dict", print_info=False)
              ["named_endpoints"]["/generate"]["parameters"]}
    sent = {**OptimizationSet().to_dict(), "vae_tile": 512}
    as_advertised = {"string": str, "boolean": bool, "integer": int, "number": float}
    values = {name: as_advertised[params[name]["type"]](value) for name, value in sent.items()}
    assert params["vae_tile"]["type"] == "string" and values["vae_tile"] == "512"
    assert set(values) == set(OPTION_FIELDS)
    ran = generate(client, **values)["result_json"]["optimizations"]
    assert ran == sent and isinstance(ran["vae_tile"], int)


def test_other_endpoints_name_their_fields(client):
    generate(client)  # a run in this session's History
    for run, message in ((2.5, r"run_number must be a whole number in \[1, \d+\], got 2\.5"),
                         ("x", r"run_number must be a number in \[1, \d+\], got 'x'"),
                         (0, r"run_number must be in \[1, \d+\], got 0")):
        assert re.search(message, refusal(client, "/reuse_settings", run))
    assert refusal(client, "/apply_preset", "nope", 832, 480, 81).startswith("unknown preset 'nope'; valid presets:")
    assert "Low VRAM preset" in client.predict("Low VRAM", "abc", 480, 81, api_name="/apply_preset")[-1]  # sized
    assert re.search(r"set 2: unknown preset 'nope'", refusal(client, "/compare", **SMALL, set_1_preset="Defaults",
                                                                set_2_preset="nope"))


def test_a_raw_call_missing_values_is_told_which(ui_app):  # noqa: F811
    status, body = post(ui_app.url, "/gradio_api/run/apply_preset", {"data": ["Defaults"]})
    assert status == 500 and "/apply_preset got 1 of its 4 input values; missing: width, height, num_frames" in body
    status, body = post(ui_app.url, "/gradio_api/call/generate", {"data": [None, "a cat"]})  # queued
    assert status == 200
    with urllib.request.urlopen(f"{ui_app.url}gradio_api/call/generate/{json.loads(body)['event_id']}",
                                timeout=60) as events:
        stream = events.read().decode()
    assert "event: error" in stream and "upstream" not in stream
    assert re.search(r"/generate got 2 of its \d+ input values; missing: negative_prompt, width, height", stream)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("prompt", [nested(100_000), nested(50)], ids=["past-the-recursion-limit", "50-levels"])
def test_a_deeply_nested_settings_file_is_refused_by_name(client, tmp_path, prompt):
    """Uploaded: refused naming the file. Stored as the last-used settings: the page opens from the defaults (json
    raised RecursionError, which every page open then showed)."""
    from gradio_client import handle_file

    upload = tmp_path / "deep.json"
    upload.write_text(f'{{"request": {{"prompt": {prompt}}}}}')
    assert refusal(client, "/load_settings", handle_file(str(upload))) == \
        "deep.json nests deeper than 8 levels; wan_ui settings nest 3"


def test_a_stored_deeply_nested_settings_file_does_not_break_the_page_open(client, ui_app):  # noqa: F811
    try:
        for depth in (100_000, 50):
            ui_app.settings_file.write_text(f'{{"request": {{"prompt": {nested(depth)}}}}}')
            assert "Ready." in client.predict(api_name="/restore_last_settings")
            with urllib.request.urlopen(ui_app.url, timeout=30) as page:
                assert page.status == 200
    finally:
        ui_app.settings_file.unlink(missing_ok=True)
    assert generate(client)["status"].startswith("Done")


def test_messages_name_files_never_where_the_server_keeps_them(client, ui_app, lora_root, monkeypatch):  # noqa: F811
    outside = refusal(client, lora="/etc/passwd")
    assert outside == "lora path '…/passwd' is outside the LoRA folder …/loras"
    missing = refusal(client, lora="missing.safetensors")
    assert "neither a file/folder in …/loras" in missing
    out = generate(client)
    assert re.search(r"→ wan-[\w-]+\.mp4$", out["status"].splitlines()[0])
    ui_app.settings_file.write_text(json.dumps({"request": {"prompt": "a cat"}}))
    assert "Restored the last-used settings (last.json)." in client.predict(api_name="/restore_last_settings")
    ui_app.settings_file.unlink()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(ui_app.outputs / ".wan-x.partial.mp4"))

    monkeypatch.setattr("wan_ui.ui.generate_tab.generate", disk_full)
    internal = refusal(client)
    assert internal == ("Internal error while generating: OSError: [Errno 28] No space left on device: "
                        "'…/.wan-x.partial.mp4'. The full traceback is in the server's log (wan_ui.log in its "
                        "outputs folder).")
    for message in (outside, missing, out["status"], internal):
        for root in (str(lora_root), str(ui_app.outputs), str(ROOT), str(Path.home())):
            assert root not in message


@pytest.mark.browser
def test_the_page_names_the_field_and_opens_with_a_nested_settings_file(ui_app):  # noqa: F811
    from playwright.sync_api import expect

    ui_app.settings_file.write_text(f'{{"request": {{"prompt": {nested(100_000)}}}}}')
    try:
        with browser_page(ui_app.url) as page:
            expect(page.locator("#status textarea")).to_have_value("Ready.")
            assert page.locator(".toast-body").count() == 0
            for value, text in ((0, "width must be in [16, 2048], got 0"),
                                (40.5, "width must be a whole number in [16, 2048], got 40.5")):
                set_number(page, "width", value)
                page.click("#generate-btn")
                expect(page.locator(".toast-body").filter(has_text=text)).to_be_visible()
                page.locator(".toast-body .toast-close").first.click()
    finally:
        ui_app.settings_file.unlink(missing_ok=True)
