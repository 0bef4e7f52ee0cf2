"""What one request, one user and one address may take of the server (`python app.py` flags; docs/RELIABILITY.md,
"Round two: errors and limits").

- the cost of a job, in token-forwards (`GenerationRequest.cost`; a comparison runs one generation per set);
- each user's share of the GPU: jobs waiting or running per user, the Batch tab's running batch counting as one job
  of the user who started it (`BackgroundJobs`); a user is the logged-in name with --auth, else the client address;
- the size of an uploaded file (Gradio's `max_file_size`);
- failed logins per client address per minute (`LoginThrottle`, an ASGI middleware in front of Gradio's /login:
  Gradio calls an auth function with the user name and password only, so the address is read from the request);
- how long Gradio keeps its copies of results and uploads (`gr.Blocks(delete_cache=...)`).

The cost and the share are checked when a job joins the queue (`QueueGate`), so a refused job never waits first;
the handler checks the cost again when the job starts; a batch's start checks the share itself (`check_share`: it
runs outside the queue). A client address is the one uvicorn reports: behind a reverse proxy, set
FORWARDED_ALLOW_IPS to the proxy's address so that uvicorn reports each client's own (uvicorn's docs, "Proxies and
forwarded headers"); otherwise every user without a login shares one.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
from starlette.middleware import Middleware

from wan_ui.core.compare import runs_per_set
from wan_ui.core.errors import UserError
from wan_ui.core.requests import CostLimitError, check_cost
from wan_ui.ui.guard import from_page
from wan_ui.ui.values import named_sets_from_values, request_from_values

DEFAULT_JOBS_PER_USER = 4  # of the queue's 32 places (ui/app.py MAX_QUEUE): 8 users can fill it, not one
DEFAULT_UPLOAD_MB = 50  # settings uploads are this app's videos (a 832x480x81 mp4 is a few MB) or their .json
DEFAULT_LOGINS_PER_MINUTE = 10  # failed logins per address: a person mistyping is never stopped, a guesser is
DEFAULT_CACHE_HOURS = 24  # Gradio's copies of results outlive a working day's page, then go
LOGIN_WINDOW_S = 60.0
GPU_QUEUE = "gpu"  # the concurrency_id of /generate and /compare (ui/app.py)
# a page's job refused by Gradio's queue itself (full: app.MAX_QUEUE) or lost on the way; its toast says which
REFUSED_ELSEWHERE = ("the server did not take the job (the message at the top right says why: its queue is full, or "
                     "the connection was lost); try again in a moment")


@dataclass(frozen=True)
class ServerLimits:
    max_cost: int | None = None  # token-forwards per job (GenerationRequest.cost x runs); None: no limit
    jobs_per_user: int | None = None  # GPU jobs waiting or running per user (user_key); None: no limit
    upload_mb: float | None = None  # largest uploaded file, MB (10^6 bytes); None: Gradio's default (no limit)
    logins_per_minute: int | None = None  # failed logins per client address in any 60 s; None: no limit
    cache_hours: float | None = None  # Gradio's cached copies are deleted when older; None: kept until exit

    def delete_cache(self) -> tuple[int, int] | None:
        """`gr.Blocks(delete_cache=(frequency_s, age_s))`: look every tenth of the age (at most hourly)."""
        if not self.cache_hours:
            return None
        age_s = max(1, round(self.cache_hours * 3600))
        return min(3600, max(1, age_s // 10)), age_s

    def launch_kwargs(self) -> dict:
        """`demo.launch` keywords: the upload bound and the login throttle."""
        kwargs = {}
        if self.upload_mb:
            kwargs["max_file_size"] = round(self.upload_mb * 1_000_000)
        if self.logins_per_minute:
            kwargs["app_kwargs"] = {"middleware": [Middleware(LoginThrottle, per_minute=self.logins_per_minute)]}
        return kwargs


# ---- whose job it is -----------------------------------------------------------------------------------------
def client_address(request) -> str:
    """The client's address as the server sees it (a gr.Request or a Starlette request)."""
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or "unknown"


def user_key(request, username: str | None = None) -> tuple[str, str]:
    """Whose share a job counts in: ("user", name) for a logged-in user (--auth; Gradio passes the name, or a
    gr.Request carries it), else ("address", the client address): behind one proxy or NAT every user without a
    login shares one address."""
    name = username if username is not None else getattr(request, "username", None)
    return ("user", str(name)) if name else ("address", client_address(request))


