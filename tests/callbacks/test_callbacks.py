"""The experiment callbacks on real runs: NaN guard, memory snapshots and ledger, manifest, dashboards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from minituner.callbacks.nan_guard import NonFiniteError
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from minituner.lora.inject import LoRAConfig, inject_lora
from minituner.memory.ledger import tensor_ledger
from minituner.model.minigpt import MiniGPT, MiniGPTConfig
from minituner.quant.linear import quantize_model
from minituner.store.artifacts import sha256_file
from minituner.store.base_cache import save_base
from minituner.training.module import MiniGPTModule
from minituner.training.pipeline import train
from tests.helpers import QUICK, compose_config

BAD_STEP = 1  # the optimizer step whose loss or gradient turns non-finite


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A saved (untrained) tiny base: these tests need its shape and hash, not its skill."""
    directory = tmp_path_factory.mktemp("base") / "tiny"
    torch.manual_seed(0)
    save_base(MiniGPT(MiniGPTConfig(n_layer=1, n_head=2, d_model=16, d_ff=32)), directory, {})
    return directory


@pytest.fixture(scope="module")
def minigpt_base(tmp_path_factory) -> Path:
    """A saved (untrained) base of the default MiniGPT shape."""
    directory = tmp_path_factory.mktemp("base") / "minigpt"
    torch.manual_seed(0)
    save_base(MiniGPT(MiniGPTConfig()), directory, {})
    return directory


