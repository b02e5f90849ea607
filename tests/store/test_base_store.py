import pytest
import torch

from minituner.config.base_request import base_dir_for, base_identity
from minituner.model.minigpt import MiniGPT, MiniGPTConfig
from minituner.store.base_cache import BaseCheckpointError, load_base, save_base

TINY = MiniGPTConfig(n_layer=1, n_head=2, d_model=16, d_ff=32)


def saved_base(tmp_path):
    torch.manual_seed(0)
    model = MiniGPT(TINY)
    digest = save_base(model, tmp_path / "base", {"key": "k"})
    return model, digest


def test_save_then_load_gives_the_same_model(tmp_path):
    model, digest = saved_base(tmp_path)
    loaded = load_base(tmp_path / "base", TINY)
    assert loaded.weights_sha256 == digest
    idx = torch.randint(0, 256, (2, 8))
    assert torch.equal(model(idx)[0], loaded.model(idx)[0])
    assert loaded.model.lm_head.weight is loaded.model.tok_emb.weight
    assert [p.name for p in tmp_path.iterdir()] == ["base"]  # no staging directory left


def test_load_names_each_mismatching_model_key(tmp_path):
    saved_base(tmp_path)
    with pytest.raises(ValueError, match=r"model.d_model: base has 16, config asks 32.*model.d_ff"):
        load_base(tmp_path / "base", MiniGPTConfig(n_layer=1, n_head=2, d_model=32, d_ff=64))


def test_load_detects_replaced_weights_and_missing_files(tmp_path):
    saved_base(tmp_path)
    weights = tmp_path / "base" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ValueError, match="model.safetensors has SHA-256 .* corrupt or was replaced"):
        load_base(tmp_path / "base")
    (tmp_path / "base" / "tokenizer.json").unlink()
    with pytest.raises(BaseCheckpointError, match="has no tokenizer.json"):
        load_base(tmp_path / "base")


def test_cache_key_follows_model_data_recipe_and_seed(make_cfg):
    default = base_identity(make_cfg("regime=full")).key()
    assert base_identity(make_cfg("regime=full", "regime.optimizer.lr=0.5")).key() == default  # fine-tune knobs
    assert base_identity(make_cfg("regime=pretrain")).key() == default  # the pretrain run makes this base
    assert base_identity(make_cfg("regime=full", "model.d_ff=128")).key() != default
    assert base_identity(make_cfg("regime=full", "data.corpus.seed=5")).key() != default
    assert base_identity(make_cfg("regime=full", "base.seed=5")).key() != default
    assert base_identity(make_cfg("regime=pretrain", "regime.max_steps=10")).key() != default
    assert base_dir_for(make_cfg("regime=full", "base.path=/somewhere")).as_posix() == "/somewhere"
