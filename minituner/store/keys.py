"""Cache keys: a short SHA-256 of everything that determines a cached thing."""

from __future__ import annotations

import hashlib
import json


def content_key(material, length: int = 12) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``material`` as canonical JSON.

    Args:
        material: JSON-ready values (dict keys are sorted; anything else JSON cannot hold is
            written as its ``str``).
        length: How many hex digits to keep.
    """
    blob = json.dumps(material, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
