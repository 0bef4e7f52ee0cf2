"""Wan2.1-T2V-1.3B workbench: `core` (requests, options, manager, generate, metrics), `optim` (one module per
optimization family), `parallel` (several GPUs), `ui` (the Gradio app), `bench` (the benchmark), `train` (LoRA
training). docs/ARCHITECTURE.md draws the layers and the path of one generation through them."""

import logging

# Import-time warnings of optional packages that no user can act on; each option that needs such a package says
# itself whether it can run here (core/options.py value_availability). bitsandbytes looks for a CPU kernel on the
# hub; torchao registers enums that torch.compile now handles natively; diffusers' torchao loader looks for tensor
# classes that newer torchao releases moved (used only to unpickle torchao-serialized checkpoints).
for _name in ("bitsandbytes.backends.cpu.ops", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer"):
    logging.getLogger(_name).setLevel(logging.ERROR)
