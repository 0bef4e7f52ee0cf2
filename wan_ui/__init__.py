"""Wan2.1-T2V-1.3B acceleration workbench: generation core, optimization catalogue, metrics, UI, benchmark."""

__version__ = "0.1.0"
