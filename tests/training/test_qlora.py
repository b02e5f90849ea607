"""QLoRA = LoRA on a quantized frozen base: composition, exactness, artifacts."""

import pytest
import torch
from hydra.errors import MissingConfigException

from minituner.config.validation import ConfigError, validate_config
from minituner.lora.adapter_io import load_adapter, save_adapter
from minituner.lora.inject import LoRAConfig, inject_lora
from minituner.lora.layer import LoRALinear, adapter_parameters
from minituner.model.minigpt import MiniGPT, MiniGPTConfig
from minituner.quant.linear import QuantizedLinear, quantize_model

IDX = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))


def qlora_model(scheme="nf4_dq", config=None):
    torch.manual_seed(0)
    model = MiniGPT(MiniGPTConfig())
    quantize_model(model, scheme)
    inject_lora(model, config or LoRAConfig(target_modules="all_linear"))
    with torch.no_grad():
        for param in adapter_parameters(model).values():
            param.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    return model


def test_q_proj_is_a_lora_layer_wrapping_a_quantized_layer_and_only_lora_trains():
    model = qlora_model()
    q_proj = model.blocks[0].attn.q_proj
    assert isinstance(q_proj, LoRALinear) and isinstance(q_proj.base_layer, QuantizedLinear)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(adapter_parameters(model))


def test_qlora_equals_lora_on_the_dequantized_base_exactly():
    qlora = qlora_model()
    torch.manual_seed(0)
    dense = MiniGPT(MiniGPTConfig())
    with torch.no_grad():  # the dense twin carries the dequantized weights
        for name, module in qlora.named_modules():
            if isinstance(module, QuantizedLinear):
                dense.get_submodule(name.removesuffix(".base_layer")).weight.copy_(module.dequantized_weight())
    inject_lora(dense, LoRAConfig(target_modules="all_linear"))
    with torch.no_grad():
        for name, param in adapter_parameters(dense).items():
            param.copy_(adapter_parameters(qlora)[name])
    assert torch.equal(qlora(IDX)[0], dense(IDX)[0])


def test_backward_reaches_the_adapters_never_the_base():
    model = qlora_model().train()
    _, loss = model(IDX, IDX)
    loss.backward()
    assert all(p.grad is not None for p in adapter_parameters(model).values())
    assert all(p.grad is None for n, p in model.named_parameters() if n not in adapter_parameters(model))


def test_adapter_trained_on_a_quantized_base_saves_and_loads_in_peft_layout(tmp_path):
    model = qlora_model("nf4")
    config = LoRAConfig(target_modules="all_linear")
    save_adapter(model, tmp_path / "adapter", config, "minigpt-test", "ab" * 32)
    torch.manual_seed(0)
    fresh = MiniGPT(MiniGPTConfig())
    quantize_model(fresh, "nf4")
    load_adapter(fresh, tmp_path / "adapter")
    assert torch.equal(model(IDX)[0], fresh(IDX)[0])


def test_trainable_summary_counts_the_quantized_weights():
    from minituner.lora.inject import trainable_summary

    last = trainable_summary(qlora_model()).splitlines()[-1]
    assert last == "trainable 36,864 of 257,600 parameters (14.31%)"  # as on the fp32 base


@pytest.mark.parametrize("regime", ["full", "pretrain"])
def test_a_quantized_base_with_a_regime_that_trains_it_is_rejected(make_cfg, regime):
    with pytest.raises(ConfigError, match=rf"quant.scheme='nf4_dq' with regime='{regime}' is not allowed"):
        validate_config(make_cfg(f"regime={regime}", "quant=nf4_dq"))


def test_unknown_scheme_lists_the_known_ones(make_cfg):
    with pytest.raises(MissingConfigException) as error:
        make_cfg("quant=fp3")
    assert all(name in str(error.value) for name in ("nf4", "nf4_dq", "int4", "int8", "none"))


def test_experiment_qlora_pins_lora_on_nf4_dq(make_cfg):
    cfg = make_cfg("experiment=qlora")
    assert cfg.regime.name == "lora" and cfg.quant.scheme == "nf4_dq"
    validate_config(cfg)
