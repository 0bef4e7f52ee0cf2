"""Security, checked on the real `python app.py` (tiny model, `--auth`) over plain HTTP, and in the code:
bind 127.0.0.1 by default; `--auth` guards the page, the API and files; files are served only from the outputs
folder; the password is never printed; weights load as safetensors only, never with trust_remote_code."""

from __future__ import annotations

import ast
import http.cookiejar
import importlib.util
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "ann", "s3cret-Pa55-do-not-log"


def load_script():
    spec = importlib.util.spec_from_file_location("load_test", ROOT / "scripts" / "load_test.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Http:
    """Plain HTTP to the app, with or without the login cookie."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with self.opener.open(self.url + path, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def post(self, path: str, data: bytes, content_type="application/json") -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": content_type})
        try:
            with self.opener.open(req, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def login(self, user: str, password: str) -> int:
        form = urllib.parse.urlencode({"username": user, "password": password}).encode()
        return self.post("/login", form, "application/x-www-form-urlencoded")[0]


@pytest.fixture(scope="module")
def secured_app(tiny_folder, tmp_path_factory):
    """app.py --auth on a free port, without --listen; its log captured; a secret file next to the outputs."""
    script = load_script()
    work = tmp_path_factory.mktemp("secured")
    outputs = work / "outputs"
    outputs.mkdir()
    (work / "secret.txt").write_text("not to be served")
    (outputs / "link-out.txt").symlink_to(work / "secret.txt")
    log = work / "app.log"
    proc, url = script.launch_app(outputs, None, extra=["--auth", f"{USER}:{PASSWORD}"], log_path=log)
    yield url, outputs, work, log, proc
    script.stop_app(proc)


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on `port` (Linux /proc/net/tcp{,6})."""
    found = set()
    for name in ("tcp", "tcp6"):
        table = Path(f"/proc/net/{name}")
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                found.add(addr)
    return found


def test_binds_127_0_0_1_without_listen(secured_app):
    url = secured_app[0]
    port = urllib.parse.urlparse(url).port
    addresses = listening_addresses(port)
    if not addresses:
        pytest.skip("/proc/net/tcp is not readable here")
    assert addresses == {"0100007F"}  # 127.0.0.1 only: not 0.0.0.0, not ::


def test_auth_guards_the_page_api_queue_and_files(secured_app):
    url, outputs, *_ = secured_app
    anon = Http(url)
    status, page = anon.get("/")
    assert status == 200 and b'"auth_required":true' in page and b"generate-btn" not in page  # the login page
    for path in ("/config", "/gradio_api/info", "/gradio_api/file=/etc/passwd"):
        assert anon.get(path)[0] == 401, path
    for path in ("/gradio_api/queue/join", "/gradio_api/call/generate", "/gradio_api/run/predict"):
        assert anon.post(path, b'{"data": []}')[0] == 401, path
    assert Http(url).login(USER, "wrong") == 400 and Http(url).login("bob", PASSWORD) == 400
    user = Http(url)
    assert user.login(USER, PASSWORD) == 200
    status, config = user.get("/config")
    assert status == 200 and b"generate-btn" in config


def test_a_logged_in_client_generates_and_files_come_only_from_outputs(secured_app, tiny_folder):
    from gradio_client import Client

    from wan_ui.ui.generate_tab import RUN_OUTPUTS

    url, outputs, work, *_ = secured_app
    client = Client(url, auth=(USER, PASSWORD), verbose=False, download_files=False)
    out = client.predict(prompt="a lock", width=16, height=16, num_frames=1, num_inference_steps=1,
                         api_name="/generate")
    video = Path(out[RUN_OUTPUTS.index("result_json")]["video"])
    assert video.parent == outputs.resolve() or video.parent == outputs
    user = Http(url)
    user.login(USER, PASSWORD)
    status, body = user.get(f"/gradio_api/file={video}")
    assert status == 200 and body[4:8] == b"ftyp"  # the mp4 this app wrote
    refused = ["/etc/passwd", "/proc/self/environ", str(work / "secret.txt"), f"{outputs}/../secret.txt",
               urllib.parse.quote(f"{outputs}/../secret.txt", safe=""), "../../../../etc/passwd",
               str(outputs / "link-out.txt"), str(ROOT / "app.py"), str(Path(tiny_folder) / "model_index.json")]
    for path in refused:
        status, body = user.get(f"/gradio_api/file={path}")
        assert status in (403, 404), (path, status)
        assert b"not to be served" not in body and b"root:" not in body


def test_the_password_is_never_printed(secured_app):
    url, outputs, work, log, proc = secured_app
    Http(url).login(USER, PASSWORD + "-typo")  # a failed login is not logged with what was typed either
    text = log.read_text(errors="replace")
    assert text and PASSWORD not in text
    for path in outputs.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path


# ---- in the code ----------------------------------------------------------------------------------------------
def code_files():
    return sorted([*(ROOT / "wan_ui").rglob("*.py"), ROOT / "app.py", *(ROOT / "scripts").glob("*.py")])


def test_no_trust_remote_code_anywhere():
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in code_files()
            for n, line in enumerate(p.read_text().splitlines(), 1) if "trust_remote_code" in line]
    assert hits == []


def calls_to(attr: str):
    """(file, receiver, call node) for every call `<receiver>.<attr>(...)` in the code (docstrings excluded)."""
    for p in code_files():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == attr:
                yield str(p.relative_to(ROOT)), ast.unparse(node.func.value), node


def keyword_is(node: ast.Call, name: str, value) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value for k in node.keywords)


def test_model_weights_load_as_safetensors_only():
    loaders = [(f, r, n) for attr in ("from_pretrained", "load_lora_weights") for f, r, n in calls_to(attr)
               if not re.search(r"Tokenizer|Scheduler|Config", r)]  # JSON and text files: no weights
    assert len(loaders) >= 3  # the manager's pipeline, the LoRA loader, the training loaders
    for file, receiver, node in loaders:
        assert keyword_is(node, "use_safetensors", True), f"{file}: {ast.unparse(node)}"


# torch.load unpickles: allowed only for tensors (weights_only=True). Training checkpoints keep their RNG states in
# safetensors + JSON (tests/test_train.py: a pickled object in a checkpoint is refused).
PICKLE_EXCEPTIONS: set[tuple[str, str]] = set()


def test_torch_load_never_unpickles_weights():
    for file, receiver, node in calls_to("load"):
        if receiver == "torch" and (file, ast.unparse(node)) not in PICKLE_EXCEPTIONS:
            assert keyword_is(node, "weights_only", True), f"{file}: {ast.unparse(node)}"


def test_auth_is_parsed_without_echoing_the_password(capsys):
    import app

    assert app.parse_auth(f"{USER}:{PASSWORD}") == (USER, PASSWORD)
    with pytest.raises(SystemExit) as e:
        app.parse_auth(f"{USER}{PASSWORD}")  # no colon: the error shows the expected form, not the value
    assert PASSWORD not in str(e.value) and PASSWORD not in json.dumps(capsys.readouterr())