def jobs_of(demo: gr.Blocks, key: tuple[str, str], concurrency_id: str = GPU_QUEUE) -> int:
    """GPU jobs of the user `key` (user_key) waiting in `demo`'s queue or running. Gradio has no public view of its
    queue; this reads the one of the pinned Gradio (requirements.txt), and
    tests/test_reliability_round2_errors_limits.py fails if that changes."""
    queue = demo._queue
    waiting = queue.event_queue_per_concurrency_id.get(concurrency_id)
    events = [*(waiting.queue if waiting else []), *(e for job in queue.active_jobs if job for e in job)]
    return sum(1 for e in events if e.concurrency_id == concurrency_id and user_key(e.request, e.username) == key)


class BackgroundJobs:
    """The app's GPU work outside the queue, by the user who started it: the Batch tab's batch (one per app, run in
    a thread of its own, one video at a time). A running batch counts as one job in its owner's share: it holds the
    GPU for one video at a time and lets a waiting run go first between videos, so counting each of its (up to 100)
    videos would make any batch larger than the share impossible, while not counting it would let a user queue a
    full share beside a batch."""

    def __init__(self):
        self._owners: dict[str, tuple[tuple[str, str], Callable[[], bool]]] = {}
        self._lock = threading.Lock()

    def started(self, kind: str, key: tuple[str, str], running: Callable[[], bool]) -> None:
        """`key` started the app's one job of `kind` ("batch"); it counts while `running()` says so."""
        with self._lock:
            self._owners[kind] = (key, running)

    def held(self, key: tuple[str, str]) -> int:
        with self._lock:
            owners = list(self._owners.values())
        return sum(1 for owner, running in owners if owner == key and running())


def share_refusal(limits: ServerLimits, demo: gr.Blocks, key: tuple[str, str],
                  background: BackgroundJobs | None = None) -> str | None:
    """Why `key` may not add a GPU job now (it holds its share: jobs in the queue plus a running batch), or None."""
    share = limits.jobs_per_user
    if not share:
        return None
    outside = background.held(key) if background is not None else 0
    held = jobs_of(demo, key) + outside
    if held < share:
        return None
    who = "this address" if key[0] == "address" else f"user {key[1]}"
    batch = " (a running batch counts as one)" if outside else ""
    return (f"{who} already has {held} GPU jobs waiting or running{batch}, this server's limit per user "
            f"(--max-jobs-per-user {share}); wait for one to finish")


def check_share(limits: ServerLimits, demo: gr.Blocks, request, background: BackgroundJobs | None = None,
                field: str = "batch") -> None:
    """share_refusal as a UserError naming `field`: for a job that starts outside the queue (a batch)."""
    refusal = share_refusal(limits, demo, user_key(request), background)
    if refusal is not None:
        raise UserError(refusal, field=field)


