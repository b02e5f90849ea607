"""What the model writes: sampling with or without the KV cache, models side by side, the verb task as text."""

from minituner.generation.models import NamedModel, comparison_models
from minituner.generation.sampling import Generation, SamplingSettings, generate, generate_batch
from minituner.generation.verb_task import generation_accuracy, verb_completions

__all__ = [
    "Generation",
    "NamedModel",
    "SamplingSettings",
    "comparison_models",
    "generate",
    "generate_batch",
    "generation_accuracy",
    "verb_completions",
]
