"""Text generation from a MiniGPT: greedy or sampled, with or without the key/value cache.

One function does the work for every caller (``minituner-generate``, the preview, the TensorBoard
samples, self-replay): :func:`generate_batch` grows a batch of equally long prompts token by
token. With ``use_cache`` each step runs only the new token through the network
(``model/kv_cache.py``); without it each step recomputes the whole sequence, the reference the
cache is tested against. A sequence leaves the batch at end-of-text, at a stop string, after
``max_new_tokens`` or when the context is full.

Sampling order per step: logits / temperature, then top-k, then top-p (nucleus), then one draw
from the softmax with the caller's generator; temperature 0 is greedy (argmax, no draw). The
log-probability recorded per token is the model's own (softmax of the raw logits, temperature 1),
so it compares across sampling settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from minituner.model.kv_cache import KVCache, next_token_logits
from minituner.model.minigpt import MiniGPT
from minituner.model.tokenizer import ByteTokenizer

STOP_REASONS = ("eos", "stop", "length", "context")


@dataclass(frozen=True)
class SamplingSettings:
    """How a continuation is chosen.

    Attributes:
        max_new_tokens: Most tokens generated per sequence.
        temperature: 0 = greedy; otherwise the logits are divided by it before sampling.
        top_k: Keep only the k most likely tokens (None: all).
        top_p: Keep the smallest set of most likely tokens whose probability reaches top_p (1: all).
        stop: Strings that end a completion (cut before them); end-of-text always ends one.
    """

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float = 1.0
    stop: tuple[str, ...] = ()


@dataclass
class Generation:
    """One completion.

    Attributes:
        prompt_ids: The ids given (BOS + prompt).
        tokens: The new ids, end-of-text included when it was generated.
        logprobs: The model's log-probability of each new id (temperature 1, no filtering).
        stop_reason: ``eos``, ``stop`` (a stop string), ``length`` (max_new_tokens) or ``context`` (block_size).
        text: The completion as text, cut before a stop string.
    """

    prompt_ids: list[int]
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    stop_reason: str = "length"
    text: str = ""


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float) -> torch.Tensor:
    """(B, V) logits with every token outside the top-k / top-p set at -inf."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = torch.sort(logits, dim=-1, descending=True)
        probs = F.softmax(ordered, dim=-1)
        # drop a token when the ones ranked above it already reach top_p (the first one always stays)
        drop = probs.cumsum(dim=-1) - probs >= top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def choose_tokens(logits: torch.Tensor, settings: SamplingSettings, generator: torch.Generator | None) -> torch.Tensor:
    """The next id of each row of (B, V) ``logits``: argmax at temperature 0, else one draw."""
    if settings.temperature == 0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / settings.temperature
    if settings.top_k is not None or settings.top_p < 1.0:
        scaled = filter_logits(scaled, settings.top_k, settings.top_p)
    return torch.multinomial(F.softmax(scaled, dim=-1), 1, generator=generator).squeeze(1)


@torch.no_grad()
def generate_batch(
    model: MiniGPT,
    prompts: list[list[int]],
    settings: SamplingSettings,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    step_logits: list[torch.Tensor] | None = None,
) -> list[Generation]:
    """Continue equally long prompts (each BOS + prompt ids) together.

    Args:
        model: A MiniGPT, plain, LoRA-wrapped or quantized; put in eval mode for the call.
        prompts: Token ids, all of one length, at most ``model.config.block_size``.
        settings: Sampling settings.
        generator: The random stream of the draws (None: torch's global one; unused when greedy).
        use_cache: Key/value cache (one new position per step) or the full forward each step.
        step_logits: When given, each step's (live rows, V) logits are appended to it (tests).

    Returns:
        One :class:`Generation` per prompt, in order.
    """
    if len({len(p) for p in prompts}) != 1:
        raise ValueError("generate_batch needs prompts of one length (group them, as generate() does)")
    block_size = model.config.block_size
    if len(prompts[0]) > block_size:
        raise ValueError(f"prompt of {len(prompts[0])} tokens exceeds model.block_size={block_size}")
    tokenizer = ByteTokenizer()
    was_training = model.training
    model.eval()
    results = [Generation(list(p)) for p in prompts]
    live = list(range(len(prompts)))  # rows still growing
    cache = KVCache.empty(len(model.blocks)) if use_cache else None
    step_input = torch.tensor(prompts, device=next(model.parameters()).device)  # (B, T): the prompts first
    sequences = step_input
    while live:
        # (B, V): one new position through the cache, or the whole sequence again
        logits = next_token_logits(model, step_input, cache) if cache is not None else model(sequences)[0][:, -1]
        if step_logits is not None:
            step_logits.append(logits.float().cpu())
        tokens = choose_tokens(logits, settings, generator)
        logprobs = F.log_softmax(logits.float(), dim=-1).gather(1, tokens[:, None]).squeeze(1)
        going = [
            _extend(results[row], token, logprob, settings, block_size, tokenizer)
            for row, token, logprob in zip(live, tokens.tolist(), logprobs.tolist(), strict=True)
        ]
        keep = torch.tensor(going, dtype=torch.bool, device=tokens.device)
        live = [row for row, g in zip(live, going, strict=True) if g]
        step_input = tokens[keep][:, None]  # finished rows leave the batch
        if cache is not None:
            cache.select(keep.nonzero().squeeze(1))
        else:
            sequences = torch.cat([sequences[keep], step_input], dim=1)
    model.train(was_training)
    for result in results:
        result.text = _completion_text(result, settings, tokenizer)
    return results


def _extend(
    result: Generation, token: int, logprob: float, settings: SamplingSettings, block_size: int, tokenizer
) -> bool:
    """Append ``token`` to ``result``; whether it goes on (else its ``stop_reason`` is set)."""
    result.tokens.append(token)
    result.logprobs.append(logprob)
    reason = _stop_reason(result, token, settings, block_size, tokenizer)
    if reason is not None:
        result.stop_reason = reason
    return reason is None


def _stop_reason(
    result: Generation, token: int, settings: SamplingSettings, block_size: int, tokenizer: ByteTokenizer
) -> str | None:
    """Why ``result`` ends after ``token``, or None when it goes on."""
    if token == tokenizer.eos_id:
        return "eos"
    if settings.stop and any(s in tokenizer.decode(result.tokens) for s in settings.stop):
        return "stop"
    if len(result.tokens) >= settings.max_new_tokens:
        return "length"
    if len(result.prompt_ids) + len(result.tokens) > block_size:  # the last position has been used
        return "context"
    return None


def _completion_text(result: Generation, settings: SamplingSettings, tokenizer: ByteTokenizer) -> str:
    text = tokenizer.decode(result.tokens)
    cuts = [text.index(s) for s in settings.stop if s in text]
    return text[: min(cuts)] if cuts else text


def generate(
    model: MiniGPT,
    prompts: list[list[int]],
    settings: SamplingSettings,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> list[Generation]:
    """Continue prompts of any lengths: prompts of one length grow together (:func:`generate_batch`).

    Groups run shortest first, so one generator gives the same draws for the same prompts.
    """
    results: list[Generation | None] = [None] * len(prompts)
    for length in sorted({len(p) for p in prompts}):
        rows = [i for i, p in enumerate(prompts) if len(p) == length]
        for row, result in zip(
            rows, generate_batch(model, [prompts[i] for i in rows], settings, generator, use_cache), strict=True
        ):
            results[row] = result
    return results  # type: ignore[return-value]
