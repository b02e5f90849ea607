"""`minituner-preview` the way users run it (tiny shape, few batches): artifacts, caching, figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minituner.apps.runner import run_app
from minituner.apps.ship import preview_config, ship
from minituner.config.base_request import base_dir_for
from minituner.store.artifacts import sha256_file

TINY = [
    "model=tiny",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "preview.batch_size=8",
]


def run_preview(tmp_path: Path, name: str, outputs: str = "outputs", *overrides: str) -> dict:
    done = run_app(
        "preview", f"hydra.run.dir={tmp_path}/{name}", f"paths.outputs_dir={tmp_path}/{outputs}", *TINY, *overrides
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # it talks: every part announced with its time, the training children's lines relayed with their names
    parts = [line for line in done.stdout.splitlines() if line.startswith("> ")]
    assert [p.split(":")[0] for p in parts][1:] == ["> A + B", "> C + D", "> E", "> what QLoRA's adapter writes"]
    assert "meanwhile here F and what the base and LoRA write" in parts[2]
    assert done.stdout.count("  done in ") == len(parts) and "[qlora_run] run directory:" in done.stdout
    # and says nothing twice: no LoRA parameter table per adapter copy, no TensorBoard file notices
    assert "LoRA trainable parameters" not in done.stdout and "Directory watcher" not in done.stdout
    return json.loads((tmp_path / name / "preview.json").read_text()) | {"stdout": done.stdout}


@pytest.mark.slow
def test_preview_runs_end_to_end_and_caches_base_and_reference(tmp_path):
    cold = run_preview(tmp_path, "cold")
    assert (cold["base_source"], cold["reference_source"]) == ("built", "trained")  # nothing ships for this shape
    assert not cold["reference_measurements_cached"]
    assert "] [" in cold["stdout"] and "no base at" in cold["stdout"]  # relayed: the reference run builds the base
    run_dir = tmp_path / "cold"
    report = (run_dir / "REPORT.md").read_text()
    for part in ("## A.", "## B.", "## C.", "## D.", "## E.", "## F.", "at 7B scale", "## What the model writes"):
        assert part in report
    writes = cold["writes"]
    assert set(writes["models"]) == {"base (fp32)", "LoRA (fp32 base)", "QLoRA (NF4 base, part C)"}
    assert writes["prompts"] == 8 * 2 * 25  # every past-simple and participle test sentence of the 8 verbs
    for label, figures in writes["models"].items():
        assert 0 <= figures["generation_acc"] <= 1 and 0 <= figures["logprob_acc"] <= 1
        showcase = writes["showcase"][label]
        assert len(showcase) == 16 and all(c["first_word"] in c["completion"] for c in showcase)
    assert "| prompt | correct |" in report and "generation accuracy" in report
    assert "QuantizedLinear" in cold["composed_module"]["repr"] and "LoRALinear" in cold["composed_module"]["repr"]
    assert cold["parity"]["mean_abs_diff"] > 0 and cold["swap"]["mean_abs_diff"] > 0  # adapters differ
    assert len(cold["qlora_losses"]) == 5  # one epoch of 5 batches, every step logged
    memory = cold["memory"]
    labels = ["LoRA (fp32 base)", "LoRA (float16 base)", "QLoRA (NF4 + float16 base)", "QLoRA (NF4 base)"]
    assert sorted(memory) == sorted(labels)  # preview.json's keys are sorted
    weights = [memory[label]["weights"] for label in labels]
    assert weights[0] > weights[1] > weights[2] and weights[0] > weights[3] > weights[2]
    assert len({row["grads"] for row in memory.values()}) == 1 and len({row["adam"] for row in memory.values()}) == 1
    assert all(row["predicted_equals_measured"] for row in memory.values())
    assert cold["parity"]["relative_diff"] > 0 and len(cold["parity_context"]) == 3
    merging = cold["merging"]
    assert sorted(merging) == ["full_precision", "quantized", "unmerged"]
    assert merging["unmerged"]["mean_abs_diff"] == 0 and merging["unmerged"]["changed_block_share"] == 0
    assert all(
        0 < merging[m]["changed_block_share"] <= 1 and merging[m]["mean_abs_diff"] > 0
        for m in ("quantized", "full_precision")
    )
    assert "| merged into the NF4 weights, re-quantized (PEFT's way) |" in report
    assert cold["scale"]["lora_peak"] - cold["scale"]["qlora_peak"] > 8 * 2**30  # 7B: NF4 saves > 8 GiB
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["base"]["sha256"] == sha256_file(Path(cold["base"]["path"]) / "model.safetensors")
    adapter = manifest["artifacts"]["qlora_adapter"]
    assert adapter["sha256"] == sha256_file(Path(adapter["path"]) / "adapter_model.safetensors")
    assert (run_dir / "qlora_run" / "memory.json").is_file()
    # the 3-step memory runs are read for memory only: no test pass; part C's epoch is tested
    for short_run in ("lora_run", "lora_float16_run", "qlora_float16_run"):
        assert "irregular_acc" not in json.loads((run_dir / short_run / "metrics.json").read_text())
    assert "irregular_acc" in cold["qlora_metrics"]
    assert not (run_dir / "qlora_run" / "nan_report.json").exists()

    warm = run_preview(tmp_path, "warm")
    assert (warm["base_source"], warm["reference_source"]) == ("cached", "cached")
    # F and the reference's completions are functions of the cached base and adapter: read back, not redone
    assert warm["reference_measurements_cached"] and warm["merging"] == cold["merging"]
    assert {k: warm["writes"]["models"][k] for k in ("base (fp32)", "LoRA (fp32 base)")} == {
        k: cold["writes"]["models"][k] for k in ("base (fp32)", "LoRA (fp32 base)")
    }
    assert warm["reference_adapter"] == cold["reference_adapter"]
    assert warm["qlora_adapter"]["sha256"] == cold["qlora_adapter"]["sha256"]  # same seed, same adapter

    # shipped as `make shipped` ships them, a fresh outputs directory installs both instead of training
    cfg = preview_config(tmp_path / "outputs", tuple(TINY))
    ship(cfg, base_dir_for(cfg), Path(cold["reference_adapter"]["path"]).parent, tmp_path / "shipped")
    fresh = run_preview(tmp_path, "fresh", "fresh_outputs", f"paths.shipped_dir={tmp_path}/shipped")
    assert (fresh["base_source"], fresh["reference_source"]) == ("shipped", "shipped")
    assert "no base at" not in fresh["stdout"]  # neither pretrained nor trained
    assert fresh["base"]["sha256"] == cold["base"]["sha256"]
    assert fresh["reference_adapter"]["sha256"] == cold["reference_adapter"]["sha256"]
    assert fresh["parity"] == cold["parity"] and fresh["merging"] == cold["merging"]
    assert fresh["qlora_adapter"]["sha256"] == cold["qlora_adapter"]["sha256"]
