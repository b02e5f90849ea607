"""Every config option composes and instantiates; bad configs give one clear error."""

from pathlib import Path

import pytest
import torch
from hydra.errors import MissingConfigException
from hydra.utils import instantiate

from minituner.config.nodes import model_config
from minituner.config.shipped import CONF_DIR
from minituner.config.validation import ConfigError, validate_config
from minituner.model.minigpt import MiniGPT
from minituner.training.pipeline import train

GROUPS = ("model", "data", "regime", "trainer", "logger", "callbacks", "paths", "experiment")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


# options that cannot run on the defaults alone, with what they need
NEEDS = {("data", "jsonl"): ["model=minigpt_long", "data.path=${example_file:sentiment.jsonl}"]}


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_instantiates(make_cfg, group, option):
    cfg = make_cfg(f"{group}={option}", *NEEDS.get((group, option), []))
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"trainer.accelerator='gpu' needs a CUDA GPU and torch sees none"):
            validate_config(cfg)  # refused up front, not by Lightning mid-setup
    else:
        validate_config(cfg)
    with torch.device("meta"):  # the module tree without memory: llama3_8b would need 32 GB
        MiniGPT(model_config(cfg))
    datamodule = instantiate(cfg.data)
    assert datamodule.batch_size == cfg.regime.batch_size
    instantiate(cfg.regime.optimizer)([torch.nn.Parameter(torch.zeros(1))])
    for node in ("logger", "callbacks"):
        for sub in (cfg.get(node) or {}).values():
            instantiate(sub)
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        return  # composes; instantiating needs a GPU
    instantiate(cfg.trainer, logger=False)


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), group


def test_unknown_group_option_names_the_group_value_and_choices(make_cfg):
    with pytest.raises(MissingConfigException) as error:
        make_cfg("model=huge")
    message = str(error.value)
    assert "model/huge" in message and "minigpt" in message and "tiny" in message


@pytest.mark.parametrize(
    "override,expected",
    [
        (
            "model.n_head=3",
            r"model.n_head=3 does not divide model.d_model=64: allowed n_head values are \[1, 2, 4",
        ),
        ("regime.optimizer.lr=0", r"regime.optimizer.lr=0 is not allowed: must be a number > 0"),
        ("regime.optimizer.lr=-1e-3", r"regime.optimizer.lr=-0.001 is not allowed"),
        ("regime.batch_size=0", r"regime.batch_size=0 is not allowed: must be a positive integer"),
        ("regime.batch_size=-4", r"regime.batch_size=-4 is not allowed"),
        ("model.dropout=1.5", r"model.dropout=1.5 is not allowed: must be in \[0, 1\)"),
    ],
)
def test_bad_values_are_reported_with_key_value_and_allowed(make_cfg, override, expected):
    with pytest.raises(ConfigError, match=expected) as error:
        validate_config(make_cfg(override))
    assert len(error.value.problems) == 1


@pytest.mark.parametrize(
    "override,expected",
    [
        ("lora.r=0", r"lora.r=0 is not allowed: must be a positive integer"),
        ("lora.alpha=0", r"lora.alpha=0 is not allowed: must be a number > 0"),
        ("lora.dropout=-0.1", r"lora.dropout=-0.1 is not allowed: must be in \[0, 1\)"),
        ("lora.target_modules=[query]", r"lora.target_modules=\['query'\].*matches no module; the linear modules"),
        ("lora.layers_to_transform=[9]", r"layers_to_transform=\[9\]\) matches no module"),
        ("regime.replay.weight=-1", r"regime.replay.weight=-1 is not allowed: must be a number >= 0 \(0: off\)"),
        ("regime.replay.temperature=0", r"regime.replay.temperature=0 is not allowed: must be a number > 0"),
        ("regime.replay.sentences=0", r"regime.replay.sentences=0 is not allowed: must be a positive integer"),
    ],
)
def test_bad_lora_values_fail_validation(make_cfg, override, expected):
    with pytest.raises(ConfigError, match=expected) as error:
        validate_config(make_cfg("regime=lora", override))
    assert len(error.value.problems) == 1


def test_all_problems_are_reported_together(make_cfg):
    with pytest.raises(ConfigError) as error:
        validate_config(make_cfg("model.n_head=3", "regime.optimizer.lr=0", "regime.batch_size=0"))
    assert len(error.value.problems) == 3


def test_missing_base_with_building_off_fails_before_any_work(make_cfg, tmp_path: Path):
    cfg = make_cfg("model=tiny", "regime=full", "base.build_if_missing=false")
    with pytest.raises(ConfigError, match=r"base.build_if_missing=false but no base checkpoint exists at .*tiny-") as e:
        train(cfg)
    assert len(e.value.problems) == 1
    assert not (tmp_path / "run").exists()
