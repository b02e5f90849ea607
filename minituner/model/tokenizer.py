"""Byte-level tokenizer: the 256 byte values plus three special tokens.

Byte level covers any UTF-8 text a user brings later, so no vocabulary has to be learned;
its whole definition (a few numbers) is saved beside every base checkpoint as JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

NUM_BYTES = 256


@dataclass(frozen=True)
class ByteTokenizer:
    """UTF-8 bytes map to ids 0..255; BOS, EOS and PAD follow."""

    bos_id: int = NUM_BYTES
    eos_id: int = NUM_BYTES + 1
    pad_id: int = NUM_BYTES + 2

    @property
    def vocab_size(self) -> int:
        """Number of ids, specials included."""
        return NUM_BYTES + 3

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """UTF-8 bytes of ``text`` as ids, optionally framed by BOS/EOS."""
        ids = list(text.encode("utf-8"))
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: list[int]) -> str:
        """Text of the byte ids in ``ids``; special tokens are dropped."""
        return bytes(i for i in ids if i < NUM_BYTES).decode("utf-8", errors="replace")

    def to_dict(self) -> dict:
        """JSON-ready definition, saved with the base checkpoint."""
        return {"type": "byte", "vocab_size": self.vocab_size, **asdict(self)}

    @classmethod
    def load(cls, path: Path) -> ByteTokenizer:
        """Read a definition written from :meth:`to_dict`, refusing any other tokenizer type."""
        data = json.loads(Path(path).read_text())
        if data.get("type") != "byte":
            raise ValueError(f"{path}: tokenizer type {data.get('type')!r} is not 'byte'")
        return cls(bos_id=data["bos_id"], eos_id=data["eos_id"], pad_id=data["pad_id"])
