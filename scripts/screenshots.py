"""The README's UI screenshots, one per optimization family plus "Best", from real runs of the app.

    python scripts/screenshots.py                      # all of them, into assets/screenshots/
    python scripts/screenshots.py --only cache best     # some of them
    python scripts/screenshots.py --model random-full   # on a CUDA GPU: real speed and memory, noise video

The app runs in this process (the tiny random-weight model without a GPU); Debian's chromium, driven by Playwright,
opens its page once per family. Each family's settings reach the page the way a user's last-used settings do (the
settings file the page restores on load), then Generate runs and the page is captured with its metrics. The page's
own banner says when the weights are random: these pictures show the app and its measurements, never video quality.
A family this machine cannot run (e.g. quantization without CUDA) is listed as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from wan_ui.bench.random_lora import write_random_lora
from wan_ui.core.manager import ModelManager
from wan_ui.core.models import TINY, TINY_TRANSFORMER, resolve_model
from wan_ui.core.options import OptimizationSet, check_available, preset
from wan_ui.core.requests import default_request
from wan_ui.ui.app import create_demo, launch_kwargs
from wan_ui.ui.assets import ASSETS, example_prompts

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
LORA_FILE = "screenshot_random_lora.safetensors"
# family -> the options it shows (GPU values where they differ); "best" is the fastest preset of the machine.
FAMILIES: dict[str, tuple[dict, dict]] = {
    "precision": ({"precision": "fp32", "text_encoder_precision": "fp32"}, {"precision": "bf16"}),
    "quantization": ({"quantization": "bnb_nf4"}, {"quantization": "torchao_fp8"}),
    "compile": ({"compile": "regional"}, {"compile": "regional", "attention_backend": "cudnn"}),
    "offload": ({"offload": "group_leaf"}, {"offload": "group_block", "compile": "regional"}),
    "lora": ({"lora": f"{LORA_FILE}:1.0"}, {"lora": f"{LORA_FILE}:1.0", "lora_fuse": True}),
    "attention": ({"sparse_attention": "sta", "sparse_window": "1,1,1"}, {"sparse_attention": "sta",
                                                                          "attention_backend": "flex"}),
    "scheduler": ({"scheduler": "dpmpp"}, {"scheduler": "dpmpp"}),
    "cache": ({"cache": "mag"}, {"cache": "mag", "cache_max_skips": 4}),
    "cfg": ({"cfg_truncation": 0.5}, {"cfg_truncation": 0.5}),
    "vae": ({"vae_tiling": True, "vae_precision": "bf16"}, {"vae_tiling": True, "vae_tile": 512}),
}
BEST = {"cpu": "CPU quick", "cuda": "Fast (sparse)"}


def family_options(name: str, cuda: bool) -> OptimizationSet:
    if name == "best":
        return preset(BEST["cuda" if cuda else "cpu"])
    cpu_values, gpu_values = FAMILIES[name]
    return OptimizationSet.from_dict(gpu_values if cuda else cpu_values)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def capture(page, settings_file: Path, name: str, request: dict, opts: OptimizationSet, out: Path) -> None:
    settings_file.write_text(json.dumps({"request": request, "optimizations": opts.to_dict()}))
    page.goto(page.url)
    page.wait_for_function("document.querySelector('#status textarea')?.value.startsWith('Restored')")
    page.click("#generate-btn")
    expect(page.locator("#status textarea")).to_have_value(re.compile(r"^Done"), timeout=600_000)
    page.wait_for_function("document.querySelector('#video video')?.readyState >= 2")  # a frame is shown
    expect(page.locator("#generate-btn")).to_be_enabled()
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(out / f"{name}.png"))  # the first screen: the banner, parameters, video, metrics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="tiny | random-full | ... (default: the machine's default)")
    p.add_argument("--only", nargs="*", default=None, help=f"some of: {' '.join([*FAMILIES, 'best'])}")
    p.add_argument("--out", default=str(ASSETS / "screenshots"))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.only or [*FAMILIES, "best"]
    work = Path(tempfile.mkdtemp(prefix="wan_ui_screens_"))
    os.environ.setdefault("WAN_UI_LORA_DIR", str(work / "loras"))
    manager = ModelManager(log=lambda m: print(f"[screenshots] {m}", file=sys.stderr))
    cuda = manager.hw.cuda
    tiny = resolve_model(args.model, cuda).kind == TINY
    write_random_lora(Path(os.environ["WAN_UI_LORA_DIR"]) / LORA_FILE, layers=2 if tiny else 30,
                      inner=TINY_TRANSFORMER["num_attention_heads"] * TINY_TRANSFORMER["attention_head_dim"]
                      if tiny else 1536, rank=4 if tiny else 32)
    request = default_request(tiny, prompt=example_prompts()[0]).to_dict()
    settings_file = work / "last.json"
    demo = create_demo(manager, model=args.model, outputs=work / "outputs", settings_file=settings_file)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            **launch_kwargs(work / "outputs"))
    skipped = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1250})
            page.goto(url)
            for name in names:
                opts = family_options(name, cuda)
                try:
                    check_available(opts, manager.hw)
                except Exception as e:  # a family this machine cannot run: said, not drawn
                    skipped[name] = str(e)
                    continue
                print(f"[screenshots] {name}: {opts.diff_from_default()}", file=sys.stderr)
                capture(page, settings_file, name, request, opts, out)
            browser.close()
    finally:
        demo.close()
    (out / "skipped.json").write_text(json.dumps(skipped, indent=2) + "\n")
    for name, why in skipped.items():
        print(f"[screenshots] skipped {name}: {why}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
