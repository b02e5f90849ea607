"""The network: MiniGPT (a small GPT, one readable file) and its byte-level tokenizer."""

from minituner._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "minigpt": ["IGNORE_INDEX", "MiniGPT", "MiniGPTConfig", "count_parameters"],
        "tokenizer": ["ByteTokenizer"],
        "precision": ["BASE_DTYPES", "cast_frozen_base"],
    },
)
