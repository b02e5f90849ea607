"""LoRALinear, injection and merge: the invariants."""

import json
import math

import pytest
import torch
from torch import nn

from minituner.lora.adapter_io import save_adapter
from minituner.lora.inject import LoRAConfig, inject_lora, select_targets
from minituner.lora.layer import (
    LoRALinear,
    adapter_parameters,
    merge_adapters,
    set_adapters_enabled,
    unmerge_adapters,
)
from minituner.lora.merge import merged_copy
from minituner.model.minigpt import MiniGPT, MiniGPTConfig


def base_model(seed: int = 0) -> MiniGPT:
    torch.manual_seed(seed)
    return MiniGPT(MiniGPTConfig()).eval()


def adapted(config: LoRAConfig | None = None, seed: int = 0) -> MiniGPT:
    model = base_model(seed)
    inject_lora(model, config or LoRAConfig())
    return model


def randomize_adapters(model: nn.Module, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in adapter_parameters(model).values():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05)


IDX = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))


def test_adapted_model_equals_base_exactly_at_init():
    base = base_model()
    model = adapted()
    assert torch.equal(base(IDX)[0], model(IDX)[0])


def test_init_is_kaiming_a_and_zero_b_with_alpha_over_r_scaling():
    layer = LoRALinear(nn.Linear(64, 32), r=8, alpha=16)
    assert torch.count_nonzero(layer.lora_B.weight) == 0
    bound = 1 / math.sqrt(64)  # kaiming_uniform with a=sqrt(5) on fan_in 64
    assert layer.lora_A.weight.abs().max() <= bound and layer.lora_A.weight.std() > bound / 3
    assert layer.scaling == 2.0
    assert LoRALinear(nn.Linear(64, 32), r=16, alpha=16, use_rslora=True).scaling == 4.0


def test_gaussian_init_draws_a_with_std_one_over_r_and_starts_at_the_base(tmp_path):
    layer = LoRALinear(nn.Linear(256, 256), r=4, alpha=8, gaussian_init=True)
    assert torch.count_nonzero(layer.lora_B.weight) == 0
    assert abs(layer.lora_A.weight.std().item() - 1 / 4) < 0.01  # 1024 draws: the std's sd is ~0.0055
    model = adapted(LoRAConfig(init="gaussian"))
    assert torch.equal(base_model()(IDX)[0], model(IDX)[0])
    save_adapter(model, tmp_path / "a", LoRAConfig(init="gaussian"), "base", "ab" * 32)
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["init_lora_weights"] == "gaussian"


@pytest.mark.parametrize(
    "config,expected",
    [
        # all_linear, r=8: per block 4*8*(64+64) + 8*(64+256) + 8*(256+64) = 9216; 4 blocks
        (LoRAConfig(), 36864),
        (LoRAConfig(target_modules="attn_qv"), 4 * 2 * 8 * (64 + 64)),
        (LoRAConfig(target_modules="mlp", r=4), 4 * 2 * 4 * (64 + 256)),
        (LoRAConfig(target_modules=["q_proj"], layers_to_transform=[0, 3]), 2 * 8 * 128),
        (LoRAConfig(target_modules="attn", bias="lora_only"), 4 * 4 * (8 * 128 + 64)),
    ],
)
def test_trainable_parameter_counts(config, expected):
    model = adapted(config)
    assert model.num_parameters(trainable_only=True) == expected


