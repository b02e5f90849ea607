"""``minituner-generate prompt=... [adapter=<dir>] [overrides]``: what the base and each adapter write.

One column per model (the base, each adapter on it, each merged model with ``merged=true``), one
row per prompt and sample, printed as a table; ``generations.jsonl`` (one object per generation),
``generations.md`` (the table) and ``generate.json`` (tokens per second per model) land in the run
directory, ``outputs/generate/<date>_<time>/``. Every model gets the same random stream for the
same prompt (seeded by ``seed`` and the prompt's index), so sampled columns differ by the model alone.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from minituner.config.errors import ConfigError
from minituner.config.generation import plan_generation
from minituner.config.shipped import CONF_DIR
from minituner.generation.models import comparison_models
from minituner.generation.sampling import generate_batch
from minituner.generation.verb_task import markdown_cell
from minituner.lora.adapter_io import AdapterError
from minituner.model.tokenizer import ByteTokenizer
from minituner.store.artifacts import write_json_atomic, write_text_atomic
from minituner.store.base_cache import BaseCheckpointError, load_base
from minituner.training.terminal import quiet_library_notices

# Keys whose values are free text: given plainly on the command line they are quoted for Hydra's
# grammar (which refuses "it's" or "### Instruction:" unquoted), and a repeated key becomes a list.
TEXT_KEYS = ("prompt", "instruction", "input", "stop")


def hydra_quoted(text: str) -> str:
    """``text`` as a Hydra quoted string that OmegaConf reads back unchanged (no interpolation)."""
    escaped = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, text)  # backslashes before a quote or the end
    return "'" + escaped.replace("'", "\\'").replace("${", "\\${") + "'"


def text_overrides(args: list[str]) -> list[str]:
    """Command-line arguments with plain text values of ``TEXT_KEYS`` quoted, repeated keys as one list.

    A value that starts with ``[`` or a quote is already Hydra syntax and is left as it is, as is ``null``.
    """
    texts: dict[str, list[str]] = {}
    rest = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in TEXT_KEYS and value != "null" and not value.startswith(("[", "'", '"')):
            texts.setdefault(key, []).append(hydra_quoted(value))
        else:
            rest.append(arg)
    for key, values in texts.items():
        rest.append(f"{key}={values[0]}" if len(values) == 1 else f"{key}=[{','.join(values)}]")
    return rest


def prompt_seed(seed: int, index: int) -> int:
    """The seed of prompt ``index``'s random stream (the same for every model)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{index}".encode()).digest()[:8], "little") >> 1


def run_generate(cfg: DictConfig, run_dir: Path) -> dict:
    """Generate from every model for every prompt; write the run directory's files.

    Returns:
        ``{"rows": [...one per generation...], "speed": {model: {...}}, "models": [...]}``.

    Raises:
        ConfigError: The config or a prompt is invalid (before any model is loaded).
        AdapterError / BaseCheckpointError: An adapter does not fit the base, or the base is unusable.
    """
    plan = plan_generation(cfg)
    base = load_base(plan.base_dir)
    models = comparison_models(
        base, plan.adapter_dirs, cfg.quant.scheme, cfg.merged, cfg.allow_base_mismatch, cfg.quant.block_size
    )
    tokenizer = ByteTokenizer()
    encoded = [tokenizer.encode(p, bos=True) for p in plan.prompts]
    rows, speed = [], {}
    for named in models:
        tokens, seconds = 0, 0.0
        for index, (prompt, ids) in enumerate(zip(plan.prompts, encoded, strict=True)):
            generator = torch.Generator().manual_seed(prompt_seed(cfg.seed, index))
            started = time.perf_counter()
            results = generate_batch(named.model, [ids] * cfg.num_samples, plan.settings, generator, cfg.use_kv_cache)
            seconds += time.perf_counter() - started
            for sample, result in enumerate(results):
                tokens += len(result.tokens)
                rows.append(
                    {
                        "prompt": prompt,
                        "sample": sample,
                        "model": named.label,
                        "text": result.text,
                        "tokens": result.tokens,
                        "logprobs": [round(v, 6) for v in result.logprobs],
                        "stop_reason": result.stop_reason,
                        "seed": cfg.seed,
                    }
                )
        speed[named.label] = {
            "new_tokens": tokens,
            "seconds": round(seconds, 4),
            "tokens_per_second": round(tokens / seconds, 1) if seconds else None,
        }
    labels = [m.label for m in models]
    write_text_atomic(run_dir / "generations.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    write_text_atomic(run_dir / "generations.md", markdown_table(rows, labels, speed, cfg))
    summary = {
        "base": {"path": str(base.directory), "sha256": base.weights_sha256, "quant": cfg.quant.scheme},
        "adapters": [str(d) for d in plan.adapter_dirs],
        "models": labels,
        "settings": plan.settings.__dict__,
        "use_kv_cache": cfg.use_kv_cache,
        "seed": cfg.seed,
        "speed": speed,
    }
    write_json_atomic(run_dir / "generate.json", summary)
    return {"rows": rows, "speed": speed, "models": labels}


def _grid(rows: list[dict], labels: list[str]) -> list[tuple[str, int, dict[str, str]]]:
    """(prompt, sample, {model: text}) in prompt order."""
    cells: dict[tuple[str, int], dict[str, str]] = {}
    for row in rows:
        cells.setdefault((row["prompt"], row["sample"]), {})[row["model"]] = row["text"]
    return [(prompt, sample, texts) for (prompt, sample), texts in cells.items()]


def markdown_table(rows: list[dict], labels: list[str], speed: dict, cfg: DictConfig) -> str:
    """The comparison as a Markdown table (``generations.md``), tokens per second in its last row."""
    samples = cfg.num_samples > 1
    head = ["prompt", *(["sample"] if samples else []), *(f"`{label}`" for label in labels)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for prompt, sample, texts in _grid(rows, labels):
        cells = [
            markdown_cell(prompt),
            *([str(sample)] if samples else []),
            *(markdown_cell(texts[label]) for label in labels),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    rates = [f"{speed[label]['tokens_per_second']} tok/s" for label in labels]
    lines.append("| *speed* | " + "| " * samples + " | ".join(rates) + " |")
    mode = "greedy" if cfg.temperature == 0 else f"temperature {cfg.temperature}, top_k {cfg.top_k}, top_p {cfg.top_p}"
    return (
        f"Generated by `minituner-generate` ({mode}, max_new_tokens {cfg.max_new_tokens}, seed {cfg.seed}, "
        f"quant {cfg.quant.scheme}, KV cache {'on' if cfg.use_kv_cache else 'off'}).\n\n" + "\n".join(lines) + "\n"
    )


def print_table(result: dict, cfg: DictConfig) -> None:
    """The comparison on the terminal (rich): a column per model, a row per prompt and sample."""
    labels = result["models"]
    table = Table(title="minituner-generate", show_lines=True)
    table.add_column("prompt", overflow="fold")
    if cfg.num_samples > 1:
        table.add_column("sample", justify="right")
    for label in labels:
        table.add_column(label, overflow="fold")
    for prompt, sample, texts in _grid(result["rows"], labels):
        table.add_row(prompt, *([str(sample)] if cfg.num_samples > 1 else []), *(texts[label] for label in labels))
    table.add_row(
        "tokens/s",
        *([""] if cfg.num_samples > 1 else []),
        *(str(result["speed"][label]["tokens_per_second"]) for label in labels),
    )
    Console(width=max(120, 40 * (len(labels) + 1))).print(table)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="generate")
def _hydra_main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        result = run_generate(cfg, run_dir)
    except (ConfigError, AdapterError, BaseCheckpointError, ValueError) as error:
        print(f"minituner-generate: error: {error}", file=sys.stderr)
        sys.exit(2)
    print_table(result, cfg)
    print(f"generations: {run_dir / 'generations.jsonl'}")


def main() -> None:
    """Console entry point ``minituner-generate``: exit 2 for a bad config, prompt or adapter."""
    sys.argv[1:] = text_overrides(sys.argv[1:])
    quiet_library_notices()
    _hydra_main()


if __name__ == "__main__":
    main()
