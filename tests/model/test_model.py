import pytest
import torch

from minituner.model.minigpt import IGNORE_INDEX, MiniGPT, MiniGPTConfig, count_parameters


def test_default_preset_parameter_count_matches_hand_computation():
    # Per block: 4 attention linears 4*(64*64 + 64) = 16640; fc_in 64*256 + 256 = 16640;
    # fc_out 256*64 + 64 = 16448; two LayerNorms 2*(64 + 64) = 256  -> 49984.
    # 4 blocks = 199936; token embedding 259*64 = 16576; positions 64*64 = 4096;
    # final LayerNorm 128; the LM head is tied to the token embedding (0 extra).
    hand = 4 * (16640 + 16640 + 16448 + 256) + 16576 + 4096 + 128
    assert hand == 220736
    model = MiniGPT(MiniGPTConfig())
    assert model.num_parameters() == hand
    assert count_parameters(MiniGPTConfig()) == hand


@pytest.mark.parametrize(
    "config",
    [
        MiniGPTConfig(bias=False),
        MiniGPTConfig(n_layer=2, n_head=2, d_model=32, d_ff=64, block_size=16),
        MiniGPTConfig(n_layer=1, n_head=1, d_model=8, d_ff=8, vocab_size=300),
        MiniGPTConfig(mlp="swiglu", norm="rmsnorm", n_kv_head=2, bias=False, tie_embeddings=False),
        MiniGPTConfig(mlp="swiglu", n_kv_head=1),
    ],
)
def test_count_formula_agrees_with_instantiated_models(config):
    assert count_parameters(config) == MiniGPT(config).num_parameters()


def test_embedding_and_lm_head_are_one_tensor():
    model = MiniGPT(MiniGPTConfig())
    assert model.lm_head.weight is model.tok_emb.weight
    assert model.lm_head.bias is None
    assert model.blocks[0].attn.q_proj.bias is not None


def test_forward_shapes_and_loss_ignores_padding():
    torch.manual_seed(0)
    model = MiniGPT(MiniGPTConfig())
    idx = torch.randint(0, 256, (2, 10))
    logits, loss = model(idx)
    assert logits.shape == (2, 10, 259) and loss is None
    targets = torch.randint(0, 256, (2, 10))
    _, full = model(idx, targets)
    padded = targets.clone()
    padded[:, 5:] = IGNORE_INDEX
    _, partial = model(idx, padded)
    expected = torch.nn.functional.cross_entropy(logits[:, :5].reshape(-1, 259), targets[:, :5].reshape(-1))
    assert torch.allclose(partial, expected, atol=1e-6)
    assert not torch.allclose(full, partial)


def test_attention_is_causal():
    torch.manual_seed(0)
    model = MiniGPT(MiniGPTConfig()).eval()
    idx = torch.randint(0, 256, (1, 12))
    changed = idx.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 256
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.allclose(a[0, :8], b[0, :8], atol=1e-6)
    assert not torch.allclose(a[0, 8:], b[0, 8:])


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"model.n_head=3 does not divide model.d_model=64"):
        MiniGPT(MiniGPTConfig(n_head=3))
    with pytest.raises(ValueError, match=r"model.n_kv_head=3 is not allowed: must divide model.n_head=4"):
        MiniGPT(MiniGPTConfig(n_kv_head=3))
    with pytest.raises(ValueError, match=r"model.mlp='relu' is not allowed: must be one of \['gelu', 'swiglu'\]"):
        MiniGPT(MiniGPTConfig(mlp="relu"))
    with pytest.raises(ValueError, match="exceeds model.block_size=64"):
        MiniGPT(MiniGPTConfig())(torch.zeros(1, 65, dtype=torch.long))


def test_unfused_projection_names():
    names = {n for n, _ in MiniGPT(MiniGPTConfig()).named_modules()}
    for leaf in ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "mlp.fc_in", "mlp.fc_out"):
        assert f"blocks.0.{leaf}" in names


def test_llama_shaped_blocks_have_llamas_modules_and_a_gpt_shaped_dict_is_unchanged():
    config = MiniGPTConfig(mlp="swiglu", norm="rmsnorm", n_kv_head=2, bias=False, tie_embeddings=False)
    model = MiniGPT(config)
    block = model.blocks[0]
    assert {"gate_proj", "up_proj", "down_proj"} <= {n for n, _ in block.mlp.named_children()}
    assert isinstance(block.ln_1, torch.nn.RMSNorm) and block.attn.k_proj.out_features == 2 * 16
    assert model.lm_head.weight is not model.tok_emb.weight
    assert set(config.to_dict()) > set(MiniGPTConfig().to_dict())
    assert "mlp" not in MiniGPTConfig().to_dict()  # the base cache keys of GPT-shaped bases stay what they were
    idx = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(0))
    logits, loss = model(idx, idx)
    assert logits.shape == (2, 9, 259) and torch.isfinite(loss)


def test_grouped_query_attention_equals_repeated_key_value_heads():
    """One key/value head per two query heads is the same as each head repeated: the kernel's meaning."""
    torch.manual_seed(0)
    grouped = MiniGPT(MiniGPTConfig(n_kv_head=2)).eval()
    full = MiniGPT(MiniGPTConfig()).eval()
    attn, dense = grouped.blocks[0].attn, full.blocks[0].attn
    with torch.no_grad():
        for proj in ("q_proj", "o_proj"):
            getattr(dense, proj).load_state_dict(getattr(attn, proj).state_dict())
        for proj in ("k_proj", "v_proj"):  # (2 heads x 16) -> (4 heads x 16), each head twice
            source = getattr(attn, proj)
            getattr(dense, proj).weight.copy_(source.weight.view(2, 16, 64).repeat_interleave(2, 0).reshape(64, 64))
            getattr(dense, proj).bias.copy_(source.bias.view(2, 16).repeat_interleave(2, 0).reshape(64))
    x = torch.randn(2, 7, 64)
    torch.testing.assert_close(attn(x), dense(x))
