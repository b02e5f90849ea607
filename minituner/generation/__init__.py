"""What the model writes: sampling with or without the KV cache, models side by side, the verb task as text."""

from minituner._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "sampling": ["Generation", "SamplingSettings", "generate", "generate_batch"],
        "models": ["NamedModel", "comparison_models"],
        "verb_task": ["VerbPrompt", "verb_prompts", "verb_completions", "generation_accuracy"],
    },
)
