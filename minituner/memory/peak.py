"""The peak of one training step: what is held before it, the saved activations, and the largest transient.

Between steps a run holds its weights and Adam state (gradients are dropped: ``zero_grad`` sets
them to None). During the step the most memory is in use at one of three moments, and the
prediction is the largest of them:

* **the loss's backward**: every saved activation is still alive, plus the gradient of the
  log-probabilities and of the logits (tokens x vocabulary, fp32; with a half-precision base also
  the logits' own gradient in its dtype);
* **the last block's backward**: the log-softmax is freed; two residual-width gradients are alive,
  hidden-width ones as the MLP's backward needs them (one without checkpointing, one more when its
  output projection carries an adapter: the base's and the adapter's input gradients before they are
  summed), a quantized layer's dequantized weight, and under activation checkpointing the block's
  recomputed activations;
* **the optimizer step**: every gradient, plus AdamW's temporaries (on the CPU it updates one
  tensor at a time: two temporaries of the largest trainable tensor; on CUDA its multi-tensor
  kernels: one temporary per trainable parameter).

The saved activations are exact; the transients are read off the CPU's allocation timeline of a
step. ``benchmarks/scaling.py`` and ``benchmarks/checkpointing.py`` compare the sum with the CPU's
allocation events (and ``torch.cuda.max_memory_allocated`` on a GPU): 0.99-1.08 times them on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from minituner.memory.activations import TrainingSetup, saved_activations
from minituner.memory.shapes import adapted_linears
from minituner.model.minigpt import MiniGPTConfig
from minituner.quant.linear import CHUNK_BYTES, CHUNKED_ABOVE


@dataclass(frozen=True)
class StepPeak:
    """The predicted peak of one training step in bytes, and the moment that sets it."""

    held: int
    during: int
    moment: str

    @property
    def total(self) -> int:
        return self.held + self.during


def step_peak(
    config: MiniGPTConfig,
    setup: TrainingSetup,
    batch: tuple[int, int],
    held: int,
    grads: int,
    largest_trainable_bytes: int,
    moment_bytes: int,
) -> StepPeak:
    """The predicted peak of a training step on one batch.

    Args:
        config: Model shape.
        setup: Regime, dtypes, kernel, checkpointing, device.
        batch: ``(batch_size, seq_len)``.
        held: Bytes held between steps: weights and optimizer state.
        grads: Bytes of all gradients.
        largest_trainable_bytes: Bytes of the largest trainable tensor (the CPU optimizer's temporaries).
        moment_bytes: Bytes of one Adam moment of every trainable parameter (CUDA's multi-tensor temporaries).
    """
    tokens = batch[0] * batch[1]
    saved = saved_activations(config, setup, [batch]).total
    log_probs = tokens * config.vocab_size * 4
    loss = saved + 2 * log_probs + (tokens * config.vocab_size * setup.base_bytes if setup.base_bytes != 4 else 0)
    block = saved - log_probs + _block_backward_transient(config, setup, tokens)
    if setup.checkpointing:  # the recomputed block is alive again while its backward runs
        plain = replace(setup, checkpointing=False)
        block += saved_activations(config, plain, [batch]).by_part.get(f"blocks.{config.n_layer - 1}", 0)
    temporaries = moment_bytes if setup.device == "cuda" else 2 * largest_trainable_bytes
    moments = {"loss backward": loss, "last block backward": block, "optimizer step": grads + temporaries}
    moment = max(moments, key=moments.get)
    return StepPeak(held=held, during=moments[moment], moment=moment)


def _block_backward_transient(config: MiniGPTConfig, setup: TrainingSetup, tokens: int) -> int:
    """Gradients alive at once in the last block's backward, and a quantized layer's dequantized weight."""
    width = setup.base_bytes
    last = f"blocks.{config.n_layer - 1}.mlp."
    adapted = setup.lora is not None and any(
        name.startswith(last) and name.endswith(("fc_out", "down_proj")) for name in adapted_linears(config, setup.lora)
    )
    hidden = int(adapted) + int(not setup.checkpointing)
    transient = 2 * tokens * config.d_model * width + hidden * tokens * config.d_ff * width
    if setup.quantized:  # the MLP's weight, dequantized whole (on the CPU: in row chunks when large)
        weight = config.d_model * config.d_ff
        chunked = setup.device == "cpu" and 4 * weight > CHUNKED_ABOVE * CHUNK_BYTES
        transient += CHUNK_BYTES if chunked else weight * width
    return transient
