"""Leftovers of a daily-loop pass in chromium, each fixed and tested here:

- the toast title of a user's error ("Invalid <field>") was built twice, in widgets.user_errors_as_toasts and in
  guard.describe; one helper (widgets.error_title) serves both.
"""

from __future__ import annotations

import gradio as gr
import pytest

from wan_ui.core.errors import UserError, ValidationError
from wan_ui.ui.guard import describe
from wan_ui.ui.widgets import error_title, user_errors_as_toasts


# ---- one toast title for a user's error -----------------------------------------------------------------------
@pytest.mark.parametrize("field, title", [("num_inference_steps", "Invalid num inference steps"),
                                          ("width", "Invalid width"), (None, "Cannot run")])
def test_both_paths_of_a_user_error_title_its_toast_alike(field, title):
    error = ValidationError("out of range", field=field) if field else UserError("the app is shutting down")
    assert error_title(field) == title
    assert describe(error, "generating")[0] == title
    with pytest.raises(gr.Error) as raised:
        with user_errors_as_toasts():
            raise error
    assert raised.value.title == title
    # the gr.Error that user_errors_as_toasts raised keeps its title through a guarded handler
    assert describe(raised.value, "generating")[0] == title