def run_lora(tmp_path: Path, base: Path, *overrides: str, name: str = "run") -> tuple[Path, dict]:
    cfg = compose_config([*QUICK, "regime=lora", f"base.path={base}", *overrides], tmp_path, name)
    return Path(cfg.paths.output_dir), train(cfg)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def poison_loss(monkeypatch) -> None:
    original = MiniGPTModule.training_step

    def training_step(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * float("nan") if self.trainer.global_step == BAD_STEP else loss

    monkeypatch.setattr(MiniGPTModule, "training_step", training_step)


def poison_gradient(monkeypatch) -> None:
    def on_after_backward(self):
        if self.trainer.global_step == BAD_STEP:
            next(p for p in self.parameters() if p.requires_grad).grad[0] = float("inf")

    monkeypatch.setattr(MiniGPTModule, "on_after_backward", on_after_backward, raising=False)


def assert_report_and_last_good_adapter(run_dir: Path, what: str) -> dict:
    report = read_json(run_dir / "nan_report.json")
    assert report["what"] == what and report["step"] == BAD_STEP and report["batch_index"] == BAD_STEP
    assert report["offending_tensors"] and isinstance(report["learning_rate"], float)
    assert report["grad_norms"] or what == "loss"
    weights = run_dir / "last_good_adapter" / "adapter_model.safetensors"
    assert (run_dir / "last_good_adapter" / "adapter_config.json").is_file()
    assert sha256_file(weights) == report["last_good_sha256"]
    assert all(torch.isfinite(t).all() for t in load_file(weights).values())
    return report


@pytest.mark.parametrize("poison", [poison_loss, poison_gradient], ids=["loss", "gradient"])
@pytest.mark.parametrize("policy", ["raise", "skip_step", "stop"])
def test_nan_guard_reports_and_keeps_the_last_good_adapter(tmp_path, tiny_base, monkeypatch, poison, policy):
    poison(monkeypatch)
    overrides = [f"callbacks.nan_guard.policy={policy}", "trainer.gradient_clip_val=null"]
    what = "loss" if poison is poison_loss else "gradients"
    if policy == "raise":
        with pytest.raises(NonFiniteError, match=f"non-finite {what} at step {BAD_STEP}"):
            run_lora(tmp_path, tiny_base, *overrides)
        run_dir = tmp_path / "run"
        assert read_json(run_dir / "manifest.json")["status"] == "failed"
        assert not (run_dir / "adapter").exists()
    else:
        run_dir, metrics = run_lora(tmp_path, tiny_base, *overrides)
        assert metrics["train_steps"] == (BAD_STEP + 1 if policy == "stop" else 3)
        final = load_file(run_dir / "adapter" / "adapter_model.safetensors")
        assert all(torch.isfinite(t).all() for t in final.values())
    report = assert_report_and_last_good_adapter(run_dir, what)
    assert report["policy"] == policy


def test_skipped_step_leaves_the_weights_alone(tmp_path, tiny_base, monkeypatch):
    """With every step poisoned and skipped, the final adapter is the initial one."""
    original = MiniGPTModule.training_step
    monkeypatch.setattr(MiniGPTModule, "training_step", lambda s, b, i: original(s, b, i) * float("nan"))
    run_dir, _ = run_lora(tmp_path, tiny_base, "callbacks.nan_guard.policy=skip_step")
    final = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    first_good = load_file(run_dir / "last_good_adapter" / "adapter_model.safetensors")
    assert final.keys() == first_good.keys()
    assert all(torch.equal(final[k], first_good[k]) for k in final)


@pytest.mark.parametrize("quant", ["none", "nf4_dq"])
def test_memory_snapshots_and_ledger_match_the_prediction(tmp_path, minigpt_base, quant):
    """The default LoRA and QLoRA configs: measured param/grad/Adam bytes equal the predicted."""
    run_dir, _ = run_lora(tmp_path, minigpt_base, "model=minigpt", f"quant={quant}")
    memory = read_json(run_dir / "memory.json")
    assert list(memory["snapshots"]) == ["after_construction", "after_quantize_and_inject", "after_step_2", "end"]
    for snapshot in memory["snapshots"].values():
        assert snapshot["rss_bytes"] > 0 and snapshot["peak_rss_bytes"] >= snapshot["rss_bytes"]
    assert memory["snapshots"]["after_step_2"]["step"] == 2
    for bucket, row in memory["predicted_vs_measured"].items():
        assert row["predicted"] == row["measured"], bucket
    activations = memory["activations"]
    assert len(activations["batches"]) == 2  # the training batch and the self-replay batch
    assert activations["predicted_bytes"] == activations["measured_bytes"] > 0 and activations["equal"]
    assert sum(activations["by_part"].values()) == activations["predicted_bytes"]
    ledger = memory["snapshots"]["after_step_2"]["ledger"]
    assert ledger["trainable_params"] == 20_480  # MLP targets, r=8
    assert ledger["adam"] == 8 * 20_480 + 4 * 16  # two fp32 moments + a step scalar per A and B
    if quant == "nf4_dq":
        assert set(ledger["quantized_by_scheme"]) == {"nf4_dq"}


def test_ledger_is_the_exact_sum_of_the_tensors():
    torch.manual_seed(0)
    model = MiniGPT(MiniGPTConfig())
    quantize_model(model, "nf4")
    inject_lora(model, LoRAConfig(r=4, target_modules="all_linear", bias="lora_only"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    for _ in range(2):
        _, loss = model(torch.randint(0, 259, (2, 16)), torch.randint(0, 259, (2, 16)))
        loss.backward()
        optimizer.step()
    tensors = [*model.parameters(), *model.buffers()]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [v for state in optimizer.state.values() for v in state.values()]
    assert tensor_ledger(model, optimizer)["total"] == sum(t.numel() * t.element_size() for t in tensors)


def test_manifest_has_every_field_and_the_base_hash(tmp_path, tiny_base):
    run_dir, metrics = run_lora(tmp_path, tiny_base)
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["status"] == "completed"
    assert {"config", "overrides", "seed", "versions", "git", "host", "base", "metrics", "artifacts"} <= manifest.keys()
    assert {"python", "torch", "lightning", "hydra-core", "omegaconf", "torchmetrics"} <= manifest["versions"].keys()
    assert {"commit", "dirty"} <= manifest["git"].keys() and {"cpu", "gpu"} <= manifest["host"].keys()
    assert manifest["base"]["sha256"] == sha256_file(tiny_base / "model.safetensors")
    adapter = manifest["artifacts"]["adapter"]
    assert adapter["sha256"] == sha256_file(Path(adapter["path"]) / "adapter_model.safetensors")
    assert manifest["metrics"]["irregular_acc"] == metrics["irregular_acc"]
    assert manifest["config"]["seed"] == manifest["seed"] == 1234


def test_failed_run_writes_a_failed_manifest(tmp_path, tiny_base, monkeypatch):
    def broken_step(self, batch, batch_idx):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(MiniGPTModule, "training_step", broken_step)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_lora(tmp_path, tiny_base)
    manifest = read_json(tmp_path / "run" / "manifest.json")
    assert manifest["status"] == "failed"
    assert manifest["error"]["type"] == "RuntimeError" and "disk on fire" in manifest["error"]["message"]


def test_tensorboard_has_losses_memory_and_hparams(tmp_path, tiny_base):
    run_dir, _ = run_lora(tmp_path, tiny_base, "trainer.log_every_n_steps=1")
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/loss", "val/irregular_acc", "hparams/irregular_acc"} <= scalars
    assert "memory/rss_mib/after_step_2" in scalars and "memory/ledger_total_mib/end" in scalars
    assert "memory/table/text_summary" in events.Tags()["tensors"]
    assert events.PluginTagToContent("hparams")  # the HPARAMS tab's session data
