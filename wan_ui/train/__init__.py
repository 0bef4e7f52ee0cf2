"""The LoRA trainer: `python -m wan_ui.train`."""
