"""Codecs, the quantized linear layer and exact storage accounting."""

import math

import pytest
import torch
from torch import nn

from minituner.model.minigpt import MiniGPT, MiniGPTConfig
from minituner.quant.codecs import (
    NF4_CODEBOOK,
    dequantize_scales,
    double_quantize,
    int4_dequantize,
    int4_quantize,
    nf4_dequantize,
    nf4_quantize,
    pack_nibbles,
    unpack_nibbles,
)
from minituner.quant.linear import QuantizedLinear, quantize_model
from minituner.quant.storage import storage_report


def normal_weight(shape=(256, 64), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.02


def test_codebook_is_sorted_in_minus_one_to_one_with_zero():
    assert NF4_CODEBOOK.numel() == 16
    assert torch.all(NF4_CODEBOOK[1:] > NF4_CODEBOOK[:-1])
    assert NF4_CODEBOOK[0] == -1 and NF4_CODEBOOK[-1] == 1 and 0.0 in NF4_CODEBOOK.tolist()


def test_pack_unpack_round_trip_and_nibble_order():
    codes = torch.randint(0, 16, (128,), generator=torch.Generator().manual_seed(0))
    packed = pack_nibbles(codes)
    assert packed.dtype == torch.uint8 and packed.numel() == 64
    assert torch.equal(unpack_nibbles(packed).long(), codes)
    assert pack_nibbles(torch.tensor([1, 2])).item() == 0x12  # first code in the high nibble


def test_nf4_picks_the_nearest_level_and_maps_block_maxima_exactly():
    weight = normal_weight()
    packed, absmax = nf4_quantize(weight)
    restored = nf4_dequantize(packed, absmax, weight.shape)
    blocks, rebuilt = weight.view(-1, 64), restored.view(-1, 64)
    normalized = blocks / absmax[:, None]
    nearest = NF4_CODEBOOK[(normalized[..., None] - NF4_CODEBOOK).abs().argmin(-1)]
    assert torch.allclose(rebuilt / absmax[:, None], nearest, atol=1e-6)
    peak = blocks.abs().argmax(dim=1)
    assert torch.allclose(rebuilt.gather(1, peak[:, None]), blocks.gather(1, peak[:, None]))


def test_nf4_error_is_lower_than_int4_on_normal_weights():
    weight = normal_weight((1024, 256))
    nf4 = nf4_dequantize(*nf4_quantize(weight), weight.shape)
    int4 = int4_dequantize(*int4_quantize(weight), weight.shape)
    assert (nf4 - weight).pow(2).mean() < (int4 - weight).pow(2).mean()


def test_double_quantized_scales_are_close_and_tiny_layers_get_one_scale_block():
    absmax = nf4_quantize(normal_weight((64, 64)))[1]
    assert absmax.numel() == 64  # fewer blocks than one scale block of 256
    scales = double_quantize(absmax)
    assert scales.codes.dtype == torch.int8 and scales.code_scale.numel() == 1
    assert torch.allclose(dequantize_scales(scales), absmax, rtol=0.02)
    big = double_quantize(nf4_quantize(normal_weight((1024, 256)))[1])
    assert big.code_scale.numel() == 1024 * 256 // 64 // 256


@pytest.mark.parametrize("scheme", ["nf4", "nf4_dq", "int4", "int8"])
def test_quantized_linear_equals_a_linear_on_its_dequantized_weight(scheme):
    linear = nn.Linear(64, 256)
    layer = QuantizedLinear(linear, scheme)
    x = torch.randn(3, 5, 64, requires_grad=True)
    reference = nn.functional.linear(x, layer.dequantized_weight(), layer.bias)
    assert torch.equal(layer(x), reference)
    assert not any(p.requires_grad for p in layer.parameters())
    assert all(b.dtype in (torch.uint8, torch.int8, torch.float32) for b in layer.buffers())
    layer(x).sum().backward()
    assert torch.allclose(x.grad, layer.dequantized_weight().sum(0).expand(3, 5, 64), atol=1e-5)


def test_non_finite_weights_are_refused_with_the_layer_name():
    linear = nn.Linear(64, 64)
    with torch.no_grad():
        linear.weight[3, 3] = float("nan")
    with pytest.raises(ValueError, match="cannot quantize blocks.2.attn.q_proj: its weight holds NaN or Inf"):
        QuantizedLinear(linear, "nf4", name="blocks.2.attn.q_proj")


def test_quantized_model_state_dict_round_trip():
    torch.manual_seed(0)
    model = MiniGPT(MiniGPTConfig())
    quantize_model(model, "nf4_dq")
    torch.manual_seed(1)
    other = MiniGPT(MiniGPTConfig())
    quantize_model(other, "nf4_dq")
    other.load_state_dict(model.state_dict())
    idx = torch.randint(0, 256, (2, 10))
    assert torch.equal(model(idx)[0], other(idx)[0])


@pytest.mark.parametrize("scheme,expected", [("nf4", 4.5), ("nf4_dq", 4 + 8 / 64 + 32 / (64 * 256)), ("int4", 4.5)])
def test_measured_bits_match_the_formula(scheme, expected):
    layer = QuantizedLinear(nn.Linear(4096, 4096), scheme)
    (row,) = storage_report(nn.ModuleDict({"layer": layer}))
    assert row["bits_per_weight"] == pytest.approx(row["formula_bits_per_weight"], abs=1e-12)
    assert row["bits_per_weight"] == pytest.approx(expected, abs=1e-5)


def test_storage_report_of_a_quantized_minigpt():
    torch.manual_seed(0)
    model = MiniGPT(MiniGPTConfig())
    quantize_model(model, "nf4_dq")
    rows = storage_report(model)
    assert len(rows) == 24
    for row in rows:
        assert math.isclose(row["bits_per_weight"], row["formula_bits_per_weight"], rel_tol=1e-12)
    q_proj = next(r for r in rows if r["layer"] == "blocks.0.attn.q_proj")
    # 64x64: 64 NF4 blocks, one scale block of 64: 4 + 8/64 + 32/(64*64) + 32/4096
    assert q_proj["bits_per_weight"] == pytest.approx(4 + 8 / 64 + 32 / 4096 + 32 / 4096)
