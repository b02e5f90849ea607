"""DoRA (``lora.dora=true``): the base at init, exact merges, PEFT both ways, and a run from the config."""

import json
from pathlib import Path

import pytest
import torch

from minituner.lora.adapter_io import AdapterError, load_adapter, save_adapter
from minituner.lora.inject import LoRAConfig, inject_lora
from minituner.lora.layer import (
    QuantizedMergeWarning,
    adapter_parameters,
    lora_layers,
    merge_adapters,
    unmerge_adapters,
)
from minituner.model.precision import cast_frozen_base
from minituner.quant.linear import quantize_model
from minituner.training.pipeline import train
from tests.helpers import IDX, QUICK, base_model, compose_config, save_tiny_base

peft = pytest.importorskip("peft")
DORA = LoRAConfig(r=4, target_modules="all_linear", dora=True)


def relative(found: torch.Tensor, expected: torch.Tensor) -> float:
    return ((found - expected).abs().mean() / expected.abs().mean()).item()


def fresh_dora(base: str, config: LoRAConfig = DORA) -> torch.nn.Module:
    """The seed-0 MiniGPT on an fp32, bf16 or NF4 base with freshly injected DoRA layers."""
    model = base_model()
    if base == "nf4":
        quantize_model(model, "nf4")
    elif base == "bfloat16":
        cast_frozen_base(model, "bfloat16")
    inject_lora(model, config)
    return model


def dora_model(base: str = "float32", config: LoRAConfig = DORA, std: float = 0.02) -> torch.nn.Module:
    """:func:`fresh_dora` with DoRA layers of a trained adapter's size.

    A and B are drawn at ``std``; each magnitude moves by a relative ``std`` from the base's row norm.
    """
    model = fresh_dora(base, config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in adapter_parameters(model).items():
            noise = torch.randn(param.shape, generator=generator) * std
            if name.endswith("lora_magnitude_vector"):
                param.mul_(1 + noise)
            else:
                param.copy_(noise)
    return model.eval()


@pytest.mark.parametrize("base", ["float32", "bfloat16", "nf4"])
def test_dora_starts_exactly_as_its_base_with_the_base_row_norms_as_magnitudes(base):
    plain = dora_model(base)
    for layer in lora_layers(plain).values():
        layer.set_enabled(False)
    reference = plain(IDX)[0]
    fresh = fresh_dora(base)
    assert torch.equal(fresh(IDX)[0], reference)
    layer = lora_layers(fresh)["blocks.0.attn.q_proj"]
    assert torch.equal(layer.lora_magnitude_vector, torch.linalg.norm(layer.base_weight(), dim=1))


# Stated tolerances (mean |dlogit| / mean |logit|): fp32 merges to float error; a bf16 merge rounds
# the merged weight to bf16 (8 significant bits: ~0.4% per weight); an NF4 merge re-quantizes it, and
# must cost less than quantizing did (the test of LoRA's quantized merge).
@pytest.mark.parametrize(("base", "bound"), [("float32", 1e-6), ("bfloat16", 1e-2)])
def test_merged_dora_equals_unmerged_and_unmerge_restores_the_base(base, bound):
    model = dora_model(base)
    unmerged = model(IDX)[0]
    weights = {n: layer.base_weight().clone() for n, layer in lora_layers(model).items()}
    merge_adapters(model)
    assert relative(model(IDX)[0], unmerged) < bound
    unmerge_adapters(model)
    for name, layer in lora_layers(model).items():
        assert relative(layer.base_weight(), weights[name]) < bound
    assert relative(model(IDX)[0], unmerged) < bound


def test_a_qdora_merge_into_nf4_costs_less_than_quantizing_did():
    full, quantized = dora_model("float32", std=0.01)(IDX)[0], dora_model("nf4", std=0.01)
    unmerged = quantized(IDX)[0]
    with pytest.warns(QuantizedMergeWarning):
        merge_adapters(quantized)
    assert 0 < relative(quantized(IDX)[0], unmerged) < relative(unmerged, full)


def test_dora_trains_its_magnitudes_and_the_norm_takes_no_gradient():
    model = dora_model().train()
    model(IDX, IDX)[1].backward()
    layer = lora_layers(model)["blocks.0.mlp.fc_in"]
    assert layer.lora_magnitude_vector.grad is not None and layer.lora_magnitude_vector.grad.abs().sum() > 0
    assert layer.lora_B.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_peft_loads_our_dora_adapter_and_we_load_peft_s_with_the_same_logits(tmp_path, dropout):
    config = LoRAConfig(r=4, target_modules="all_linear", dora=True, dropout=dropout, bias="lora_only")
    ours = dora_model(config=config)
    save_adapter(ours, tmp_path / "ours", config, "base", "ab" * 32)
    assert json.loads((tmp_path / "ours" / "adapter_config.json").read_text())["use_dora"] is True
    theirs = peft.PeftModel.from_pretrained(base_model(), str(tmp_path / "ours"))
    for mode in ("eval", "train"):  # train: dropout active, the base's share recomputed on the dropped input
        getattr(ours, mode)(), getattr(theirs, mode)()
        torch.manual_seed(7)
        mine = ours(IDX)[0]
        torch.manual_seed(7)
        assert (mine - theirs(IDX)[0]).abs().max() < 1e-5
    peft_made = peft.get_peft_model(
        base_model(), peft.LoraConfig(target_modules=["q_proj", "fc_out"], r=4, use_dora=True)
    )
    with torch.no_grad():
        for param in peft_made.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(2)) * 0.05)
    peft_made.save_pretrained(str(tmp_path / "theirs"))
    loaded = base_model()
    load_adapter(loaded, tmp_path / "theirs")
    assert (loaded.eval()(IDX)[0] - peft_made.eval()(IDX)[0]).abs().max() < 1e-5


def test_a_dora_run_from_the_config_saves_magnitudes_and_measures_what_it_predicts(tmp_path):
    base = save_tiny_base(tmp_path / "base")
    cfg = compose_config([*QUICK, "regime=lora", f"base.path={base}", "lora.dora=true", "quant=nf4_dq"], tmp_path)
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    adapter = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert adapter["use_dora"] is True
    memory = json.loads((run_dir / "memory.json").read_text())
    assert all(row["equal"] for row in memory["predicted_vs_measured"].values())
    assert memory["activations"]["equal"] and memory["activations"]["measured_bytes"] > 0


def test_a_dora_config_without_magnitudes_in_the_file_is_refused_naming_them(tmp_path):
    plain = dora_model(config=LoRAConfig(r=4, target_modules="attn_qv"))
    save_adapter(plain, tmp_path / "a", LoRAConfig(r=4, target_modules="attn_qv"), "base", "ab" * 32)
    config_path = tmp_path / "a" / "adapter_config.json"
    config_path.write_text(json.dumps(json.loads(config_path.read_text()) | {"use_dora": True}))
    with pytest.raises(AdapterError, match=r"missing \[.*blocks.0.attn.q_proj.lora_magnitude_vector"):
        load_adapter(base_model(), tmp_path / "a")
