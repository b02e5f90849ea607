"""Checks of a composed config, run before any tensor is built.

Every problem found is collected, then reported together in one ``ConfigError`` whose lines
each name the key, the value found and what is allowed.
"""

from __future__ import annotations

import importlib.util

import torch
from omegaconf import DictConfig, OmegaConf

from minituner.config.checks import integer_problems, is_number
from minituner.config.destinations import destination_problems
from minituner.config.errors import ConfigError
from minituner.config.hardware import trainer_problems
from minituner.config.nodes import lora_config, model_config, model_shape_fields
from minituner.config.schema import unknown_key_problems
from minituner.config.shipped import CONF_DIR, load_regime
from minituner.data.datamodules import DATAMODULES
from minituner.data.instructions import DataFileError, read_records, split_records
from minituner.lora.inject import LoRAConfig, select_targets
from minituner.lora.residual_init import RESIDUAL_INITS
from minituner.memory.shapes import block_linears
from minituner.model.minigpt import MiniGPT, MiniGPTConfig
from minituner.model.precision import BASE_DTYPES
from minituner.quant.codecs import NF4_BLOCK
from minituner.quant.linear import BLOCK_SIZES, BLOCKED_SCHEMES, SCHEMES

TRAINABLE = ("all", "lora")


def model_problems(model: DictConfig) -> list[str]:
    """Problems with the ``model`` node: its shape and ``activation_checkpointing`` (``name`` is a label only)."""
    problems = MiniGPTConfig.problems(model_shape_fields(model), prefix="model.")
    checkpointing = model.get("activation_checkpointing", False)
    if not isinstance(checkpointing, bool):
        problems.append(f"model.activation_checkpointing={checkpointing!r} is not allowed: must be true or false")
    return problems


def regime_problems(regime: DictConfig) -> list[str]:
    """Problems with the ``regime`` node."""
    problems = integer_problems(regime, "batch_size")
    for key in ("max_steps", "max_epochs"):
        problems += integer_problems(regime, key, allow_minus_one=True)
    problems = [f"regime.{p}" for p in problems]
    if regime.get("max_steps") == -1 and regime.get("max_epochs") == -1:
        problems.append("regime.max_steps and regime.max_epochs are both -1: set at least one")
    lr = OmegaConf.select(regime, "optimizer.lr")
    if not is_number(lr) or lr <= 0:
        problems.append(f"regime.optimizer.lr={lr!r} is not allowed: must be a number > 0")
    if regime.get("data_stage") not in DATAMODULES:
        problems.append(
            f"regime.data_stage={regime.get('data_stage')!r} is not allowed: must be one of {sorted(DATAMODULES)}"
        )
    if regime.get("trainable") not in TRAINABLE:
        problems.append(
            f"regime.trainable={regime.get('trainable')!r} is not allowed: must be one of {list(TRAINABLE)}"
        )
    return problems + replay_problems(regime)


def replay_problems(regime: DictConfig) -> list[str]:
    """Problems with ``regime.replay`` (self-replay of the base's own sentences), when the regime has one."""
    replay = regime.get("replay")
    if replay is None:
        return []
    problems = [
        f"regime.replay.{p}" for key in ("batch_size", "sentences", "max_len") for p in integer_problems(replay, key)
    ]
    if not is_number(replay.get("weight")) or replay.weight < 0:
        problems.append(f"regime.replay.weight={replay.get('weight')!r} is not allowed: must be a number >= 0 (0: off)")
    if not is_number(replay.get("temperature")) or replay.temperature <= 0:
        problems.append(f"regime.replay.temperature={replay.get('temperature')!r} is not allowed: must be a number > 0")
    if not problems and replay.weight and regime.get("trainable") != "lora":
        problems.append(
            f"regime.replay.weight={replay.weight} needs regime.trainable='lora': the base that "
            "writes the sentences must stay frozen"
        )
    return problems


def lora_problems(cfg: DictConfig) -> list[str]:
    """Problems with the ``lora`` node, targets checked against a weightless (meta) model."""
    if cfg.regime.get("trainable") != "lora":
        return []
    if cfg.get("lora") is None:
        return ["regime.trainable='lora' needs a `lora` node: use regime=lora"]
    config = lora_config(cfg)
    problems = config.problems()
    if not problems and not model_problems(cfg.model):
        with torch.device("meta"):
            model = MiniGPT(model_config(cfg))
        try:
            names = select_targets(model, config)
        except ValueError as error:
            return [str(error)]
        problems += residual_init_problems(cfg, config, {n: model.get_submodule(n).weight.shape for n in names})
    return problems


