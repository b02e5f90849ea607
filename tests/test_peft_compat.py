"""PEFT itself loads a minituner adapter onto a plain MiniGPT and gives the same logits."""

import pytest
import torch
from helpers import IDX, base_model, trained_adapter

from minituner.lora.inject import LoRAConfig

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
