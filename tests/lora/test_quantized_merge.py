"""Merging an adapter into a quantized base: re-quantized merge, merge-then-quantize, the merge command."""

import copy
import warnings

import pytest
import torch

from minituner.apps.merge import main as merge_main
from minituner.generation.models import comparison_models
from minituner.lora.inject import LoRAConfig, inject_lora
from minituner.lora.layer import QuantizedMergeWarning, adapter_parameters, lora_layers, merge_adapters
from minituner.lora.merge import merged_quantized
from minituner.quant.linear import QuantizedLinear, changed_block_share, quantize_model
from minituner.store.base_cache import load_base, save_base
from tests.helpers import IDX, base_model, trained_adapter


def relative(found: torch.Tensor, expected: torch.Tensor) -> float:
    return ((found - expected).abs().mean() / expected.abs().mean()).item()


def adapted(scheme: str, std: float = 0.01) -> torch.nn.Module:
    """The seed-0 MiniGPT (quantized unless ``none``) with all-linear adapters of a trained adapter's size."""
    model = base_model()
    if scheme != "none":
        quantize_model(model, scheme)
    inject_lora(model, LoRAConfig(target_modules="all_linear"))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in adapter_parameters(model).values():
            param.copy_(torch.randn(param.shape, generator=generator) * std)
    return model.eval()


@pytest.mark.parametrize("scheme", ["nf4", "nf4_dq", "int4", "int8"])
def test_merging_into_a_quantized_base_costs_less_than_quantizing_it_did(scheme):
    # The stated tolerance: the merged, re-quantized model is closer to the unmerged adapter on the
    # quantized base than that model is to the adapter on the fp32 base (one quantization error).
    full, quantized = adapted("none")(IDX)[0], adapted(scheme)
    unmerged = quantized(IDX)[0]
    with pytest.warns(QuantizedMergeWarning, match=f"merge on a {scheme} base"):
        merge_adapters(quantized)
    merged = quantized(IDX)[0]
    assert 0 < relative(merged, unmerged) < relative(unmerged, full)


def test_a_quantized_merge_is_idempotent_and_refuses_a_non_finite_result():
    model = adapted("nf4_dq")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantizedMergeWarning)
        merge_adapters(model)
        once = {n: b.clone() for n, b in model.named_buffers()}
        merge_adapters(model)  # a second call does nothing
    assert all(torch.equal(b, once[n]) for n, b in model.named_buffers())
    layer = adapted("nf4_dq").blocks[0].mlp.fc_in
    codes = layer.base_layer.qweight.clone()
    with torch.no_grad():
        layer.lora_B.weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        layer.merge()
    assert torch.equal(layer.base_layer.qweight, codes) and not layer.merged


def test_an_empty_update_changes_no_nf4_code():
    model = adapted("nf4", std=0.0)
    before = copy.deepcopy(model)
    with pytest.warns(QuantizedMergeWarning):
        merge_adapters(model)
    assert changed_block_share(before, model) == 0.0  # dequantize + quantize is exact for plain NF4


@pytest.mark.parametrize("merge_into", ["quantized", "full_precision"])
def test_merged_quantized_gives_a_plain_quantized_model_close_to_the_adapter(tmp_path, merge_into):
    base = base_model()
    digest = save_base(base, tmp_path / "base", {})
    adapter_model, directory = trained_adapter(tmp_path, base_sha=digest)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantizedMergeWarning)
        merged, adapter = merged_quantized(base, directory, "nf4_dq", merge_into, digest)
    assert not lora_layers(merged) and not lora_layers(base)  # the base is left as it was
    assert all(
        isinstance(merged.get_submodule(n), QuantizedLinear) for n in ("blocks.0.attn.q_proj", "blocks.0.mlp.fc_out")
    )
    unmerged = copy.deepcopy(base)
    quantize_model(unmerged, "nf4_dq")
    bare_error = relative(unmerged(IDX)[0], base(IDX)[0])
    assert relative(merged.eval()(IDX)[0], adapter_model(IDX)[0]) < 2 * bare_error
    assert adapter.sha256


def test_merge_command_with_quant_writes_the_weights_the_quantized_merge_computes_with(tmp_path, capsys):
    base = base_model()
    digest = save_base(base, tmp_path / "base", {})
    _, directory = trained_adapter(tmp_path, base_sha=digest)
    argv = [str(directory), str(tmp_path / "merged"), "--base", str(tmp_path / "base"), "--quant", "nf4"]
    assert merge_main(argv) == 0
    written = load_base(tmp_path / "merged")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantizedMergeWarning)
        expected, _ = merged_quantized(base, directory, "nf4", "quantized", digest)
    assert torch.allclose(written.model(IDX)[0], expected.eval()(IDX)[0], atol=1e-5)
    requantized = copy.deepcopy(written.model)
    quantize_model(requantized, "nf4")
    assert changed_block_share(expected, requantized) == 0.0  # the same NF4 codes when quantized again
    with pytest.raises(SystemExit) as error:
        merge_main([*argv[:4], "--quant", "fp3"])
    assert error.value.code == 2 and "invalid choice: 'fp3'" in capsys.readouterr().err


def test_generate_can_compare_an_adapter_with_its_merge_into_the_quantized_base(tmp_path):
    base = base_model()
    digest = save_base(base, tmp_path / "base", {})
    _, directory = trained_adapter(tmp_path, base_sha=digest)
    with pytest.warns(QuantizedMergeWarning):
        models = comparison_models(load_base(tmp_path / "base"), [directory], quant="nf4_dq", merged=True)
    assert [m.label.split(":")[0] for m in models] == ["base", "adapter", "merged"]
    adapter_logits, merged_logits = models[1].model(IDX)[0], models[2].model(IDX)[0]
    assert 0 < relative(merged_logits, adapter_logits) < 0.1
