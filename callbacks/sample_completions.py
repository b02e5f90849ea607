"""What the model writes, step by step: greedy completions of a few fixed prompts at each validation.

The datamodule names the prompts (``sample_prompts()``: irregular-verb sentences cut before the
verb, or held-out instruction records) and what should follow; the completions go to
TensorBoard's TEXT tab (tag ``samples/completions``) as a table at every validation, the base's
at step 0 when ``evaluate_base`` validates it first. Greedy decoding draws no random numbers, so
training is unchanged by it.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from minituner.generation.sampling import SamplingSettings
from minituner.generation.verb_task import complete_prompts, first_word, markdown_cell

TAG = "samples/completions"


def completions_table(prompts: list[tuple[str, str]], completions: list[str]) -> str:
    """Markdown rows: prompt, expected, completion, and whether the completion starts with the expected text."""
    lines = ["| prompt | expected | completion | starts right |", "|---|---|---|---|"]
    for (prompt, expected), text in zip(prompts, completions, strict=True):
        right = first_word(text) == first_word(expected)
        shown = [markdown_cell(cell) for cell in (prompt, expected, text)]
        lines.append(f"| {shown[0]} | {shown[1]} | {shown[2]} | {'yes' if right else 'no'} |")
    return "\n".join(lines)


class SampleCompletions(L.Callback):
    """Log greedy completions of ``count`` fixed prompts to TensorBoard at each validation.

    Args:
        count: How many of the datamodule's sample prompts.
        max_new_tokens: Most tokens per completion (end-of-text ends one sooner).
    """

    def __init__(self, count: int = 8, max_new_tokens: int = 24):
        self.count = count
        self.settings = SamplingSettings(max_new_tokens=max_new_tokens, temperature=0.0)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        sample_prompts = getattr(trainer.datamodule, "sample_prompts", None)
        if trainer.sanity_checking or not trainer.is_global_zero or not loggers or sample_prompts is None:
            return
        prompts = sample_prompts(self.count)
        if not prompts:
            return
        completions = complete_prompts(pl_module.model, [p for p, _ in prompts], self.settings)
        table = completions_table(prompts, completions)
        for logger in loggers:
            logger.experiment.add_text(TAG, table, trainer.global_step)
