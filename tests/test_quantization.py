"""Quantization configs: torchao's quantize step must not change inductor's settings for the whole process."""

import pytest
import torch
import torchao.quantization.quant_api as quant_api
from torchao.quantization import quantize_

from wan_ui.core.options import OptimizationSet
from wan_ui.optim.quantization import NOT_QUANTIZED, _transformer_config


@pytest.mark.parametrize("quantization", ["torchao_fp8", "torchao_int8wo"])
def test_torchao_quantization_leaves_inductor_settings_alone(quantization, monkeypatch):
    # torchao's own default turns on coordinate-descent tuning for every later compile (minutes of autotuning).
    # The FP8 config refuses CPUs in its hardware check, which is not what is tested here: bypass it.
    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda granularities: None)
    inductor = torch._inductor.config
    config = _transformer_config(OptimizationSet().with_(quantization=quantization))
    assert config.modules_to_not_convert == NOT_QUANTIZED
    layer = torch.nn.Linear(64, 32, dtype=torch.bfloat16)
    with inductor.patch(coordinate_descent_tuning=False, coordinate_descent_check_all_directions=False):
        quantize_(layer, config.quant_type)
        assert type(layer.weight).__name__ != "Parameter"  # really quantized: the setter had its chance to run
        assert not inductor.coordinate_descent_tuning and not inductor.coordinate_descent_check_all_directions
