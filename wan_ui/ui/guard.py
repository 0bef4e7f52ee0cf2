"""How a handler's failure reaches the user without wrecking the page.

Gradio marks every input and output of an event with a red "Error" badge when its handler raises, and an
exception that is not a `gr.Error` shows no message at all. So on the page a handler never raises:

- a user mistake (`UserError`, or a `gr.Error` from the ZeroGPU worker) becomes one warning toast whose text
  names the field and the allowed range;
- anything else becomes one toast line saying what failed, with the full traceback in the server's log;
- and every output keeps its value (`gr.skip()`): the previous video, metrics, comparison and History stay;
  only a status box named to `guarded` says the run did not happen ("Not run: ..."), where the last run's "Done:"
  line would otherwise sit under the toast, which Gradio 6 titles "Warning" whatever title it is given.

An API client (gradio_client, curl) has no page to keep: it gets the same message as a `gr.Error`, which its
call raises (`AppError` in gradio_client). The two are told apart by the caller's user agent: the page's requests
come from a browser.
"""

from __future__ import annotations

import functools
import logging
import re

import gradio as gr

from wan_ui.core.errors import UserError, first_line
from wan_ui.ui.widgets import error_title, with_box_label

LOG = logging.getLogger("wan_ui")
LOG_NAME = "wan_ui.log"  # in the app's outputs folder (ui/server.py sets up the handler)
# An absolute path in a message ('/srv/app/loras/x.safetensors', "[Errno 28] ...: '/srv/app/outputs/.x.partial'"):
# a '/' that starts a word, not part of a URL or of a relative path ('owner/repo', './x', '1/2'), with a second '/'
# after it ('[/file]' in a syntax is no path)
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/[^\s'\"`,;()\[\]/]+/[^\s'\"`,;()\[\]]*")


def from_page(request: gr.Request | None) -> bool:
    """True when the event came from the app's page in a browser (not gradio_client or another API caller)."""
    if request is None:
        return False
    agent = (request.headers or {}).get("user-agent", "")
    return "Mozilla/" in agent and "gradio_client" not in agent


def hide_paths(text: str) -> str:
    """`text` with each absolute path shortened to its last part ('/srv/app/loras' -> '…/loras'): a message on the
    page or to an API caller names a file or folder, never where the server keeps it (the log has the full text)."""
    def short(m: re.Match) -> str:
        name = m.group(0).rstrip("/").rsplit("/", 1)[-1]
        return f"…/{name}" if name else m.group(0)

    return _ABSOLUTE_PATH.sub(short, text)


def describe(error: BaseException, where: str, page: bool = True) -> tuple[str, str]:
    """(title, one-line message) for a handler's failure; absolute paths shown by name (hide_paths). page: a field's
    error also names the field's box where its label differs (widgets.with_box_label); an API caller sent the
    field's name and gets the core's message as it is."""
    label = with_box_label if page else (lambda field, message: message)
    if isinstance(error, UserError):
        return error_title(error.field), hide_paths(label(error.field, str(error)))
    if isinstance(error, gr.Error):  # already a message for the user (e.g. from the ZeroGPU worker)
        return error.title or error_title(None), hide_paths(label(getattr(error, "field", None), error.message))
    return (f"Internal error while {where}",
            f"Internal error while {where}: {type(error).__name__}: {hide_paths(first_line(error, 200))}. The full "
            f"traceback is in the server's log ({LOG_NAME} in its outputs folder).")


def status_text(error: BaseException, message: str) -> str:
    """A status box's line after a failed run: "Not run: ..." for a user's mistake or a refusal, "Failed: ..." for
    anything else (describe()'s message)."""
    return f"{'Not run' if isinstance(error, (UserError, gr.Error)) else 'Failed'}: {message}"


def guarded(where: str, status: gr.components.Component | None = None):
    """Decorate an event handler: failures become a toast (page) or a gr.Error (API) as the module says.
    `where` completes "Internal error while ..." (e.g. "generating"). status: a status box among the event's
    outputs, which the page's failure writes (status_text) in a dict of updates that leaves out, and so keeps, every
    other output. The handler's signature is kept, so Gradio still passes it gr.Request / gr.Progress; the request
    is looked up among its arguments."""

    def wrap(handler):
        @functools.wraps(handler)
        def run(*args, **kwargs):
            try:
                return handler(*args, **kwargs)
            except Exception as e:  # the whole point: nothing escapes to Gradio's error path on the page
                if not isinstance(e, (UserError, gr.Error)):
                    LOG.exception("internal error while %s", where)
                request = next((a for a in [*args, *kwargs.values()] if isinstance(a, gr.Request)), None)
                title, message = describe(e, where, page=from_page(request))
                if not from_page(request):
                    raise gr.Error(message, title=title, print_exception=False) from None
                gr.Warning(message, title=title)
                return {status: status_text(e, message)} if status is not None else gr.skip()

        return run

    return wrap
