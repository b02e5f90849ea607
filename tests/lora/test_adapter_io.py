"""Adapter checkpoints: PEFT layout, save/load round trip, and every bad input named."""

import json

import pytest
import torch

from minituner.apps.merge import main as merge_main
from minituner.lora import adapter_io
from minituner.lora.adapter_io import AdapterError, load_adapter, read_adapter, save_adapter
from minituner.lora.inject import LoRAConfig, inject_lora
from minituner.lora.merge import apply_adapter
from minituner.model.minigpt import MiniGPT, MiniGPTConfig
from minituner.store.base_cache import load_base, save_base
from tests.helpers import BASE_SHA, IDX, base_model, trained_adapter


def test_files_and_keys_follow_peft(tmp_path):
    _, directory = trained_adapter(tmp_path)
    # PEFT's two files, plus the marker that makes the directory recognisable as minituner's adapter
    assert sorted(p.name for p in directory.iterdir()) == [
        ".minituner-artifact.json",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    raw = json.loads((directory / "adapter_config.json").read_text())
    assert raw["peft_type"] == "LORA" and raw["r"] == 8 and raw["lora_alpha"] == 16
    assert raw["target_modules"] == ["q_proj", "v_proj"] and raw["bias"] == "none"
    assert raw["revision"] == f"sha256:{BASE_SHA}" and raw["base_model_name_or_path"] == "minigpt-test"
    keys = set(read_adapter(directory).tensors)
    assert "base_model.model.blocks.0.attn.q_proj.lora_A.weight" in keys
    assert len(keys) == 4 * 2 * 2


def test_save_then_load_gives_identical_logits(tmp_path):
    model, directory = trained_adapter(tmp_path)
    fresh = base_model()
    load_adapter(fresh, directory, base_sha256=BASE_SHA)
    assert torch.equal(model(IDX)[0], fresh(IDX)[0])
    injected = base_model()  # already wrapped, e.g. by regime=lora
    inject_lora(injected, LoRAConfig(target_modules="attn_qv", seed=99))
    load_adapter(injected, directory)
    assert torch.equal(model(IDX)[0], injected(IDX)[0])


def test_lora_only_bias_round_trips(tmp_path):
    model, directory = trained_adapter(tmp_path, LoRAConfig(target_modules="attn_qv", bias="lora_only"))
    assert "base_model.model.blocks.0.attn.q_proj.base_layer.bias" in read_adapter(directory).tensors
    fresh = base_model()
    load_adapter(fresh, directory)
    assert torch.equal(model(IDX)[0], fresh(IDX)[0])


def test_another_rank_is_refused(tmp_path):
    _, directory = trained_adapter(tmp_path)
    model = base_model()
    inject_lora(model, LoRAConfig(target_modules="attn_qv", r=4))
    with pytest.raises(AdapterError, match="blocks.0.attn.q_proj: model has r=4, adapter has r=8"):
        load_adapter(model, directory)


def test_another_target_set_is_refused_naming_the_keys(tmp_path):
    _, directory = trained_adapter(tmp_path)
    model = base_model()
    inject_lora(model, LoRAConfig(target_modules=["q_proj", "k_proj"]))
    with pytest.raises(AdapterError, match=r"missing \['base_model.model.blocks.0.attn.k_proj"):
        load_adapter(model, directory)
    with pytest.raises(AdapterError, match=r"would be left unapplied\) \['base_model.model.blocks.0.attn.v_proj"):
        load_adapter(model, directory)


def test_another_base_is_refused_unless_allowed(tmp_path):
    _, directory = trained_adapter(tmp_path)
    with pytest.raises(AdapterError, match=f"trained on base sha256:{BASE_SHA}.*this base is sha256:cd"):
        load_adapter(base_model(), directory, base_sha256="cd" * 32)
    load_adapter(base_model(), directory, base_sha256="cd" * 32, allow_base_mismatch=True)


def test_shape_mismatch_is_named(tmp_path):
    _, directory = trained_adapter(tmp_path)
    torch.manual_seed(0)
    wide = MiniGPT(MiniGPTConfig(d_model=128, n_head=4, d_ff=256))
    with pytest.raises(AdapterError, match=r"q_proj.lora_A.weight: \(8, 64\) vs \(8, 128\)"):
        load_adapter(wide, directory)


def test_missing_truncated_unknown_and_nan_files_are_refused(tmp_path):
    _, directory = trained_adapter(tmp_path)
    weights = directory / "adapter_model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(AdapterError, match="adapter_model.safetensors is truncated or corrupt"):
        read_adapter(directory)
    weights.unlink()
    with pytest.raises(AdapterError, match="has no adapter_model.safetensors"):
        read_adapter(directory)
    weights.write_bytes(good)

    config_path = directory / "adapter_config.json"
    raw = json.loads(config_path.read_text())
    config_path.write_text(json.dumps(raw | {"surprise": 1}))
    with pytest.raises(AdapterError, match="unknown field 'surprise'"):
        read_adapter(directory)
    config_path.write_text(json.dumps(raw | {"fan_in_fan_out": True}))
    with pytest.raises(AdapterError, match="fan_in_fan_out=True is a PEFT feature minituner does not support"):
        read_adapter(directory)
    config_path.write_text(json.dumps(raw | {"use_dora": "yes"}))
    with pytest.raises(AdapterError, match="lora.dora='yes' is not allowed: must be true or false"):
        read_adapter(directory)
    config_path.write_text(json.dumps(raw | {"r": 0}))
    with pytest.raises(AdapterError, match="lora.r=0 is not allowed"):
        read_adapter(directory)
    config_path.write_text("{not json")
    with pytest.raises(AdapterError, match="adapter_config.json is not valid JSON"):
        read_adapter(directory)
    config_path.write_text(json.dumps(raw))

    model, nan_dir = trained_adapter(tmp_path, name="nan")
    with torch.no_grad():
        model.blocks[1].attn.v_proj.lora_B.weight[0, 0] = float("inf")
    save_adapter(model, nan_dir, LoRAConfig(target_modules="attn_qv"), "minigpt-test", BASE_SHA)
    with pytest.raises(AdapterError, match=r"NaN/Inf values in \['base_model.model.blocks.1.attn.v_proj.lora_B"):
        read_adapter(nan_dir)


def test_a_failed_save_keeps_the_previous_adapter(tmp_path, monkeypatch):
    model, directory = trained_adapter(tmp_path)
    before = {p.name: p.read_bytes() for p in directory.iterdir()}

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(adapter_io, "save_file", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_adapter(model, directory, LoRAConfig(target_modules="attn_qv"), "minigpt-test", BASE_SHA)
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no staging left behind


def test_merge_command_writes_a_plain_base_with_the_adapter_folded_in(tmp_path, capsys):
    base = base_model()
    digest = save_base(base, tmp_path / "base", {})
    model, directory = trained_adapter(tmp_path, base_sha=digest)
    assert merge_main([str(directory), str(tmp_path / "merged"), "--base", str(tmp_path / "base")]) == 0
    merged = load_base(tmp_path / "merged")
    assert torch.allclose(merged.model(IDX)[0], model(IDX)[0], atol=1e-5)
    applied, _ = apply_adapter(tmp_path / "base", directory)
    assert torch.equal(applied(IDX)[0], model(IDX)[0])
    # an adapter of another base: a clear error and exit code 2, nothing written
    _, other = trained_adapter(tmp_path, name="other")
    assert merge_main([str(other), str(tmp_path / "bad"), "--base", str(tmp_path / "base")]) == 2
    assert "trained on base sha256:" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
