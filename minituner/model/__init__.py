"""The network: MiniGPT (a small GPT, one readable file) and its byte-level tokenizer."""

from minituner.model.minigpt import IGNORE_INDEX, MiniGPT, MiniGPTConfig, count_parameters
from minituner.model.precision import BASE_DTYPES, cast_frozen_base
from minituner.model.tokenizer import ByteTokenizer

__all__ = [
    "BASE_DTYPES",
    "ByteTokenizer",
    "IGNORE_INDEX",
    "MiniGPT",
    "MiniGPTConfig",
    "cast_frozen_base",
    "count_parameters",
]