def residual_init_problems(cfg: DictConfig, config: LoRAConfig, shapes: dict[str, torch.Size]) -> list[str]:
    """PiSSA, OLoRA and LoftQ take r directions of every adapted weight; LoftQ fits a quantized base."""
    if config.init not in RESIDUAL_INITS:
        return []
    problems = []
    if config.init == "loftq" and OmegaConf.select(cfg, "quant.scheme") == "none":
        problems.append(
            "lora.init='loftq' with quant.scheme='none' is not allowed: LoftQ fits the adapter to a quantized "
            "base's rounding error; set quant (e.g. quant=nf4_dq) or use lora.init=pissa"
        )
    narrow = [n for n, s in shapes.items() if config.r > min(s)]
    if narrow:
        smallest = min(min(shapes[n]) for n in narrow)
        problems.append(
            f"lora.r={config.r} with lora.init={config.init!r} is not allowed: it takes r directions of each "
            f"adapted weight, and {len(narrow)} adapted weights (e.g. {narrow[0]}, "
            f"{'x'.join(map(str, shapes[narrow[0]]))}) have rank at most {smallest}; lower lora.r"
        )
    return problems


def data_problems(cfg: DictConfig) -> list[str]:
    """Problems with instruction data (``data=jsonl``): its settings, then every record of its file."""
    if "path" not in list(cfg.data):  # (`in` on the node is False for an unset ??? value)
        return []
    problems = []
    if OmegaConf.is_missing(cfg.data, "path"):
        problems.append("data.path is not set: give the JSON-lines file, e.g. data.path=my_data.jsonl")
    fraction = cfg.data.get("val_fraction")
    if not isinstance(fraction, float | int) or isinstance(fraction, bool) or not 0 < fraction < 1:
        problems.append(f"data.val_fraction={fraction!r} is not allowed: must be a number in (0, 1)")
    labels = cfg.data.get("labels")
    if labels is not None and (
        not OmegaConf.is_list(labels) or len(set(labels)) < 2 or not all(isinstance(x, str) and x for x in labels)
    ):
        problems.append(
            f"data.labels={labels!r} is not allowed: must be null or a list of 2+ distinct non-empty strings"
        )
    if problems or model_problems(cfg.model) or not cfg.regime.get("needs_base"):
        return problems  # records are read for fine-tuning only, against a valid context length
    try:
        records = read_records(cfg.data.path, cfg.model.block_size, labels and list(labels))
        split_records(records, fraction, cfg.data.split_seed)
    except DataFileError as error:
        problems += error.problems
    return problems


def quant_scheme_problems(cfg: DictConfig) -> list[str]:
    """``quant.scheme`` must be ``none`` or a scheme minituner implements, ``quant.block_size`` one it offers."""
    scheme = OmegaConf.select(cfg, "quant.scheme")
    if scheme not in ("none", *SCHEMES):
        return [f"quant.scheme={scheme!r} is not allowed: must be one of {['none', *SCHEMES]}"]
    block = OmegaConf.select(cfg, "quant.block_size", default=NF4_BLOCK)
    if block not in BLOCK_SIZES or isinstance(block, bool):
        return [f"quant.block_size={block!r} is not allowed: must be one of {list(BLOCK_SIZES)}"]
    return []


def block_fit_problems(cfg: DictConfig) -> list[str]:
    """Every quantized linear must split into whole blocks of ``quant.block_size`` values (NF4, int4)."""
    scheme, block = cfg.quant.scheme, OmegaConf.select(cfg, "quant.block_size", default=NF4_BLOCK)
    if scheme not in BLOCKED_SCHEMES or quant_scheme_problems(cfg) or model_problems(cfg.model):
        return []
    shape = model_config(cfg)
    small = sorted({f"{o}x{i}" for o, i in block_linears(shape).values() if (o * i) % block})
    if not small:
        return []
    return [
        f"quant.block_size={block} does not divide the linears {small} of model={cfg.model.get('name')!r} "
        f"(each must hold whole blocks): choose a block size dividing their sizes, from {list(BLOCK_SIZES)}"
    ]


def quant_problems(cfg: DictConfig) -> list[str]:
    """The ``quant`` node: a known scheme, and a quantized base only under adapters (it is frozen)."""
    scheme = OmegaConf.select(cfg, "quant.scheme")
    if scheme != "none" and not quant_scheme_problems(cfg) and cfg.regime.get("trainable") != "lora":
        return [
            f"quant.scheme={scheme!r} with regime={cfg.regime.get('name')!r} is not allowed: a quantized "
            "base is frozen, so only adapters can train; use regime=lora (QLoRA) or quant=none"
        ]
    return quant_scheme_problems(cfg) + block_fit_problems(cfg)


