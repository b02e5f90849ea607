"""Write the shipped sentiment dataset: ``python -m minituner.data.examples.make_sentiment [path]``.

The synthetic product-review task of the seeds (section 6 of the PEFT notebook): one fixed
instruction, a review as the input, its sentiment (positive / negative / neutral) as the output.
The seeds draw 50 reviews at random from 25 phrases; here every phrase is paired with every
product, so the 250 records are distinct and the file is the same on every run (no randomness
but a seeded shuffle of the line order).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from minituner.data.examples import EXAMPLES_DIR
from minituner.store.artifacts import write_text_atomic

INSTRUCTION = "Classify the sentiment of the following product review as positive, negative, or neutral."
LABELS = ("positive", "negative", "neutral")
PHRASES = {
    "positive": (
        "I absolutely love this product!",
        "Best purchase I've made all year.",
        "Exceptional quality and fast shipping.",
        "Highly recommend to everyone.",
        "Exceeded my expectations in every way.",
        "Outstanding customer service.",
        "Will definitely buy again.",
        "Fantastic value for the price.",
        "Works perfectly right out of the box.",
        "Five stars, no hesitation.",
    ),
    "negative": (
        "Terrible quality, broke after one day.",
        "Very disappointed with this purchase.",
        "Does not work as described.",
        "Complete waste of money.",
        "The worst product I have ever bought.",
        "Arrived damaged and customer support ignored me.",
        "Would not recommend to anyone.",
        "Returned immediately, total garbage.",
        "Instructions were useless and product failed.",
        "One star is too generous.",
    ),
    "neutral": (
        "The product is okay, nothing special.",
        "It does what it says, nothing more.",
        "Average quality for the price.",
        "Some features are good, others lacking.",
        "Acceptable but room for improvement.",
    ),
}
PRODUCTS = (
    "Blender",
    "Headphones",
    "Desk lamp",
    "Backpack",
    "Coffee maker",
    "Phone case",
    "Keyboard",
    "Water bottle",
    "Toaster",
    "Umbrella",
)
SHUFFLE_SEED = 42
DEFAULT_PATH = EXAMPLES_DIR / "sentiment.jsonl"


def sentiment_records() -> list[dict]:
    """Every (product, phrase) review with its label, in a seeded shuffled order."""
    records = [
        {"instruction": INSTRUCTION, "input": f"{product}: {phrase}", "output": label}
        for label, phrases in PHRASES.items()
        for phrase in phrases
        for product in PRODUCTS
    ]
    random.Random(SHUFFLE_SEED).shuffle(records)
    return records


def jsonl_text(records: list[dict]) -> str:
    """One JSON object per line."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def main(argv: list[str] | None = None) -> None:
    """Write the dataset to the path given (default: the shipped ``sentiment.jsonl``)."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DEFAULT_PATH
    records = sentiment_records()
    write_text_atomic(path, jsonl_text(records))
    print(f"{len(records)} records -> {path}")


if __name__ == "__main__":
    main()
