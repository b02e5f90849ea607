"""PEFT interop both ways: PEFT loads minituner's adapters, minituner loads PEFT's, with the same logits."""

import json

import pytest
import torch

from minituner.lora.adapter_io import AdapterError, load_adapter
from minituner.lora.inject import LoRAConfig
from tests.helpers import IDX, base_model, trained_adapter

peft = pytest.importorskip("peft")


@pytest.mark.parametrize(
    "config",
    [
        LoRAConfig(target_modules="attn_qv"),
        LoRAConfig(target_modules="all_linear", r=4, alpha=8, use_rslora=True),
        LoRAConfig(target_modules=["q_proj"], layers_to_transform=[1, 2], bias="lora_only"),
        LoRAConfig(target_modules="attn_qv", bias="all"),
    ],
)
def test_peft_from_pretrained_reproduces_minituner_logits(tmp_path, config):
    ours, directory = trained_adapter(tmp_path, config)
    theirs = peft.PeftModel.from_pretrained(base_model(), str(directory)).eval()
    with torch.no_grad():
        assert torch.allclose(theirs(IDX)[0], ours(IDX)[0], atol=1e-6)


def peft_saved_adapter(directory, **lora_config) -> torch.nn.Module:
    """An adapter made and saved by the installed PEFT itself (random non-zero LoRA weights and trained biases)."""
    model = peft.get_peft_model(base_model(), peft.LoraConfig(**lora_config))
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:  # lora_A, lora_B and, with bias modes, the biases that train
                param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    model.save_pretrained(str(directory))
    return model.eval()


@pytest.mark.parametrize(
    "lora_config",
    [
        {"target_modules": ["q_proj", "v_proj"]},
        {
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "fc_in", "fc_out"],
            "r": 4,
            "lora_alpha": 8,
            "use_rslora": True,
        },
        {"target_modules": ["fc_in", "fc_out"], "bias": "lora_only"},
        {"target_modules": ["q_proj", "v_proj"], "bias": "all"},
        {"target_modules": ["q_proj"], "layers_to_transform": [1, 2], "layers_pattern": "blocks"},
    ],
    ids=["attn_qv", "all_linear_rslora", "mlp_lora_only_bias", "all_bias", "layers"],
)
def test_an_adapter_saved_by_peft_loads_and_gives_peft_logits(tmp_path, lora_config):
    theirs = peft_saved_adapter(tmp_path / "adapter", **lora_config)
    ours = base_model()
    load_adapter(ours, tmp_path / "adapter")  # every field PEFT writes at its default is accepted
    with torch.no_grad():
        assert torch.allclose(ours(IDX)[0], theirs(IDX)[0], atol=1e-6)


def test_a_peft_feature_switched_on_is_refused_by_name_and_newer_fields_only_when_on(tmp_path):
    peft_saved_adapter(tmp_path / "pattern", target_modules=["q_proj", "v_proj"], rank_pattern={"q_proj": 4})
    with pytest.raises(
        AdapterError, match=r"rank_pattern=\{'q_proj': 4\} is a PEFT feature minituner does not support"
    ):
        load_adapter(base_model(), tmp_path / "pattern")
    peft_saved_adapter(tmp_path / "newer", target_modules=["q_proj", "v_proj"])
    config_path = tmp_path / "newer" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps(config | {"future_feature": None, "future_switch": False}))
    load_adapter(base_model(), tmp_path / "newer")  # a newer PEFT's fields, off
    config_path.write_text(json.dumps(config | {"future_feature": {"mode": "on"}}))
    with pytest.raises(AdapterError, match=r"unknown field 'future_feature'=\{'mode': 'on'\} \(a newer PEFT's feature"):
        load_adapter(base_model(), tmp_path / "newer")
