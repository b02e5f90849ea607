"""Part B's check tells a composition bug from quantization noise: the right composition passes, broken ones fail."""

from __future__ import annotations

import pytest
import torch

from minituner.lora.layer import lora_layers
from minituner.quant.linear import QuantizedLinear, rounded_weight
from minituner.reports.merge_fidelity import base_copy
from minituner.reports.parity import parity
from minituner.store.base_cache import LoadedBase
from tests.helpers import BASE_SHA, IDX, trained_adapter

SCHEME = "nf4_dq"


def adapter_quantized_with_the_base(base, half, adapter_dir):
    """LoRA applied before quantization: the quantizer rounds the adapter's weights too."""
    model = base_copy(base, SCHEME, half, adapter_dir)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            for linear in (layer.lora_A, layer.lora_B):
                linear.weight.copy_(rounded_weight(linear.weight, SCHEME))
    return model


def scaling_doubled(base, half, adapter_dir):
    model = base_copy(base, SCHEME, half, adapter_dir)
    for layer in lora_layers(model).values():
        layer.scaling *= 2
    return model


def one_layer_adapter_dropped(base, half, adapter_dir):
    # a value projection: in an untrained base the attention is near uniform, so a query's adapter matters little
    model = base_copy(base, SCHEME, half, adapter_dir)
    model.set_submodule("blocks.0.attn.v_proj", lora_layers(model)["blocks.0.attn.v_proj"].base_layer)
    return model


def scales_of_the_wrong_block(base, half, adapter_dir):
    model = base_copy(base, SCHEME, half, adapter_dir)
    for module in model.modules():
        if isinstance(module, QuantizedLinear):
            right = module.block_scales
            module.block_scales = lambda right=right: right().roll(1)
    return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model, adapter_dir = trained_adapter(tmp_path_factory.mktemp("parity"))
    for layer in lora_layers(model).values():  # the helper's model carries the adapter: take it back off
        model.set_submodule(next(n for n, m in model.named_modules() if m is layer), layer.base_layer)
    base = LoadedBase(model, adapter_dir.parent, BASE_SHA, {})
    return base, adapter_dir, (IDX, torch.ones_like(IDX, dtype=torch.bool))


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_the_right_composition_is_within_twice_the_half_precision_rounding(setup, half):
    base, adapter_dir, batch = setup
    check, context = parity(base, SCHEME, half, adapter_dir, batch)
    assert check["tolerance"] == 2 * check["half_rounding"] > 0
    assert check["within_tolerance"] and check["composition_error"] <= check["tolerance"]
    assert check["relative_diff"] > check["tolerance"]  # NF4's own error is far larger than the bound
    assert check["ratio_to_bare"] == pytest.approx(check["relative_diff"] / check["bare_relative_diff"])
    assert len(context) == 3


@pytest.mark.parametrize(
    "broken", [adapter_quantized_with_the_base, scaling_doubled, one_layer_adapter_dropped, scales_of_the_wrong_block]
)
def test_a_broken_composition_fails_the_check(setup, broken):
    base, adapter_dir, batch = setup
    check, _ = parity(base, SCHEME, "float16", adapter_dir, batch, broken(base, "float16", adapter_dir))
    assert not check["within_tolerance"], check
