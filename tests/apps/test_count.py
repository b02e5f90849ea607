"""`minituner-count`: the report the way users run it, and its arithmetic against real models."""

from __future__ import annotations

import json

import pytest
import torch

from minituner.apps.runner import run_app
from minituner.config.nodes import model_config
from minituner.memory.footprint import predict
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


@pytest.mark.parametrize("preset", ["minigpt", "gpt2_like", "llama7b_like"])
def test_preset_counts_equal_the_instantiated_model(tmp_path, preset):
    """Instantiated on the meta device: the real module tree, no memory."""
    shape = model_config(compose_config([f"model={preset}", "regime=full"], tmp_path))
    with torch.device("meta"):
        model = MiniGPT(shape)
    assert predict(shape, "full").trainable_params == model.num_parameters()


def test_llama7b_like_is_about_seven_billion_and_fits_only_with_lora(tmp_path):
    shape = model_config(compose_config(["model=llama7b_like"], tmp_path))
    full = predict(shape, "full", precision="fp16_mixed")
    assert 6.5e9 < full.trainable_params < 6.8e9
    assert full.total > 24 * 2**30
