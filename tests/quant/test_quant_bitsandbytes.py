"""NF4 codes and block scales identical to bitsandbytes's reference (skipped without it)."""

import pytest
import torch

from minituner.quant.codecs import nf4_dequantize, nf4_quantize

functional = pytest.importorskip("bitsandbytes.functional")


@pytest.mark.parametrize("shape", [(64, 64), (256, 64), (512, 384), (1280, 1024)])  # the last: gathered in chunks
def test_nf4_codes_and_scales_match_bitsandbytes(shape):
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 0.02
    reference, state = functional.quantize_4bit(weight, blocksize=64, quant_type="nf4")
    packed, absmax = nf4_quantize(weight)
    assert torch.equal(packed, reference.view(-1))
    assert torch.equal(absmax, state.absmax)
    expected = functional.dequantize_4bit(reference, state)
    assert torch.allclose(nf4_dequantize(packed, absmax, weight.shape), expected, atol=1e-7)
