"""``quant.block_size``: NF4 and int4 blocks of 32 to 256 values, their bytes, their error, checked up front."""

import pytest
import torch

from minituner.config.validation import ConfigError, validate_config
from minituner.memory.footprint import quantized_weight_bytes
from minituner.quant.linear import BLOCK_SIZES, QuantizedLinear
from minituner.quant.storage import formula_bits
from tests.helpers import QUICK, compose_config, save_tiny_base


def linear(out_features: int, in_features: int) -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(in_features, out_features)


@pytest.mark.parametrize("scheme", ["nf4", "nf4_dq", "int4"])
@pytest.mark.parametrize("block", BLOCK_SIZES)
def test_the_bytes_stored_equal_the_calculator_and_the_formula(scheme, block):
    layer = QuantizedLinear(linear(128, 256), scheme, block_size=block)
    stored = sum(b.numel() * b.element_size() for b in layer.buffers())
    assert stored == quantized_weight_bytes(128, 256, scheme, block)
    assert 8 * stored / layer.weight_numel == pytest.approx(formula_bits(layer))


@pytest.mark.parametrize("scheme", ["nf4", "int4"])
def test_smaller_blocks_store_more_bits_and_round_less(scheme):
    source = linear(256, 512)
    errors, bits = [], []
    for block in BLOCK_SIZES:
        layer = QuantizedLinear(source, scheme, block_size=block)
        errors.append((layer.dequantized_weight() - source.weight).abs().mean().item())
        bits.append(formula_bits(layer))
    assert errors == sorted(errors) and bits == sorted(bits, reverse=True)


@pytest.mark.parametrize("block", [32, 256])
def test_the_chunked_cpu_path_follows_the_block_size(block):
    source = linear(2048, 2304)  # larger than the whole-weight limit: dequantized in row chunks
    chunked = QuantizedLinear(source, "nf4", block_size=block)
    whole = QuantizedLinear(source, "nf4", block_size=block, chunk_bytes=None)
    assert chunked.row_chunks(torch.device("cpu")) is not None
    x = torch.randn(3, 2304, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(chunked(x), whole(x))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["quant=nf4", "quant.block_size=48"], "quant.block_size=48 is not allowed: must be one of [32, 64, 128, 256]"),
        (
            ["model=tiny", "model.d_ff=24", "quant=nf4", "quant.block_size=256"],
            "quant.block_size=256 does not divide the linears ['16x24', '24x16'] of model='tiny'",
        ),
    ],
)
def test_a_block_size_that_cannot_apply_is_refused_before_any_work(make_cfg, overrides, expected):
    with pytest.raises(ConfigError) as error:
        validate_config(make_cfg("regime=lora", *overrides))
    assert expected in str(error.value)


def test_a_run_with_blocks_of_128_stores_them_and_its_memory_matches_the_prediction(tmp_path):
    import json
    from pathlib import Path

    from minituner.training.pipeline import train

    base = save_tiny_base(tmp_path / "base")
    cfg = compose_config([*QUICK, "regime=lora", f"base.path={base}", "quant=nf4", "quant.block_size=128"], tmp_path)
    train(cfg)
    memory = json.loads((Path(cfg.paths.output_dir) / "memory.json").read_text())
    assert all(row["equal"] for row in memory["predicted_vs_measured"].values())
    quantized = memory["snapshots"]["after_step_2"]["ledger"]["quantized_by_scheme"]["nf4"]
    with_64 = sum(quantized_weight_bytes(o, i, "nf4") for o, i in [(16, 16)] * 4 + [(32, 16), (16, 32)])
    assert quantized < with_64  # fewer absmax scales
