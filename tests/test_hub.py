"""core/hub.py: a hub file comes from the cache when it is there, and a failed fetch says which thing failed — no
network (at once, before the hub client's retries), no such repository, no such file — naming the option."""

import socket
import time

import httpx
import pytest
from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError, RepositoryNotFoundError

from wan_ui.core import hub, models
from wan_ui.core.errors import ModelLoadError

REPO, FILE = "owner/repo", "sub/weights.safetensors"
INSTEAD = "put the file somewhere"


@pytest.fixture
def online(monkeypatch, tmp_path):
    """Online mode, an empty hub cache, no proxy: what a fresh machine with a network looks like."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    for name in hub.PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "hub"


def no_dns(monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(hub.socket, "getaddrinfo", fail)


def must_not_download(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("downloaded although the answer was known")
    monkeypatch.setattr(hub, "hf_hub_download", fail)


def cache_file(cache, repo: str, filename: str) -> str:
    """A file as the hub cache lays it out (refs/main -> snapshots/<commit>/<file>)."""
    commit = "0" * 40
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    path = folder / "snapshots" / commit / filename
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")
    return str(path)


def http_error(cls, status: int):
    response = httpx.Response(status, request=httpx.Request("GET", f"https://huggingface.co/{REPO}/resolve/main/{FILE}"))
    return cls("the hub said no", response=response)


def test_a_cached_file_is_used_without_asking_the_network(online, monkeypatch):
    path = cache_file(online, REPO, FILE)
    no_dns(monkeypatch)
    must_not_download(monkeypatch)
    assert str(hub.fetch(REPO, FILE, what="LoRA", field="lora", instead=INSTEAD)) == path


def test_no_network_is_said_at_once_naming_the_field_and_the_way_out(online, monkeypatch):
    no_dns(monkeypatch)
    must_not_download(monkeypatch)
    t0 = time.perf_counter()
    with pytest.raises(ModelLoadError) as e:
        hub.fetch(REPO, FILE, what="LoRA", field="lora", instead=INSTEAD)
    assert time.perf_counter() - t0 < 5  # no retries: the hub client waited ~25 s before saying "no such file"
    text = str(e.value)
    assert e.value.field == "lora" and "\n" not in text
    assert f"LoRA {REPO}/{FILE} is not downloaded and this machine cannot reach huggingface.co" in text
    assert "Name or service not known" in text and text.endswith(INSTEAD)


def test_offline_mode_and_proxies(online, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    assert hub.unreachable_reason() == "the hub is offline (HF_HUB_OFFLINE=1)"
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    no_dns(monkeypatch)
    assert "cannot reach huggingface.co" in hub.unreachable_reason()
    # through a proxy the local resolver proves nothing: the download itself decides
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert hub.unreachable_reason() is None


def test_a_mirror_is_the_host_checked(online, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "https://hf-mirror.example.org")
    asked = []

    def resolve(host, *args, **kwargs):
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(hub.socket, "getaddrinfo", resolve)
    assert "cannot reach hf-mirror.example.org" in hub.unreachable_reason() and asked == ["hf-mirror.example.org"]


@pytest.mark.parametrize("error, says", [
    (lambda: http_error(RepositoryNotFoundError, 404), f"the hub has no repository {REPO}"),
    (lambda: http_error(RemoteEntryNotFoundError, 404), f"the repository {REPO} has no file {FILE}"),
    (lambda: LocalEntryNotFoundError("connection failed and nothing cached"), "the hub (huggingface.co) could not be "
                                                                              "reached"),
    (lambda: OSError(28, "No space left on device"), "could not download LoRA owner/repo/sub/weights.safetensors "
                                                     "(OSError: [Errno 28] No space left on device)"),
])
def test_each_failure_of_the_download_says_what_it_was(online, monkeypatch, error, says):
    monkeypatch.setattr(hub, "unreachable_reason", lambda: None)  # the network is there

    def download(repo, filename):
        raise error()
    monkeypatch.setattr(hub, "hf_hub_download", download)
    with pytest.raises(ModelLoadError) as e:
        hub.fetch(REPO, FILE, what="LoRA", field="lora", instead=INSTEAD)
    assert says in str(e.value) and e.value.field == "lora" and str(e.value).endswith(INSTEAD)
    assert "does not appear to have a file named" not in str(e.value)


def test_the_checkpoint_download_asks_only_the_cache_without_a_network(online, monkeypatch):
    no_dns(monkeypatch)
    seen = {}

    def snapshot(repo_id, **kwargs):
        seen.update(kwargs)
        raise LocalEntryNotFoundError("not in the cache")
    monkeypatch.setattr(models, "snapshot_download", snapshot)
    with pytest.raises(ModelLoadError) as e:
        models.materialize(models.resolve_model("Wan-AI/Wan2.1-T2V-1.3B-Diffusers"))
    assert seen["local_files_only"] is True  # a cached checkpoint would still load
    assert "could not download 'Wan-AI/Wan2.1-T2V-1.3B-Diffusers': it is not downloaded and this machine cannot " \
           "reach huggingface.co" in str(e.value) and e.value.field == "model"
