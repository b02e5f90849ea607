"""Print the composed config as a tree at the start of a run (one branch per config group)."""

from __future__ import annotations

import lightning as L
import rich
from minituner.callbacks.run_hooks import RunContext, RunHooks
from omegaconf import OmegaConf
from rich.syntax import Syntax
from rich.tree import Tree

FIRST = ("model", "regime", "lora", "quant", "data", "trainer")


def config_tree(cfg) -> Tree:
    """A rich tree: the main groups first, each with its YAML, then everything else."""
    tree = Tree(f"config [dim]({cfg.paths.output_dir})[/dim]")
    keys = [k for k in FIRST if k in cfg] + [k for k in cfg if k not in FIRST]
    for key in keys:
        node = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=True) if OmegaConf.is_config(node) else str(node)
        tree.add(f"[bold]{key}[/bold]").add(Syntax(text.rstrip(), "yaml", theme="ansi_dark"))
    return tree


class ConfigTree(L.Callback, RunHooks):
    """Print ``config_tree`` once, when the run starts."""

    def on_run_start(self, run: RunContext) -> None:
        rich.print(config_tree(run.cfg))