def base_recipe_problems(cfg: DictConfig) -> list[str]:
    """``base.recipe`` must name a shipped regime that trains from scratch."""
    recipe = OmegaConf.select(cfg, "base.recipe")
    options = sorted(p.stem for p in (CONF_DIR / "regime").glob("*.yaml"))
    from_scratch = [name for name in options if load_regime(name).get("needs_base") is False]
    if recipe not in from_scratch:
        return [f"base.recipe={recipe!r} is not allowed: must be one of {from_scratch} (regimes that pretrain a base)"]
    return []


def base_dtype_problems(cfg: DictConfig) -> list[str]:
    """``base.dtype`` must be a known dtype; a half-precision base is for LoRA with frozen biases."""
    dtype = OmegaConf.select(cfg, "base.dtype")
    if dtype not in BASE_DTYPES:
        return [f"base.dtype={dtype!r} is not allowed: must be one of {list(BASE_DTYPES)}"]
    if dtype == "float32":
        return []
    if cfg.regime.get("trainable") != "lora":
        return [
            f"base.dtype={dtype!r} with regime={cfg.regime.get('name')!r} is not allowed: a half-precision "
            "base is frozen, so only adapters can train; use regime=lora or base.dtype=float32"
        ]
    precision = str(OmegaConf.select(cfg, "trainer.precision"))
    if dtype == "float16" and precision.startswith("bf16"):
        return [
            f"base.dtype='float16' with trainer.precision={precision!r} is not allowed: bf16 autocast cannot run "
            "an fp16 base; use base.dtype=bfloat16 (or trainer.precision=32-true)"
        ]
    bias = OmegaConf.select(cfg, "lora.bias")
    if bias != "none":
        return [
            f"lora.bias={bias!r} with base.dtype={dtype!r} is not allowed: the biases would train in "
            f"{dtype}; use lora.bias=none or base.dtype=float32"
        ]
    return []


INSPECT_SPLITS = ("train", "val", "test")


def inspection_problems(cfg: DictConfig) -> list[str]:
    """Problems of a ``minituner-data`` config: its ``inspect`` keys, the model shape, the data (file)."""
    problems = unknown_key_problems(cfg)
    if problems:
        return problems
    problems += integer_problems(cfg, "inspect.examples")
    split = OmegaConf.select(cfg, "inspect.split")
    if split not in INSPECT_SPLITS:
        problems.append(f"inspect.split={split!r} is not allowed: must be one of {list(INSPECT_SPLITS)}")
    problems += model_problems(cfg.model) + regime_problems(cfg.regime)
    return problems + data_problems(cfg)


# a logger's target name -> (the module it needs, the minituner extra that installs it)
LOGGER_PACKAGES = {
    "MLFlowLogger": ("mlflow", "mlflow"),
    "local_mlflow_logger": ("mlflow", "mlflow"),
    "WandbLogger": ("wandb", "wandb"),
}


def logger_problems(cfg: DictConfig) -> list[str]:
    """A logger whose package is not installed (``logger=mlflow`` / ``wandb`` are optional extras)."""
    problems = []
    for name, node in (cfg.get("logger") or {}).items():
        target = str(OmegaConf.select(node, "_target_", default="")).rsplit(".", 1)[-1]
        if target in LOGGER_PACKAGES and importlib.util.find_spec(LOGGER_PACKAGES[target][0]) is None:
            module, extra = LOGGER_PACKAGES[target]
            problems.append(
                f"logger.{name} needs the {module} package, which is not installed: "
                f"pip install 'minituner[{extra}]' (or drop it: logger=tensorboard)"
            )
    return problems


def validate_config(cfg: DictConfig) -> None:
    """Raise one ``ConfigError`` listing every problem of ``cfg``; return if there is none."""
    unknown = unknown_key_problems(cfg)
    if unknown:  # the checks below build typed objects from the nodes: they need known keys
        raise ConfigError(unknown)
    problems = model_problems(cfg.model) + regime_problems(cfg.regime) + lora_problems(cfg)
    problems += data_problems(cfg) + base_recipe_problems(cfg) + quant_problems(cfg)
    problems += base_dtype_problems(cfg) + logger_problems(cfg)
    problems += integer_problems(cfg, "seed", minimum=0) + integer_problems(cfg, "base.seed", minimum=0)
    problems += integer_problems(cfg, "data.eval_batch_size")
    problems += trainer_problems(cfg.trainer)
    if not problems:  # paths last: they are checked against the config the checks above accepted
        problems += destination_problems(cfg)
    if problems:
        raise ConfigError(problems)
