"""`python app.py`: flags to launch arguments (the server itself is exercised by test_ui_api/test_ui_browser)."""

from __future__ import annotations

import pytest
from ui_server import launches  # noqa: F401  (records create_demo's and launch's arguments; no server)

import app


def test_defaults_bind_localhost_without_share_or_auth(launches, tmp_path):
    assert app.main(["--outputs", str(tmp_path / "out")]) == 0
    (call,) = launches
    launch, create = call["launch"], call["create"]
    assert (launch["server_name"], launch["server_port"], launch["share"], launch["auth"]) == (
        "127.0.0.1", 7860, False, None)
    assert str((tmp_path / "out").resolve()) in launch["allowed_paths"] and "theme" in launch and "css" in launch
    assert create["outputs"] == str(tmp_path / "out") and create["model"] is None and create["save_settings"]
    assert create["scorer"] is not None and create["baseline_cache"] is not None


def test_listen_port_auth_model_and_settings_flags(launches):
    assert app.main(["--listen", "--port", "7999", "--auth", "ann:secret", "--model", "tiny", "--share",
                     "--no-save-settings"]) == 0
    launch, create = launches[0]["launch"], launches[0]["create"]
    assert (launch["server_name"], launch["server_port"], launch["share"], launch["auth"]) == (
        "0.0.0.0", 7999, True, ("ann", "secret"))
    assert create["model"] == "tiny" and create["save_settings"] is False


def test_bad_model_or_auth_fail_before_the_server_starts(launches, capsys):
    assert app.main(["--model", "no such model"]) == 2 and launches == []
    assert "neither 'tiny'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="USER:PASS"):
        app.main(["--auth", "just-a-user"])