def test_bias_all_trains_every_bias():
    model = adapted(LoRAConfig(target_modules="attn_qv", bias="all"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n, _ in model.named_parameters() if n.endswith(".bias")} <= trainable
    assert "blocks.0.attn.k_proj.weight" not in trainable


def test_only_adapter_parameters_change_after_optimizer_steps():
    model = adapted(LoRAConfig(dropout=0.1)).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        _, loss = model(IDX, IDX)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    adapters = set(adapter_parameters(model))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= adapters
    assert any("lora_B" in n for n in changed)


def test_targets_by_exact_name_suffix_regex_preset_and_layers():
    model = base_model()

    def chosen(**kwargs):
        return select_targets(model, LoRAConfig(**kwargs))

    assert chosen(target_modules=["blocks.1.mlp.fc_in"]) == ["blocks.1.mlp.fc_in"]
    assert chosen(target_modules=["v_proj"]) == [f"blocks.{i}.attn.v_proj" for i in range(4)]
    assert chosen(target_modules=r"blocks\.[02]\.attn\.(q|k)_proj") == [
        "blocks.0.attn.q_proj",
        "blocks.0.attn.k_proj",
        "blocks.2.attn.q_proj",
        "blocks.2.attn.k_proj",
    ]
    assert len(chosen(target_modules="all_linear")) == 24
    assert chosen(target_modules="attn_qv", layers_to_transform=[3]) == [
        "blocks.3.attn.q_proj",
        "blocks.3.attn.v_proj",
    ]


def test_target_that_matches_nothing_lists_the_modules():
    with pytest.raises(ValueError, match=r"lora.target_modules=\['query'\].*matches no module.*blocks.0.attn.q_proj"):
        select_targets(base_model(), LoRAConfig(target_modules=["query"]))
    with pytest.raises(ValueError, match="'blocks.0.ln_1', a LayerNorm, which is not a linear layer"):
        select_targets(base_model(), LoRAConfig(target_modules=["ln_1"]))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"r": 0}, r"lora.r=0 is not allowed: must be a positive integer"),
        ({"alpha": -1}, r"lora.alpha=-1 is not allowed: must be a number > 0"),
        ({"dropout": 1.0}, r"lora.dropout=1.0 is not allowed: must be in \[0, 1\)"),
        ({"bias": "some"}, r"lora.bias='some' is not allowed"),
        ({"target_modules": "(["}, r"is not a valid regex"),
        ({"init": "corda"}, r"lora.init='corda' is not allowed: must be one of \['default', 'gaussian', 'pissa'"),
        ({"dora": 1}, r"lora.dora=1 is not allowed: must be true or false"),
    ],
)
def test_bad_lora_values_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        inject_lora(base_model(), LoRAConfig(**kwargs))


def test_same_seed_same_adapter_whatever_the_global_rng():
    torch.manual_seed(123)
    a = adapter_parameters(adapted(LoRAConfig(seed=7)))
    torch.manual_seed(456)
    b = adapter_parameters(adapted(LoRAConfig(seed=7)))
    c = adapter_parameters(adapted(LoRAConfig(seed=8)))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_merge_equals_unmerged_and_is_idempotent_and_reversible():
    model = adapted()
    randomize_adapters(model)
    base_weights = {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer" in n}
    unmerged = model(IDX)[0]
    merge_adapters(model)
    merged_once = model(IDX)[0]
    assert torch.allclose(merged_once, unmerged, atol=1e-5)
    once = {n: p.detach().clone() for n, p in model.named_parameters()}
    merge_adapters(model)
    assert all(torch.equal(p, once[n]) for n, p in model.named_parameters())
    unmerge_adapters(model)
    unmerge_adapters(model)
    for name, weight in base_weights.items():
        assert torch.allclose(dict(model.named_parameters())[name], weight, atol=1e-6)
    assert torch.allclose(model(IDX)[0], unmerged, atol=1e-5)


def test_merged_copy_is_a_plain_minigpt_with_the_same_outputs():
    model = adapted()
    randomize_adapters(model)
    plain = merged_copy(model)
    assert not any(isinstance(m, LoRALinear) for m in plain.modules())
    assert set(plain.state_dict()) == set(base_model().state_dict())
    assert torch.allclose(plain(IDX)[0], model(IDX)[0], atol=1e-5)


def test_merge_refuses_a_nan_adapter_and_leaves_the_base_alone():
    model = adapted()
    layer = model.blocks[0].attn.q_proj
    weight = layer.base_layer.weight.detach().clone()
    with torch.no_grad():
        layer.lora_B.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        layer.merge()
    assert torch.equal(layer.base_layer.weight, weight) and not layer.merged


def test_disabled_adapter_gives_the_base_output():
    model = adapted()
    randomize_adapters(model)
    set_adapters_enabled(model, False)
    assert torch.equal(model(IDX)[0], base_model()(IDX)[0])
    set_adapters_enabled(model, True)
    assert not torch.equal(model(IDX)[0], base_model()(IDX)[0])
    merge_adapters(model)
    with pytest.raises(RuntimeError, match="unmerge"):
        set_adapters_enabled(model, False)
