"""`minituner-count`: the report the way users run it, and its arithmetic against real models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from minituner.apps.count import markdown_table, regime_fits, regime_rows
from minituner.apps.runner import run_app
from minituner.config.nodes import model_config
from minituner.config.shipped import CONF_DIR
from minituner.lora.inject import LoRAConfig
from minituner.memory.fit import fit_limits
from minituner.memory.footprint import fits, predict
from minituner.model.minigpt import MiniGPT
from tests.helpers import compose_config


def test_count_writes_table_plot_and_report(tmp_path):
    done = run_app("count", f"hydra.run.dir={tmp_path}/count", timeout=120)
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "count" / "count.json").read_text())["rows"]
    assert [r["label"] for r in rows] == ["Full FT", "LoRA r=4", "LoRA r=8", "LoRA r=16", "QLoRA r=8"]
    assert rows[0]["trainable_params"] == 220_736 and rows[2]["trainable_params"] == 4 * 9216  # seed's per-layer 9216
    assert (tmp_path / "count" / "memory_breakdown.png").stat().st_size > 10_000
    report = (tmp_path / "count" / "REPORT.md").read_text()
    assert "What fraction of the parameters does LoRA r=8 train?" in report and "16.70%" in report
    assert "QLoRA r=8" in done.stdout
    for row in rows:  # the activation model's figures beside the rule of thumb, and the fit solver's answers
        assert row["activations_checkpointed"] < row["activations"] and row["rule_of_thumb_activations"] > 0
        assert row["peak_checkpointed"] <= row["peak"]
        assert row["fit"]["max_batch_checkpointed"] >= row["fit"]["max_batch"] > 0
    assert "Will it fit 24 GiB?" in report and "rule of thumb" in report


@pytest.mark.parametrize("preset", ["minigpt", "gpt2_like", "llama2_7b", "llama3_8b", "llama_small"])
def test_preset_counts_equal_the_instantiated_model(tmp_path, preset):
    """Instantiated on the meta device: the real module tree, no memory."""
    shape = model_config(compose_config([f"model={preset}", "regime=full"], tmp_path))
    with torch.device("meta"):
        model = MiniGPT(shape)
    assert predict(shape, "full").trainable_params == model.num_parameters()


@pytest.mark.parametrize(("preset", "llama_parameters"), [("llama2_7b", 6_738_415_616), ("llama3_8b", 8_030_261_248)])
def test_llama_presets_have_the_real_models_parameters_and_fit_only_with_lora(tmp_path, preset, llama_parameters):
    shape = model_config(compose_config([f"model={preset}"], tmp_path))
    full = predict(shape, "full", precision="fp16_mixed")
    positions = shape.block_size * shape.d_model  # MiniGPT's learned position table; Llama has none
    assert full.trainable_params - positions == llama_parameters
    assert full.peak > 80 * 2**30 and not fits(full, 80 * 2**30)
    qlora = predict(shape, "qlora", lora=LoRAConfig(r=8), quant="nf4_dq", precision="fp16_mixed", batch_size=1)
    assert fits(qlora, 24 * 2**30)


def test_the_fit_solver_finds_the_edge_of_the_memory(tmp_path):
    shape = model_config(compose_config(["model=llama2_7b"], tmp_path))
    settings = {"lora": LoRAConfig(r=8), "quant": "nf4_dq", "precision": "bf16_true", "device": "cuda"}
    gib24 = 24 * 2**30
    limits = fit_limits(shape, gib24, batch_size=1, seq_len=2048, **settings)
    largest, checkpointed = limits["max_batch"], limits["max_batch_checkpointed"]
    assert 0 < largest < checkpointed
    assert predict(shape, "x", batch_size=largest, seq_len=2048, **settings).peak <= gib24
    assert predict(shape, "x", batch_size=largest + 1, seq_len=2048, **settings).peak > gib24
    assert limits["max_seq_checkpointed"] == shape.block_size  # a whole context fits at batch 1
    assert fit_limits(shape, 2**30, batch_size=1, seq_len=2048, **settings)["max_batch"] == 0  # weights alone: > 1 GiB


def test_eager_attention_keeps_the_attention_maps(tmp_path):
    shape = model_config(compose_config(["model=llama2_7b"], tmp_path))
    common = {"lora": LoRAConfig(r=8), "precision": "bf16_true", "device": "cuda", "batch_size": 1, "seq_len": 2048}
    sdpa, eager = predict(shape, "x", **common), predict(shape, "x", attention="eager", **common)
    maps = shape.n_layer * shape.n_head * 2048 * 2048 * 2  # one bf16 softmax map per layer and head
    assert eager.activations - sdpa.activations == pytest.approx(maps, rel=0.02)


def test_the_memory_page_s_llama3_table_is_what_the_count_prints(tmp_path):
    """docs/memory.md quotes the count's table for its example command; the arithmetic is the same everywhere."""
    command = "model=llama3_8b count.precision=bf16_true count.batch_size=2 count.seq_len=2048"
    page = (Path(__file__).resolve().parents[2] / "docs" / "memory.md").read_text()
    assert f"`minituner-count {command}`" in " ".join(page.split())
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="count", overrides=[f"paths.outputs_dir={tmp_path}", *command.split()])
    table = markdown_table(regime_rows(model_config(cfg), cfg.count), int(cfg.count.gpu_memory_gib * 2**30))
    assert table in page
    fits = regime_fits(model_config(cfg), cfg.count)  # the page's sentence on the fit solver
    batches = [fits[r][k] for r in ("LoRA r=8", "QLoRA r=8") for k in ("max_batch", "max_batch_checkpointed")]
    assert batches == [0, 2, 1, 4]
    assert "(the longest sequence at batch 2: 1,384 and 4,810 tokens)" in page
    assert (fits["QLoRA r=8"]["max_seq"], fits["QLoRA r=8"]["max_seq_checkpointed"]) == (1384, 4810)
