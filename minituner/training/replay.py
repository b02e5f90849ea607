"""Self-replay: sentences the frozen base writes itself, mixed into every fine-tuning step.

Fine-tuning only on irregular verbs teaches the adapter "a past form is not lemma + -ed" for
every verb, and the regular verbs it never sees pay for it (the control drift). Before fit, the
base completes lemma cues of verbs the fine-tune does not cover (``"jump: "`` -> ``"jump:
yesterday we jumped it."``); each training step adds the language-model loss on a batch of these
sentences, weighted by ``regime.replay.weight``. The adapter so learns *went* while being shown
that *jumped* stays: no data beyond the base's own knowledge, no label, no held-out sentence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minituner.generation.sampling import SamplingSettings, generate_batch
from minituner.model.minigpt import IGNORE_INDEX, MiniGPT
from minituner.model.tokenizer import ByteTokenizer


def complete(
    model: MiniGPT,
    prompts: list[str],
    tokenizer: ByteTokenizer,
    max_len: int,
    generator: torch.Generator,
    temperature: float = 1.0,
) -> list[list[int]]:
    """Sample a continuation of each prompt until end-of-text or ``max_len`` tokens in all.

    Prompts of equal length grow together through a key/value cache (``generation/sampling.py``);
    a sequence leaves the batch at its end-of-text. The model's training mode is left as it was.

    Returns:
        Per prompt, BOS + prompt + sampled tokens (EOS included when it was sampled).
    """
    encoded = [tokenizer.encode(p, bos=True) for p in prompts]
    sequences: list[list[int]] = [list(e) for e in encoded]
    for length in sorted({len(e) for e in encoded}):
        if length >= max_len:
            continue
        rows = [i for i, e in enumerate(encoded) if len(e) == length]
        settings = SamplingSettings(max_new_tokens=max_len - length, temperature=temperature)
        for row, result in zip(
            rows, generate_batch(model, [encoded[i] for i in rows], settings, generator), strict=True
        ):
            sequences[row] = result.prompt_ids + result.tokens
    return sequences


@dataclass
class ReplaySet:
    """The base's sentences as (input, target) rows; a prompt's own tokens are never targets.

    Attributes:
        inputs: (N, block_size) token ids, padded.
        targets: (N, block_size) next-token targets, ``IGNORE_INDEX`` on the prompt and padding.
        weight: Factor of the replay loss added to the training loss.
        batch_size: Sentences per training step.
        seed: Seed of the per-step batch choice.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    weight: float
    batch_size: int
    seed: int

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The replay rows of optimizer step ``step``.

        A function of (seed, step) alone, so a resumed run draws the same rows as one that never
        stopped (micro-batches of one accumulated step share them).
        """
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        rows = torch.randint(len(self.inputs), (self.batch_size,), generator=generator)
        return self.inputs[rows], self.targets[rows]

    def texts(self, tokenizer: ByteTokenizer) -> list[str]:
        """The replayed sentences as text (for logs and reports)."""
        return [tokenizer.decode([t for t in row.tolist() if t < tokenizer.bos_id]) for row in self.inputs]


def build_replay_set(
    model: MiniGPT,
    prompts: list[str],
    block_size: int,
    *,
    sentences: int,
    weight: float,
    batch_size: int,
    temperature: float,
    max_len: int,
    seed: int,
) -> ReplaySet:
    """Let ``model`` (the frozen base) write ``sentences`` sentences, cycling through ``prompts``."""
    tokenizer = ByteTokenizer()
    cues = [prompts[i % len(prompts)] for i in range(sentences)]
    max_len = min(max_len, block_size + 1)
    sampled = complete(model, cues, tokenizer, max_len, torch.Generator().manual_seed(seed), temperature)
    inputs = torch.full((sentences, block_size), tokenizer.pad_id, dtype=torch.long)
    targets = torch.full((sentences, block_size), IGNORE_INDEX, dtype=torch.long)
    for i, (cue, ids) in enumerate(zip(cues, sampled, strict=True)):
        given = 1 + len(tokenizer.encode(cue))  # BOS + cue: inputs only, as in the training data
        inputs[i, : len(ids) - 1] = torch.tensor(ids[:-1])
        targets[i, given - 1 : len(ids) - 1] = torch.tensor(ids[given:])
    return ReplaySet(inputs, targets, weight, batch_size, seed)
