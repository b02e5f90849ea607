"""What the preview measures of the cached reference adapter alone: part F and what the model writes.

Both are functions of the cached base and reference adapter, the data, the preview's batch and
minituner's code, so they are kept beside the adapter (``preview_measurements.json``, written
atomically) under a key of all of these, and measured again when any of them changes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from minituner.data.verb_prompts import verb_prompts
from minituner.generation.verb_task import generation_accuracy, verb_completions
from minituner.reports.merge_fidelity import base_copy, merge_fidelity
from minituner.store.artifacts import sha256_file, write_json_atomic
from minituner.store.keys import content_key
from minituner.store.provenance import source_digest

CACHE_NAME = "preview_measurements.json"


def reference_measurements(
    cfg: DictConfig, base, reference_dir: Path, reference_metrics: dict, batch: tuple[torch.Tensor, torch.Tensor]
) -> tuple[dict, bool]:
    """Part F and what the base and the reference adapter write: measured, or read from their cache.

    Returns:
        ``{"merging": ..., "writes": ...}`` and whether it came from the cache.
    """
    key = content_key(
        {
            "base": base.weights_sha256,
            "adapter": sha256_file(reference_dir / "adapter_model.safetensors"),
            "quant": cfg.preview.quant,
            "data": OmegaConf.to_container(cfg.data, resolve=True),
            "batch_size": cfg.preview.batch_size,
            "sources": source_digest(),
        }
    )
    cache = reference_dir.parent / CACHE_NAME
    if cache.is_file():
        stored = json.loads(cache.read_text())
        if stored.get("key") == key:
            return stored["measurements"], True
    base_ppl = reference_metrics["base_regular_ppl"]
    merging = merge_fidelity(base, reference_dir, cfg.preview.quant, batch, instantiate(cfg.data), base_ppl)
    writers = {"base (fp32)": base.model, "LoRA (fp32 base)": base_copy(base, adapter_dir=reference_dir)}
    measured = {
        "merging": merging,
        "writes": what_the_model_writes(cfg, writers, reference_accuracies(reference_metrics)),
    }
    write_json_atomic(cache, {"key": key, "measurements": measured})
    return measured, False


def reference_accuracies(reference_metrics: dict) -> dict[str, float]:
    """Log-probability accuracy of the base and of LoRA on the fp32 base, from the reference run."""
    return {
        "base (fp32)": reference_metrics["base_irregular_acc"],
        "LoRA (fp32 base)": reference_metrics["irregular_acc"],
    }


def what_the_model_writes(cfg: DictConfig, models: dict[str, nn.Module], logprob_acc: dict[str, float]) -> dict:
    """Greedy completions of the irregular test prompts (cut before the verb) by each model.

    Returns:
        Per model the generation accuracy over every prompt (first word = the correct form) beside
        its log-probability accuracy, and the completions of a fixed showcase (one past simple and one
        participle prompt per verb).
    """
    sentences = instantiate(cfg.data, stage="irregular").corpus.splits["irregular_test"]
    prompts, showcase = verb_prompts(sentences), verb_prompts(sentences, per_verb_and_form=1)
    result = {"prompts": len(prompts), "models": {}, "showcase": {}}
    for label, model in models.items():
        completions = verb_completions(model, prompts)
        result["models"][label] = {
            "generation_acc": generation_accuracy(completions),
            "logprob_acc": logprob_acc[label],
        }
        result["showcase"][label] = verb_completions(model, showcase)
    return result