# ---- when a job joins the queue ------------------------------------------------------------------------------
class QueueGate:
    """Admits a job of /generate or /compare into Gradio's queue or refuses it at once, before it waits: when its
    user (user_key) already holds `jobs_per_user` GPU jobs (a running batch of theirs included: `background`), or
    when it costs more than `max_cost`. An API caller gets
    what a Gradio event validator answers (HTTP 422 naming the input; gradio_client raises ValidationError); the
    page gets HTTP 400 with the message, which it shows as an error toast (it shows this app's 422 nowhere). Input
    errors are left to the handler, which names the field as it always does.

    Installed over the queue's `push`: an event `validator=` (Gradio's public hook) runs in a worker thread after the
    queue's size check and before the job is queued, so a burst of joins all passed both that bound and any count of
    a user's jobs. This check runs before `push` without yielding to the event loop, and `push` then queues the job
    without yielding either, so each join sees the jobs before it."""

    GATED = {"generate": False, "compare": True}  # api_name -> whether it is a comparison (one run per set)

    def __init__(self, limits: ServerLimits, background: BackgroundJobs | None = None):
        self.limits, self.background = limits, background

    def install(self, demo: gr.Blocks) -> None:
        queue = demo._queue
        push = queue.push

        async def push_checked(body, request, username):
            fn = demo.fns.get(body.fn_index) if body.fn_index is not None else None
            refusal = self.refusal(demo, fn, list(body.data or []), request, username) if fn is not None else None
            if refusal is not None and from_page(request):
                return False, next(d["message"] for d in refusal if not d["is_valid"]), "error"
            if refusal is not None:
                return False, refusal, "validator_error"
            return await push(body=body, request=request, username=username)

        queue.push = push_checked

    def refusal(self, demo: gr.Blocks, fn, data: list, request, username: str | None = None) -> list[dict] | None:
        """Gradio's validation answer (one entry per input, the refused one with its message), or None."""
        if fn.api_name not in self.GATED or len(data) < len(fn.inputs):
            return None  # a short call: Gradio's check names what is missing (app._Blocks)
        names = list(fn.input_parameter_names or [None] * len(fn.inputs))
        found = self.check({n: v for n, v in zip(names, data) if n}, user_key(request, username), demo,
                           self.GATED[fn.api_name])
        if found is None:
            return None
        field, message = found
        return [{"__type__": "validate", "is_valid": name != field, "message": message if name == field else "",
                 "parameter_name": name or f"parameter_{i}"} for i, name in enumerate(names)]

    def refused_status(self, demo: gr.Blocks, values: dict, request, comparison: bool) -> str:
        """The status box's line after the page's job was refused when it joined (the page calls this through a
        `.failure` listener: the refusal itself reaches the page only as an error toast, which also marks every
        output of the event "Error" and leaves the status box's last line): "Not run: " and the reason, found again
        from the same values, or the queue's own refusal (full, or the connection lost) when no limit of ours
        refused it."""
        found = self.check(values, user_key(request), demo, comparison)
        return f"Not run: {found[1] if found else REFUSED_ELSEWHERE}"

    def check(self, values: dict, key: tuple[str, str], demo: gr.Blocks, comparison: bool) -> tuple[str, str] | None:
        """(input the refusal is about, message), or None to let the job in. key: the user (user_key)."""
        refusal = share_refusal(self.limits, demo, key, self.background)
        if refusal is not None:
            return "prompt", refusal
        try:
            check_job_cost(values, self.limits.max_cost, comparison)
        except CostLimitError as e:
            return "num_inference_steps", str(e)
        except UserError:
            pass  # a value out of its range: the handler says which
        return None


def check_job_cost(values: dict, max_cost: int | None, comparison: bool = False) -> None:
    """A generation's (or comparison's) cost from the Generate tab's values against `max_cost`; an invalid value
    raises its own UserError naming the field."""
    if max_cost is None:
        return
    request = request_from_values({**values, "randomize_seed": False})
    if comparison:  # one generation per set and run (Compare's repeats, with a warm-up run)
        runs = max(1, len(named_sets_from_values(values))) * runs_per_set(values.get("compare_repeats", 1))
        check_cost(request, max_cost, runs=runs, what="this comparison")
    else:
        check_cost(request, max_cost)


# ---- failed logins --------------------------------------------------------------------------------------------
class LoginThrottle:
    """ASGI middleware in front of Gradio's POST /login: an address with `per_minute` failed logins (any answer but
    200) in the last 60 s gets 429 with the wait, without its password being checked, until the oldest failure is a
    minute old. Successful logins are not counted."""

    def __init__(self, app, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.app, self.per_minute, self.clock = app, per_minute, clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].rstrip("/").endswith("/login"):
            await self.app(scope, receive, send)
            return
        address = (scope.get("client") or ("unknown",))[0]
        wait_s = self._wait(address)
        if wait_s:
            await _answer(send, 429, {"detail": f"too many failed logins from this address: at most "
                                                f"{self.per_minute} a minute; try again in {wait_s} s"},
                          [(b"retry-after", str(wait_s).encode())])
            return
        status = {}

        async def watch(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        if status.get("code") != 200:
            with self._lock:
                self._failures.setdefault(address, deque()).append(self.clock())

    def _wait(self, address: str) -> int:
        """Seconds until `address` may try again (0: now)."""
        now = self.clock()
        with self._lock:
            recent = self._failures.get(address)
            while recent and now - recent[0] >= LOGIN_WINDOW_S:
                recent.popleft()
            if not recent:
                self._failures.pop(address, None)
                return 0
            if len(recent) < self.per_minute:
                return 0
            return max(1, math.ceil(LOGIN_WINDOW_S - (now - recent[0])))


async def _answer(send, status: int, body: dict, headers: list) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})
