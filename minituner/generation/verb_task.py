"""The verb task as text: irregular-verb prompts (``data.verb_prompts``) completed greedily.

A completion counts as correct when its first word is the correct form: a generation-based
accuracy beside the log-probability one (``irregular_acc``).
"""

from __future__ import annotations

import re

from torch import nn

from minituner.data.verb_prompts import VerbPrompt
from minituner.generation.sampling import SamplingSettings, generate
from minituner.model.tokenizer import ByteTokenizer

# the rest of the sentence: the verb, its object and the end-of-text (about 10-20 tokens)
VERB_SETTINGS = SamplingSettings(max_new_tokens=24, temperature=0.0)


def first_word(text: str) -> str:
    """The first run of letters in ``text`` (``" went home."`` -> ``went``)."""
    match = re.search(r"[A-Za-z]+", text)
    return match.group(0) if match else ""


def complete_prompts(model: nn.Module, prompts: list[str], settings: SamplingSettings = VERB_SETTINGS) -> list[str]:
    """Greedy completions (KV cache) of text prompts, each after BOS."""
    tokenizer = ByteTokenizer()
    encoded = [tokenizer.encode(p, bos=True) for p in prompts]
    return [g.text for g in generate(model, encoded, settings)]


def verb_completions(model: nn.Module, prompts: list[VerbPrompt]) -> list[dict]:
    """Per prompt: the completion, its first word and whether that is the correct form."""
    texts = complete_prompts(model, [p.prompt for p in prompts])
    return [
        {
            "prompt": p.prompt,
            "completion": t,
            "first_word": first_word(t),
            "correct_form": p.correct,
            "correct": first_word(t) == p.correct,
        }
        for p, t in zip(prompts, texts, strict=True)
    ]


def generation_accuracy(completions: list[dict]) -> float:
    """Share of completions whose first word is the correct form."""
    return sum(c["correct"] for c in completions) / len(completions) if completions else 0.0


def markdown_completions(columns: dict[str, list[dict]]) -> str:
    """A table: one row per prompt, one column per model; the correct form is marked with a check."""
    labels = list(columns)
    first = columns[labels[0]]
    lines = [
        "| prompt | correct | " + " | ".join(f"`{label}`" for label in labels) + " |",
        "|---|---|" + "---|" * len(labels),
    ]
    for i, row in enumerate(first):
        cells = []
        for label in labels:
            c = columns[label][i]
            cells.append(f"{'✅' if c['correct'] else '❌'} {markdown_cell(c['completion'])}")
        lines.append(f"| {markdown_cell(row['prompt'])} | {row['correct_form']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell (pipes escaped, line breaks shown as ⏎)."""
    return text.replace("|", "\\|").replace("\n", "⏎")
