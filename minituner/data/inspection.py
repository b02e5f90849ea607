"""What training sees of the data: tokenized examples, the given (masked) part told from the trained part.

The seeds' advice to every fine-tuner: look at a handful of tokenized examples before training
(a missing end-of-text, a wrong template, a prompt that is trained on). An example here is what
``LanguageModelingDataset`` builds: BOS + text + EOS, the BOS and prompt tokens given (their
targets ignored), the rest trained.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from minituner.data.datamodules import labelled_ids
from minituner.model.minigpt import IGNORE_INDEX
from minituner.model.tokenizer import ByteTokenizer

SPECIAL_NAMES = {"bos_id": "⟨BOS⟩", "eos_id": "⟨EOS⟩", "pad_id": "⟨PAD⟩"}


@dataclass(frozen=True)
class TokenizedExample:
    """One training row: its token ids and, per token, whether the loss trains on it."""

    prompt: str
    text: str
    ids: list[int]
    trained: list[bool]

    @property
    def trained_tokens(self) -> int:
        """How many of its tokens are targets of the loss."""
        return sum(self.trained)


def tokenize_example(prompt: str, text: str, tokenizer: ByteTokenizer, block_size: int) -> TokenizedExample:
    """``(prompt, text)`` as a training row: ids with BOS/EOS and the trained mask (prompt and BOS given)."""
    ids, labels = labelled_ids(prompt, text, tokenizer, block_size)
    return TokenizedExample(prompt, text, ids, [label != IGNORE_INDEX for label in labels])


def segments(example: TokenizedExample, tokenizer: ByteTokenizer) -> list[tuple[str, str]]:
    """The example as ``(text, kind)`` runs, kind ``special``, ``given`` or ``trained``, in order.

    Bytes are decoded a run at a time, so a multi-byte character inside a run reads as itself.
    """
    specials = {getattr(tokenizer, field): name for field, name in SPECIAL_NAMES.items()}
    runs: list[tuple[list[int], str]] = []
    for token, trained in zip(example.ids, example.trained, strict=True):
        kind = "special" if token in specials else "trained" if trained else "given"
        if runs and runs[-1][1] == kind and kind != "special":
            runs[-1][0].append(token)
        else:
            runs.append(([token], kind))
    return [
        (specials[ids[0]] if kind == "special" else bytes(ids).decode("utf-8", errors="replace"), kind)
        for ids, kind in runs
    ]


def split_summary(examples: list[tuple[str, str]], tokenizer: ByteTokenizer, block_size: int) -> dict:
    """Count, token lengths (BOS/EOS included) against the row's room, and the longest example of a split."""
    rows = [tokenize_example(prompt, text, tokenizer, block_size) for prompt, text in examples]
    if not rows:
        return {"examples": 0}
    lengths = [len(row.ids) for row in rows]
    longest = max(range(len(rows)), key=lengths.__getitem__)
    return {
        "examples": len(rows),
        "tokens_mean": statistics.fmean(lengths),
        "tokens_max": lengths[longest],
        "row_tokens": block_size + 1,  # a row holds BOS + text + EOS up to the context plus one
        "trained_tokens_mean": statistics.fmean(row.trained_tokens for row in rows),
        "longest": rows[longest].text,
    }
