"""The memory calculator's arithmetic agrees exactly with instantiated models."""

from __future__ import annotations

import pytest
import torch

from minituner.lora.inject import LoRAConfig, inject_lora
from minituner.memory.footprint import fits, predict, quantized_weight_bytes
from minituner.model.minigpt import MiniGPT, MiniGPTConfig
from minituner.quant.linear import QuantizedLinear, quantize_model

SHAPES = [MiniGPTConfig(), MiniGPTConfig(n_layer=1, n_head=2, d_model=16, d_ff=32), MiniGPTConfig(bias=False)]
LORAS = [
    LoRAConfig(target_modules="mlp"),
    LoRAConfig(r=4, target_modules="attn_qv", bias="lora_only", layers_to_transform=[0]),
    LoRAConfig(r=2, target_modules=r".*\.(k_proj|fc_out)", bias="all"),
]


def measured(model: MiniGPT) -> dict:
    trainable = [p for p in model.parameters() if p.requires_grad]
    return {
        "trainable_params": sum(p.numel() for p in trainable),
        "weights": sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]),
        "adam": sum(8 * p.numel() + 4 for p in trainable),
    }


@pytest.mark.parametrize("shape", SHAPES, ids=["minigpt", "tiny", "no_bias"])
def test_full_finetuning_prediction_equals_the_model(shape):
    predicted = predict(shape, "full")
    assert {k: getattr(predicted, k) for k in ("trainable_params", "weights", "adam")} == measured(MiniGPT(shape))
    assert predicted.grads == 4 * predicted.trainable_params and predicted.frozen_params == 0


@pytest.mark.parametrize("quant", ["none", "nf4", "nf4_dq", "int4", "int8"])
@pytest.mark.parametrize("lora", LORAS, ids=["mlp", "qv_layer0", "regex_all_bias"])
@pytest.mark.parametrize("shape", SHAPES, ids=["minigpt", "tiny", "no_bias"])
def test_lora_prediction_equals_the_model(shape, lora, quant):
    model = MiniGPT(shape)
    if quant != "none":
        quantize_model(model, quant)
    inject_lora(model, lora)
    predicted = predict(shape, "lora", lora=lora, quant=quant)
    assert {k: getattr(predicted, k) for k in ("trainable_params", "weights", "adam")} == measured(model)


@pytest.mark.parametrize("scheme", ["nf4", "nf4_dq", "int4", "int8"])
@pytest.mark.parametrize("shape", [(64, 64), (256, 64), (512, 1024)])
def test_quantized_weight_bytes_equal_the_buffers(scheme, shape):
    layer = QuantizedLinear(torch.nn.Linear(shape[1], shape[0]), scheme)
    assert quantized_weight_bytes(*shape, scheme) == sum(b.numel() * b.element_size() for b in layer.buffers())


def test_mixed_precision_buckets_and_fit_check():
    shape = MiniGPTConfig()
    full = predict(shape, "full", precision="fp16_mixed")
    assert full.weights == 6 * full.trainable_params and full.grads == 2 * full.trainable_params
    lora = predict(shape, "lora", lora=LoRAConfig(), precision="fp16_mixed")
    assert lora.weights == 2 * lora.frozen_params + 6 * lora.trainable_params
    assert fits(lora, lora.peak) and not fits(lora, lora.peak - 1)
    bf16 = predict(shape, "full", precision="bf16_true")
    assert bf16.weights == bf16.grads == 2 * bf16.trainable_params
    steps = full.adam - 8 * full.trainable_params  # one fp32 step per tensor, whatever the precision
    assert bf16.adam == 4 * bf16.trainable_params + steps  # two bf16 moments
    with pytest.raises(ValueError, match="precision='fp8'"):
        predict(shape, "x", precision="fp8")
