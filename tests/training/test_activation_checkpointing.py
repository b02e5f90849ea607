"""``model.activation_checkpointing``: the same training, bit for bit on the CPU, with less saved for backward."""

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from minituner.config.validation import ConfigError, validate_config
from minituner.training.pipeline import train
from tests.helpers import QUICK, compose_config, save_tiny_base


def test_a_checkpointed_run_trains_the_same_adapter_and_measures_what_it_predicts(tmp_path):
    base = save_tiny_base(tmp_path / "base", dropout=0.1)  # dropout: the recomputed masks must repeat
    common = [*QUICK, "regime=lora", f"base.path={base}", "model.dropout=0.1", "lora.target_modules=all_linear"]
    runs = {}
    for checkpointing in ("false", "true"):
        cfg = compose_config([*common, f"model.activation_checkpointing={checkpointing}"], tmp_path, checkpointing)
        train(cfg)
        run_dir = Path(cfg.paths.output_dir)
        runs[checkpointing] = (
            load_file(run_dir / "adapter" / "adapter_model.safetensors"),
            json.loads((run_dir / "memory.json").read_text())["activations"],
        )
    (plain, plain_memory), (checkpointed, checkpointed_memory) = runs["false"], runs["true"]
    assert plain.keys() == checkpointed.keys() and all((plain[k] == checkpointed[k]).all() for k in plain)
    for memory in (plain_memory, checkpointed_memory):
        assert memory["predicted_bytes"] == memory["measured_bytes"] and memory["equal"]
    assert checkpointed_memory["measured_bytes"] < plain_memory["measured_bytes"]


def test_a_non_boolean_checkpointing_switch_is_refused_before_any_work(make_cfg):
    with pytest.raises(ConfigError, match="model.activation_checkpointing='yes' is not allowed: must be true or false"):
        validate_config(make_cfg("model.activation_checkpointing=yes"))
