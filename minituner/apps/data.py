"""``minituner-data [overrides]``: look at the data before training on it.

Prints the first ``inspect.examples`` examples of a split exactly as training tokenizes them
(BOS, the given prompt whose targets are ignored, the trained part, EOS), each split's size and
token lengths against the model's context, and its longest example; writes the same to
``data.json`` in its run directory (``outputs/data/<date>_<time>/``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table
from rich.text import Text

from minituner.config.errors import ConfigError
from minituner.config.shipped import CONF_DIR
from minituner.config.validation import inspection_problems
from minituner.data.inspection import segments, split_summary, tokenize_example
from minituner.store.artifacts import write_json_atomic
from minituner.training.terminal import quiet_library_notices

log = logging.getLogger(__name__)
STYLES = {"special": "bold magenta", "given": "dim", "trained": "bold green"}


def _rendered(runs: list[tuple[str, str]], kinds: tuple[str, ...]) -> Text:
    text = Text()
    for part, kind in runs:
        if kind in kinds:
            text.append(part.replace("\n", "⏎\n"), style=STYLES[kind])  # a template's line breaks stay visible
    return text


def _one_line(text: str, width: int = 60) -> str:
    flat = text.replace("\n", "⏎")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def inspect_data(cfg: DictConfig) -> dict:
    """The split summaries and the shown examples (as ``segments`` runs) of ``cfg``'s data."""
    datamodule = instantiate(cfg.data)
    tokenizer, block_size = datamodule.tokenizer, cfg.model.block_size
    splits = datamodule.text_splits()
    shown = splits[cfg.inspect.split][: cfg.inspect.examples]
    examples = []
    for prompt, text in shown:
        example = tokenize_example(prompt, text, tokenizer, block_size)
        examples.append(
            {
                "tokens": len(example.ids),
                "trained_tokens": example.trained_tokens,
                "segments": segments(example, tokenizer),
            }
        )
    return {
        "data": cfg.data.get("path") or "verb corpus",
        "stage": cfg.regime.data_stage,
        "split": cfg.inspect.split,
        "splits": {stage: split_summary(examples, tokenizer, block_size) for stage, examples in splits.items()},
        "examples": examples,
    }


def print_inspection(result: dict, console: Console) -> None:
    """The examples as a table (given and trained parts in their own columns), then the split sizes."""
    room = next(iter(result["splits"].values())).get("row_tokens")
    table = Table(
        title=f"{result['data']} ({result['stage']}), split {result['split']}: the first "
        f"{len(result['examples'])} examples as training tokenizes them"
    )
    for column in ("#", "tokens", "given (not trained)", "trained"):
        table.add_column(column)
    for number, example in enumerate(result["examples"]):
        runs = example["segments"]
        given_end = max((i for i, (_, kind) in enumerate(runs) if kind == "given"), default=0) + 1
        table.add_row(
            str(number),
            f"{example['tokens']}/{room} ({example['trained_tokens']} trained)",
            _rendered(runs[:given_end], ("special", "given")),
            _rendered(runs[given_end:], ("special", "trained")),
        )
    console.print(table)
    sizes = Table(title="splits (tokens include BOS and EOS; a row holds the context + 1)")
    for column in ("split", "examples", "mean tokens", "max tokens", "mean trained tokens", "longest example"):
        sizes.add_column(column)
    for stage, summary in result["splits"].items():
        if summary["examples"]:
            sizes.add_row(
                stage,
                f"{summary['examples']:,}",
                f"{summary['tokens_mean']:.1f}",
                f"{summary['tokens_max']}/{summary['row_tokens']}",
                f"{summary['trained_tokens_mean']:.1f}",
                _one_line(summary["longest"]),
            )
    console.print(sizes)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="inspect_data")
def main(cfg: DictConfig) -> None:
    """Console entry point ``minituner-data``: exit 2 for a bad config or data file."""
    quiet_library_notices()
    problems = inspection_problems(cfg)
    if problems:
        log.error("%s", ConfigError(problems))
        sys.exit(2)
    result = inspect_data(cfg)
    print_inspection(result, Console())
    out = Path(HydraConfig.get().runtime.output_dir) / "data.json"
    write_json_atomic(out, result)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
