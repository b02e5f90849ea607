"""Half-precision frozen bases (``base.dtype``): the LoRA path stays fp32, the base path in bf16/fp16."""

import json
from pathlib import Path

import pytest
import torch

from minituner.config.validation import ConfigError, validate_config
from minituner.lora.inject import LoRAConfig, inject_lora
from minituner.lora.layer import adapter_parameters
from minituner.memory.footprint import predict
from minituner.memory.ledger import tensor_ledger
from minituner.model.minigpt import MiniGPTConfig
from minituner.model.precision import cast_frozen_base
from minituner.quant.linear import quantize_model
from minituner.training.pipeline import train
from tests.helpers import IDX, QUICK, base_model, compose_config, save_tiny_base

# mean |logit difference| / mean |logit| of LoRA on a half-precision base against the same model in fp32
# with random all-linear adapters (measured: bf16 0.71% / 0.81% on the fp32 / NF4-DQ base, fp16 0.096% / 0.093%;
# bf16 keeps 8 significant bits, fp16 11: about 8x apart, as the measurements are)
TOLERANCE = {"bfloat16": 0.015, "float16": 0.002}


def adapted(dtype: str, scheme: str = "none", targets: str = "all_linear"):
    model = base_model()
    if scheme != "none":
        quantize_model(model, scheme)
    cast_frozen_base(model, dtype)
    inject_lora(model, LoRAConfig(target_modules=targets))
    with torch.no_grad():
        for param in adapter_parameters(model).values():
            param.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    return model


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("scheme", ["none", "nf4_dq"])
def test_lora_on_a_half_precision_base_matches_fp32_within_the_stated_tolerance(dtype, scheme):
    reference, half = adapted("float32", scheme), adapted(dtype, scheme)
    expected, found = reference(IDX)[0], half(IDX)[0]
    assert found.dtype == torch.float32  # logits always come out in fp32
    relative = ((found - expected).abs().mean() / expected.abs().mean()).item()
    assert 0 < relative <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_the_base_is_stored_in_half_precision_and_the_adapters_stay_fp32_and_alone_get_gradients(dtype):
    model = adapted(dtype).train()
    adapters = adapter_parameters(model)
    assert {p.dtype for p in adapters.values()} == {torch.float32}
    frozen = {n: p for n, p in model.named_parameters() if n not in adapters}
    assert {p.dtype for p in frozen.values()} == {getattr(torch, dtype)}
    assert model.lm_head.weight is model.tok_emb.weight  # still tied, stored once
    _, loss = model(IDX, IDX)
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in adapters.values())
    assert all(p.grad is None for p in frozen.values())


def test_a_lora_layer_returns_the_activations_dtype():
    layer = adapted("bfloat16").blocks[0].mlp.fc_in
    x = torch.randn(2, 5, 64, dtype=torch.bfloat16)
    assert layer(x).dtype == torch.bfloat16  # the fp32 update is cast back: no silent promotion


def test_quantization_scales_stay_fp32_on_a_half_precision_base():
    model = adapted("bfloat16", "nf4_dq")
    assert model.blocks[0].attn.q_proj.base_layer.absmax_code_scale.dtype == torch.float32


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("scheme", ["none", "nf4_dq"])
def test_the_ledger_of_two_training_steps_equals_the_prediction(dtype, scheme):
    model = adapted(dtype, scheme, targets="mlp").train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(2):
        _, loss = model(IDX, IDX)
        loss.backward()
        optimizer.step()
    ledger = tensor_ledger(model, optimizer)
    predicted = predict(MiniGPTConfig(), "half", lora=LoRAConfig(target_modules="mlp"), quant=scheme, base_dtype=dtype)
    assert {b: ledger[b] for b in ("weights", "grads", "adam")} == {
        b: getattr(predicted, b) for b in ("weights", "grads", "adam")
    }
    assert (
        predicted.weights
        < predict(MiniGPTConfig(), "fp32", lora=LoRAConfig(target_modules="mlp"), quant=scheme).weights
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["base.dtype=float64"], "base.dtype='float64' is not allowed: must be one of ['float32', 'bfloat16', "),
        (["regime=full", "base.dtype=bfloat16"], "base.dtype='bfloat16' with regime='full' is not allowed"),
        (["base.dtype=bfloat16", "lora.bias=all"], "lora.bias='all' with base.dtype='bfloat16' is not allowed"),
        (["base.dtype=float16", "trainer=cpu_bf16"], "base.dtype='float16' with trainer.precision='bf16-mixed'"),
    ],
)
def test_bad_half_precision_settings_are_refused_before_any_work(make_cfg, overrides, expected):
    with pytest.raises(ConfigError) as error:
        validate_config(make_cfg(*overrides))
    assert expected in str(error.value)


def test_a_bf16_base_run_under_bf16_autocast_records_its_dtype_and_its_memory_matches_the_prediction(tmp_path):
    base = save_tiny_base(tmp_path / "base")
    cfg = compose_config(
        [*QUICK, "regime=lora", f"base.path={base}", "base.dtype=bfloat16", "quant=nf4", "trainer=cpu_bf16"], tmp_path
    )
    metrics = train(cfg)
    assert metrics["base_dtype"] == "bfloat16" and "quantized_base_regular_ppl" in metrics
    memory = json.loads((Path(cfg.paths.output_dir) / "memory.json").read_text())
    assert all(row["equal"] for row in memory["predicted_vs_measured"].values())
    ledger = memory["snapshots"]["after_step_2"]["ledger"]
    assert set(ledger["frozen_by_dtype"]) == {"bfloat16"} and set(ledger["quantized_by_scheme"]) == {"nf4"}
