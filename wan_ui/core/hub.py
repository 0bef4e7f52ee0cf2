"""One file from the Hugging Face hub, with a failure that says which of three things went wrong.

The distilled presets' LoRAs and the tiny decoder's weights are fetched by hub id at run time. Through diffusers, a
machine without a network waited ~25 s (huggingface_hub retries a failed connection five times) and then read
"Kijai/WanVideo_comfy does not appear to have a file named ...": the file exists, the network does not. `fetch`
tells apart:
- the hub cannot be reached: offline mode (HF_HUB_OFFLINE=1), or the hub's host name does not resolve — said at
  once, before any retry;
- the repository or the file does not exist there (or is gated);
- anything else (HTTP errors, a broken download), with the library's first line.
A file already in the hub cache is used as it is, reachable or not.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RemoteEntryNotFoundError,
                                    RepositoryNotFoundError)

from wan_ui.core.errors import ModelLoadError, first_line

# Through a proxy the local resolver need not know public names (the proxy resolves them), so a name that does not
# resolve here proves nothing: the early check is skipped when one of these is set (requests/httpx read them).
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def hub_host() -> str:
    """The host files come from: huggingface.co, or the one HF_ENDPOINT names (a mirror)."""
    return urlparse(constants.ENDPOINT).hostname or "huggingface.co"


def unreachable_reason() -> str | None:
    """Why the hub surely cannot be reached now, or None when it may be (then only a download can tell)."""
    if constants.HF_HUB_OFFLINE:
        return "the hub is offline (HF_HUB_OFFLINE=1)"
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return None
    host = hub_host()
    try:
        socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    except OSError as e:  # socket.gaierror: no DNS, no network
        return f"this machine cannot reach {host} (its name does not resolve: {e.strerror or e}; no network?)"
    return None


def fetch(repo: str, filename: str, *, what: str, field: str, instead: str) -> Path:
    """The local path of `filename` in hub repository `repo`: from the hub cache, else downloaded into it.
    what: the thing, for the message ("LoRA", "the tiny decoder's weights"); field: the option the error names;
    instead: what the user can do without the download ("put the file at ...")."""
    cached = try_to_load_from_cache(repo, filename)
    if isinstance(cached, str):
        return Path(cached)
    where = f"{repo}/{filename}"
    reason = unreachable_reason()
    if reason:
        raise ModelLoadError(f"{what} {where} is not downloaded and {reason}: {instead}", field=field)
    try:
        return Path(hf_hub_download(repo, filename))
    except GatedRepoError:
        raise ModelLoadError(f"{what} {where}: the repository {repo} is gated; accept its terms on the hub and log in "
                             f"(huggingface-cli login), or: {instead}", field=field) from None
    except RepositoryNotFoundError:
        raise ModelLoadError(f"{what} {where}: the hub has no repository {repo} (or it is private): {instead}",
                             field=field) from None
    except RemoteEntryNotFoundError:
        raise ModelLoadError(f"{what} {where}: the repository {repo} has no file {filename}: {instead}",
                             field=field) from None
    except LocalEntryNotFoundError:  # the connection failed after the retries, and the cache has no copy
        raise ModelLoadError(f"{what} {where} is not downloaded and the hub ({hub_host()}) could not be reached: "
                             f"{instead}", field=field) from None
    except Exception as e:  # noqa: BLE001 — HTTP errors, a full disk, a broken transfer: one line that says what
        raise ModelLoadError(f"could not download {what} {where} ({type(e).__name__}: {first_line(e, 160)}): "
                             f"{instead}", field=field) from None
