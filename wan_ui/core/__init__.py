"""The generation core: requests, options and presets, the model manager, generate(), metrics, quality,
video, models and devices. Imports nothing from ui, bench, train or parallel."""
