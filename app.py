"""`python app.py`: the Gradio workbench on http://127.0.0.1:7860 (`--listen` to serve the network).

The entry point lives in `wan_ui/ui/server.py` (also installed as the `wan-ui` command); this file is what
`python app.py` and a Hugging Face Space (`app_file: app.py`) run.
"""

from wan_ui.ui.server import build_parser, main, parse_auth  # noqa: F401  (tests and tools call these)

if __name__ == "__main__":
    raise SystemExit(main())
