"""The tuner: the fastest optimization set within a fidelity budget on this machine (`python -m wan_ui.tune`)."""
