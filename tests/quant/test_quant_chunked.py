"""The chunked dequantize-and-multiply: equal to the whole-weight reference path, never the whole weight."""

import pytest
import torch
from torch import nn

from minituner.quant.linear import CHUNK_BYTES, QuantizedLinear


def pair(out_features: int, in_features: int, scheme: str, chunk_bytes: int, bias: bool = True):
    """The same quantized layer twice: chunked (``chunk_bytes``) and the reference (whole weight)."""
    torch.manual_seed(0)
    linear = nn.Linear(in_features, out_features, bias=bias)
    return QuantizedLinear(linear, scheme, chunk_bytes=chunk_bytes), QuantizedLinear(linear, scheme, chunk_bytes=None)


def forward_backward(layer: QuantizedLinear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    y = layer(x)
    y.backward(torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y))
    return y.detach(), x.grad


@pytest.mark.parametrize("scheme", ["nf4", "nf4_dq", "int4", "int8"])
@pytest.mark.parametrize(("out_features", "in_features", "chunk_rows"), [(200, 64, 24), (37, 128, 5), (16, 16, 3)])
def test_chunked_equals_the_reference_on_odd_shapes_and_tiny_layers(scheme, out_features, in_features, chunk_rows):
    chunked, reference = pair(out_features, in_features, scheme, chunk_bytes=4 * in_features * chunk_rows)
    chunks = chunked.row_chunks(torch.device("cpu"))
    assert len(chunks) > 1 and chunks[-1][1] == out_features  # a partial last chunk where rows do not divide
    x = torch.randn(3, 7, in_features, generator=torch.Generator().manual_seed(1))
    (y, grad), (y_ref, grad_ref) = forward_backward(chunked, x), forward_backward(reference, x)
    assert torch.allclose(y, y_ref, rtol=1e-5, atol=1e-6) and torch.allclose(grad, grad_ref, rtol=1e-5, atol=1e-6)
    assert all(b.grad is None for b in chunked.parameters())  # gradients reach the input only


def test_chunks_start_on_quantization_blocks_and_hold_about_the_chunk_bytes():
    layer, _ = pair(48, 40, "nf4", chunk_bytes=4 * 40 * 10)  # 40 values a row: a block every 8 rows
    chunks = layer.row_chunks(torch.device("cpu"))
    assert all(start * 40 % 64 == 0 for start, _ in chunks) and [b - a for a, b in chunks] == [8] * 6
    big, _ = pair(4096, 2048, "nf4_dq", chunk_bytes=CHUNK_BYTES)  # 32 MiB dense: eight 4 MiB chunks
    assert [4 * (b - a) * 2048 for a, b in big.row_chunks(torch.device("cpu"))] == [CHUNK_BYTES] * 8
    # 4 MiB hold 95.3 rows of 11008 values: rounded to 128 (a row count the matmul runs fast on)
    wide, _ = pair(1000, 11008, "nf4", chunk_bytes=CHUNK_BYTES, bias=False)
    assert [b - a for a, b in wide.row_chunks(torch.device("cpu"))] == [128] * 7 + [104]


def test_small_weights_and_the_reference_setting_use_the_whole_weight():
    small, reference = pair(256, 64, "nf4_dq", chunk_bytes=CHUNK_BYTES)  # MiniGPT's layers: 64 KiB
    assert small.row_chunks(torch.device("cpu")) is None and reference.row_chunks(torch.device("cpu")) is None
    medium, _ = pair(768, 3072, "nf4_dq", chunk_bytes=CHUNK_BYTES)  # 9 MiB: faster whole (measured)
    assert medium.row_chunks(torch.device("cpu")) is None


def test_bf16_inputs_give_bf16_outputs_close_to_the_reference():
    chunked, reference = pair(96, 128, "nf4_dq", chunk_bytes=4 * 128 * 32)
    x = torch.randn(4, 128, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    (y, grad), (y_ref, grad_ref) = forward_backward(chunked, x), forward_backward(reference, x)
    assert y.dtype == grad.dtype == torch.bfloat16
    assert torch.allclose(y.float(), y_ref.float(), rtol=2e-2, atol=2e-2)
    assert torch.allclose(grad.float(), grad_ref.float(), rtol=2e-2, atol=2e-2)
