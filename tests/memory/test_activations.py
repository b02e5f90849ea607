"""The activation model against autograd's own saved tensors: equal to the byte, in every regime."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from minituner.lora.inject import LoRAConfig, inject_lora
from minituner.memory.activations import TrainingSetup, saved_activations
from minituner.memory.footprint import predict
from minituner.memory.saved_tensors import SavedTensorMeter
from minituner.model.minigpt import MiniGPT, MiniGPTConfig
from minituner.quant.linear import quantize_model
from tests.helpers import TINY_SHAPE

LLAMA_SHAPED = {"mlp": "swiglu", "norm": "rmsnorm", "n_kv_head": 2, "bias": False, "tie_embeddings": False}
SHAPES = {"tiny": MiniGPTConfig(**TINY_SHAPE), "minigpt": MiniGPTConfig(), "llama": MiniGPTConfig(**LLAMA_SHAPED)}
REGIMES = {  # name -> (lora, quant scheme, base dtype)
    "full": (None, "none", torch.float32),
    "lora_mlp": (LoRAConfig(r=4, target_modules="mlp"), "none", torch.float32),
    "lora_all": (LoRAConfig(r=4, target_modules="all_linear"), "none", torch.float32),
    "qlora": (LoRAConfig(r=4, target_modules="mlp"), "nf4_dq", torch.float32),
    "bf16_base": (LoRAConfig(r=4, target_modules="all_linear"), "none", torch.bfloat16),
    "lora_qv_bias": (LoRAConfig(r=4, target_modules="attn_qv", bias="lora_only"), "none", torch.float32),
    "lora_bias_all": (LoRAConfig(r=4, target_modules="all_linear", bias="all"), "none", torch.float32),
    "one_layer": (LoRAConfig(r=4, target_modules="mlp", layers_to_transform=[0]), "none", torch.float32),
    "dora": (LoRAConfig(r=4, target_modules="all_linear", dora=True), "none", torch.float32),
    "qdora": (LoRAConfig(r=4, target_modules="mlp", dora=True), "nf4_dq", torch.float32),
    "dora_bf16_base": (LoRAConfig(r=4, target_modules="attn_qv", dora=True, bias="lora_only"), "none", torch.bfloat16),
}


def build(config: MiniGPTConfig, lora: LoRAConfig | None, quant: str, dtype: torch.dtype) -> MiniGPT:
    torch.manual_seed(0)
    model = MiniGPT(config)
    if lora is not None:
        model.requires_grad_(False)
        model.to(dtype)
        if quant != "none":
            quantize_model(model, quant)
        inject_lora(model, lora)
    return model.train()


def measured_step(model: MiniGPT, passes: list[tuple[int, int]]) -> tuple[int, list[tuple[int, int]]]:
    """Saved bytes of a step of ``passes`` forward passes (read before backward), then the backward."""
    generator = torch.Generator().manual_seed(1)
    with SavedTensorMeter(model) as meter:
        losses = [model(*(torch.randint(0, 256, (b, t), generator=generator) for _ in "xy"))[1] for b, t in passes]
    measured = meter.bytes
    sum(losses).backward()
    return measured, meter.batches


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("lora_dropout", [0.0, 0.05])
def test_predicted_saved_activations_equal_the_measured(shape, regime, dropout, lora_dropout):
    lora, quant, dtype = REGIMES[regime]
    if lora is None and lora_dropout:
        pytest.skip("full fine-tuning has no LoRA dropout")
    lora = lora and dataclasses.replace(lora, dropout=lora_dropout)
    if lora and lora.layers_to_transform and shape != "tiny":
        lora = dataclasses.replace(lora, layers_to_transform=[2])  # frozen blocks before and after it
    config = dataclasses.replace(SHAPES[shape], dropout=dropout)
    model = build(config, lora, quant, dtype)
    measured, batches = measured_step(model, [(3, 7), (2, 5)])  # a training batch and a replay batch
    setup = TrainingSetup(lora=lora, quantized=quant != "none", base_bytes=2 if dtype == torch.bfloat16 else 4)
    assert saved_activations(config, setup, batches).total == measured > 0


@pytest.mark.parametrize("lora", [None, LoRAConfig(r=4, target_modules="mlp", dropout=0.05)])
@pytest.mark.parametrize(
    "layers", [None, [2]]
)  # [2]: blocks 0 and 1 train nothing and keep nothing, checkpointed or not
@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("shape", ["minigpt", "llama"])
def test_checkpointing_keeps_block_inputs_only_and_gives_the_same_gradients_bit_for_bit(lora, layers, dropout, shape):
    if layers and lora is None:
        pytest.skip("full fine-tuning trains every block")
    lora = lora and dataclasses.replace(lora, layers_to_transform=layers)
    config = dataclasses.replace(SHAPES[shape], dropout=dropout)
    plain = build(config, lora, "none", torch.float32)
    checkpointed = copy.deepcopy(plain)
    checkpointed.activation_checkpointing = True
    torch.manual_seed(5)  # the same dropout masks for both models: non-reentrant checkpointing replays the RNG
    plain_bytes, batches = measured_step(plain, [(3, 7)])
    torch.manual_seed(5)
    checkpointed_bytes, _ = measured_step(checkpointed, [(3, 7)])
    setup = TrainingSetup(lora=lora)
    assert (
        saved_activations(config, dataclasses.replace(setup, checkpointing=True), batches).total == checkpointed_bytes
    )
    assert checkpointed_bytes < plain_bytes == saved_activations(config, setup, batches).total
    grads = [
        (a.grad, b.grad) for a, b in zip(plain.parameters(), checkpointed.parameters(), strict=True) if a.requires_grad
    ]
    assert grads and all(torch.equal(a, b) for a, b in grads)


def test_the_meter_counts_storages_once_and_leaves_out_weights_and_freed_graphs():
    linear = torch.nn.Linear(4, 4)
    x = torch.randn(3, 4, requires_grad=True)
    with SavedTensorMeter(linear) as meter:
        y = linear(x)  # saves x (its storage: 48 bytes) and the weight (a parameter: not counted)
        linear(x * 2).sum()  # its graph is dropped at once: what it saved is gone
    assert meter.bytes == 3 * 4 * 4 and meter.batches == [(3, 4), (3, 4)]
    with SavedTensorMeter(linear) as again:
        y2 = linear(x[:2])  # a view of x: the same storage
        y3 = linear(x)
    assert again.bytes == 48
    del y, y2, y3


def test_a_wrong_rule_is_caught():
    """The comparison can fail: the model with LoRA dropout switched off under-counts a run that uses it."""
    lora = LoRAConfig(r=4, target_modules="mlp", dropout=0.05)
    config = MiniGPTConfig()
    measured, batches = measured_step(build(config, lora, "none", torch.float32), [(3, 7)])
    wrong = saved_activations(config, TrainingSetup(lora=dataclasses.replace(lora, dropout=0.0)), batches).total
    assert wrong < measured


def test_the_footprint_carries_both_activation_figures_and_the_rule_of_thumb():
    row = predict(MiniGPTConfig(), "LoRA", lora=LoRAConfig(target_modules="mlp"), batch_size=32, seq_len=64)
    assert row.activations_checkpointed < row.activations
    assert row.rule_of_thumb_activations == 32 * 64 * 64 * 4 * 16
    assert row.total_checkpointed == row.total - row.activations + row.activations_checkpointed
    with pytest.raises(ValueError, match="attention='flash' is not one of"):
        predict(MiniGPTConfig(), "x", lora=LoRAConfig(), attention="flash")
