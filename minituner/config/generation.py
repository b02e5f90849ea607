"""Checks of a ``minituner-generate`` config, run before any model is loaded (exit 2 on a problem).

Besides the keys' values this reads what the command will read: the prompts (``prompt``,
``prompts_file``, or ``instruction``/``input`` formatted with the Alpaca template under
``data=jsonl``), each adapter directory, and the base's stored shape, so a prompt longer than
the base's context or text that is not UTF-8 is refused with its source named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from minituner.config.base_request import base_dir_for
from minituner.config.checks import integer_problems, is_number
from minituner.config.errors import ConfigError
from minituner.config.schema import unknown_key_problems
from minituner.config.validation import quant_scheme_problems
from minituner.data.instructions import DataFileError, format_prompt
from minituner.data.prompt_file import read_prompt_file
from minituner.generation.sampling import SamplingSettings
from minituner.lora.adapter_io import AdapterError, read_adapter
from minituner.model.tokenizer import ByteTokenizer
from minituner.store.base_cache import CONFIG_FILE


@dataclass
class GenerationPlan:
    """What a valid config asks for: the prompts, the adapters, the base and the sampling settings."""

    prompts: list[str]
    adapter_dirs: list[Path]
    base_dir: Path
    settings: SamplingSettings


def _values(cfg: DictConfig, key: str) -> list:
    """The value of a top-level key that takes one item or a list, as a plain list ([] for null)."""
    value = cfg.get(key)
    if value is None:
        return []
    return list(OmegaConf.to_container(value, resolve=True)) if OmegaConf.is_list(value) else [value]


def _texts(cfg: DictConfig, key: str, problems: list[str]) -> list[str]:
    """The strings under ``key`` (one or a list); a value Hydra read as a number or a bool is a problem."""
    texts = []
    for value in _values(cfg, key):
        if not isinstance(value, str):
            problems.append(
                f"{key}={value!r} was read as {type(value).__name__}, not text: quote it, e.g. {key}=\"'{value}'\""
            )
        else:
            texts.append(value)
    return texts


def prompt_texts(cfg: DictConfig, problems: list[str]) -> list[str]:
    """Every prompt the config gives, in order: ``prompt``, ``prompts_file``, then ``instruction``/``input``."""
    prompts = _texts(cfg, "prompt", problems)
    if cfg.get("prompts_file"):
        try:
            prompts += read_prompt_file(Path(str(cfg.prompts_file)))
        except DataFileError as error:
            problems += error.problems
    instructions, inputs = _texts(cfg, "instruction", problems), _texts(cfg, "input", problems)
    if (instructions or inputs) and "path" not in list(cfg.data):
        problems.append(
            "instruction=/input= format an Alpaca prompt for instruction data: add data=jsonl (the "
            "template the run trained on), or give the whole text as prompt="
        )
    elif inputs and not instructions:
        problems.append("input= needs instruction=: the input is a section of an instruction prompt")
    else:
        prompts += [format_prompt(i, x) for i in instructions for x in (inputs or [""])]
    if not prompts and not problems:
        problems.append("no prompt: give prompt=..., prompts_file=... or, with data=jsonl, instruction=...")
    return prompts


def generation_base_dir(cfg: DictConfig, adapter_dirs: list[Path]) -> Path:
    """``base.path``; else the first adapter's base; else the config's own cache entry.

    An adapter's base is the cache entry its ``base_model_name_or_path`` names or, when the cache has
    none, the ``base_dir`` of the run that trained it (``<run>/metrics.json`` beside ``<run>/adapter``).
    """
    if cfg.base.path:
        return Path(str(cfg.base.path))
    if not adapter_dirs:
        return base_dir_for(cfg)
    name = json.loads((adapter_dirs[0] / "adapter_config.json").read_text()).get("base_model_name_or_path")
    cached = None
    if isinstance(name, str) and name and "/" not in name and "\\" not in name and name not in (".", ".."):
        cached = Path(cfg.paths.base_cache_dir) / name
        if (cached / CONFIG_FILE).is_file():
            return cached
    try:
        trained_on = Path(json.loads((adapter_dirs[0].parent / "metrics.json").read_text())["base_dir"])
    except (OSError, ValueError, KeyError, TypeError):
        trained_on = None
    if trained_on is not None and (trained_on / CONFIG_FILE).is_file():
        return trained_on
    return cached or base_dir_for(cfg)


def _block_size(base_dir: Path, problems: list[str]) -> int | None:
    config = base_dir / CONFIG_FILE
    if not config.is_file():
        problems.append(
            f"no base at {base_dir} (no {CONFIG_FILE}): set base.path to a base directory, or build this "
            "one with `minituner-train regime=pretrain` (same model= and base.seed=)"
        )
        return None
    try:
        size = json.loads(config.read_text())["model"]["block_size"]
    except (ValueError, KeyError, TypeError) as error:
        problems.append(f"{config} is not a base config (no model.block_size): {error!r}")
        return None
    return size if isinstance(size, int) else None


def _setting_problems(cfg: DictConfig) -> list[str]:
    problems = integer_problems(cfg, "max_new_tokens") + integer_problems(cfg, "num_samples")
    problems += integer_problems(cfg, "top_k", allow_null=True) + integer_problems(cfg, "seed", minimum=0)
    temperature, top_p = cfg.get("temperature"), cfg.get("top_p")
    if not is_number(temperature) or temperature < 0:
        problems.append(f"temperature={temperature!r} is not allowed: must be a number >= 0 (0: greedy)")
    if not is_number(top_p) or not 0 < top_p <= 1:
        problems.append(f"top_p={top_p!r} is not allowed: must be a number in (0, 1]")
    for key in ("merged", "use_kv_cache", "allow_base_mismatch"):
        if not isinstance(cfg.get(key), bool):
            problems.append(f"{key}={cfg.get(key)!r} is not allowed: must be true or false")
    stops = _values(cfg, "stop")
    if not all(isinstance(s, str) and s for s in stops):
        problems.append(f"stop={cfg.get('stop')!r} is not allowed: must be null, a non-empty string or a list of them")
    problems += quant_scheme_problems(cfg)
    if cfg.get("merged") is True and not cfg.get("adapter"):
        problems.append("merged=true needs adapter=<dir>: there is nothing to merge")
    return problems


def _prompt_problems(prompts: list[str], block_size: int, base_dir: Path) -> list[str]:
    problems = []
    tokenizer = ByteTokenizer()
    for prompt in prompts:
        shown = prompt if len(prompt) <= 60 else prompt[:57] + "..."
        try:
            length = len(tokenizer.encode(prompt, bos=True))
        except UnicodeEncodeError as error:
            code = ord(error.object[error.start])
            # Python keeps bytes of the command line that are not UTF-8 as surrogates U+DC80..U+DCFF
            what = f"byte {code - 0xDC00:#04x}" if 0xDC80 <= code <= 0xDCFF else f"character U+{code:04X}"
            problems.append(
                f"prompt {shown!r}: {what} at position {error.start} is not UTF-8 text, which the byte "
                "tokenizer cannot encode"
            )
            continue
        if length > block_size:
            problems.append(
                f"prompt {shown!r} is {length} tokens with BOS, longer than the context of the base "
                f"{base_dir} (model.block_size={block_size})"
            )
    return problems


def plan_generation(cfg: DictConfig) -> GenerationPlan:
    """Check ``cfg`` and return what it asks for.

    Raises:
        ConfigError: Every problem found (unknown keys first, alone).
    """
    unknown = unknown_key_problems(cfg)
    if unknown:
        raise ConfigError(unknown)
    problems = _setting_problems(cfg)
    prompts = prompt_texts(cfg, problems)
    adapter_dirs = [Path(str(d)) for d in _values(cfg, "adapter")]
    readable = []
    for directory in adapter_dirs:
        try:
            read_adapter(directory)
            readable.append(directory)
        except AdapterError as error:
            problems.append(f"adapter={str(directory)!r}: {error}")
    base_dir = generation_base_dir(cfg, readable)
    block_size = _block_size(base_dir, problems)
    if block_size is not None:
        problems += _prompt_problems(prompts, block_size, base_dir)
    if problems:
        raise ConfigError(problems)
    settings = SamplingSettings(
        max_new_tokens=cfg.max_new_tokens,
        temperature=float(cfg.temperature),
        top_k=cfg.top_k,
        top_p=float(cfg.top_p),
        stop=tuple(_values(cfg, "stop")),
    )
    return GenerationPlan(prompts, adapter_dirs, base_dir, settings)
