"""The benchmark harness: `python -m wan_ui.bench`."""
