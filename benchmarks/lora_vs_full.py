"""LoRA against full fine-tuning on the irregular subset, from one shared pretrained base.

Runs ``regime=pretrain`` (cold cache), ``regime=full`` and ``regime=lora`` (the defaults) the
way a user runs them and prints one JSON object: task accuracy, control drift (forgetting),
trainable parameters, checkpoint bytes and the adapter-to-base size ratio, with the goals of
the LoRA issue (accuracy >= 95% and >= 60 points over the base, drift <= 5%).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from cli_runs import timed_run


def summary(seconds: float, metrics: dict, checkpoint_key: str) -> dict:
    return {
        "wall_seconds": round(seconds, 1),
        "base_irregular_acc": metrics["base_irregular_acc"],
        "irregular_acc": metrics["irregular_acc"],
        "base_regular_ppl": round(metrics["base_regular_ppl"], 4),
        "regular_ppl": round(metrics["regular_ppl"], 4),
        "regular_ppl_drift": round(metrics["regular_ppl_drift"], 4),
        "trainable_params": metrics["trainable_params"],
        "checkpoint_bytes": metrics[checkpoint_key],
        "base_bytes": metrics["base_bytes"],
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        outputs = Path(tmp)
        timed_run(outputs, "pretrain", "regime=pretrain")
        full = summary(*timed_run(outputs, "full", "regime=full"), "model_bytes")
        lora = summary(*timed_run(outputs, "lora", "regime=lora"), "adapter_bytes")
    gain = lora["irregular_acc"] - lora["base_irregular_acc"]
    result = {
        "benchmark": "lora_vs_full",
        "full": full,
        "lora": lora,
        "adapter_to_base_bytes": round(lora["checkpoint_bytes"] / lora["base_bytes"], 4),
        "goals": {
            "lora_accuracy_at_least_0.95": lora["irregular_acc"] >= 0.95,
            "lora_gain_at_least_60_points": gain >= 0.60,
            "lora_drift_at_most_5_percent": lora["regular_ppl_drift"] <= 0.05,
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
