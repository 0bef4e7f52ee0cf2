"""The Gradio app: one module per tab, thin wiring over the core."""
