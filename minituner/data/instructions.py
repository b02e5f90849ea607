"""Instruction data from a JSON-lines file in the Alpaca format (``data=jsonl data.path=...``).

Each line is ``{"instruction": ..., "input": ..., "output": ...}`` (``input`` optional). A record
becomes the Alpaca prompt (with the ``### Input:`` section only when the input is not blank)
followed by its output and an end-of-text token; the loss covers the output and that token
only. Records are split into train and validation by a seeded hash of their text. The base is
still pretrained on the verb corpus, whose regular-verb control set measures forgetting here too.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from torch.utils.data import DataLoader, Dataset

from minituner.data.datamodules import LanguageModelingDataset, PretrainDataModule, TaskDataset, VerbDataModule
from minituner.model.tokenizer import ByteTokenizer

PROMPT_WITH_INPUT = "### Instruction:\n{instruction}\n### Input:\n{input}\n### Response:\n"
PROMPT_NO_INPUT = "### Instruction:\n{instruction}\n### Response:\n"
REQUIRED = ("instruction", "output")
FIELDS = ("instruction", "input", "output")


class DataFileError(ValueError):
    """A data file that cannot be used; ``problems`` lists each one with its file and line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def format_prompt(instruction: str, input: str = "") -> str:  # noqa: A002 - the Alpaca field's name
    """The Alpaca prompt, up to and including the line break after ``### Response:``."""
    if input.strip():
        return PROMPT_WITH_INPUT.format(instruction=instruction, input=input)
    return PROMPT_NO_INPUT.format(instruction=instruction)


@dataclass(frozen=True)
class Record:
    """One instruction record and the line it came from."""

    line: int
    instruction: str
    input: str
    output: str

    @property
    def prompt(self) -> str:
        """What the model is given."""
        return format_prompt(self.instruction, self.input)

    @property
    def text(self) -> str:
        """Prompt and response: the training text (the tokenizer adds BOS and EOS)."""
        return self.prompt + self.output


@dataclass(frozen=True)
class LabelItem:
    """A held-out record as a choice: its own label first, then the other labels."""

    context: str
    candidates: tuple[str, ...]


def _field_problems(where: str, fields: dict) -> list[str]:
    problems = []
    for key in FIELDS:
        value = fields.get(key)
        if key not in fields or (value is None and key == "input"):
            if key in REQUIRED:
                problems.append(
                    f'{where}: missing "{key}" (each record needs "instruction" and "output"; "input" is optional)'
                )
            continue
        if not isinstance(value, str):
            problems.append(f'{where}: "{key}" must be a string, found {type(value).__name__} {value!r:.60}')
        elif key in REQUIRED and not value.strip():
            problems.append(f'{where}: "{key}" is empty')
        else:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as error:
                problems.append(
                    f'{where}: "{key}" has text the byte tokenizer cannot represent: character {error.start + 1} '
                    f"is {value[error.start]!r}, an unpaired UTF-16 surrogate (not UTF-8 encodable)"
                )
    return problems


def _parse_line(where: str, raw: bytes) -> tuple[dict | None, list[str]]:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, [f"{where}: byte {error.start + 1} is not valid UTF-8 (the file must be UTF-8 text)"]
    try:
        fields = json.loads(line)
    except json.JSONDecodeError as error:
        return None, [f"{where}: invalid JSON ({error.msg} at column {error.colno})"]
    if not isinstance(fields, dict):
        return None, [
            f'{where}: a record must be a JSON object with "instruction", "output" and optionally '
            f'"input"; found a {type(fields).__name__}'
        ]
    return fields, _field_problems(where, fields)


def read_records(path: str | Path, block_size: int, labels: list[str] | None = None) -> list[Record]:
    """Every record of the JSON-lines file ``path``, checked; blank lines are skipped.

    Raises:
        DataFileError: Listing every problem as ``<file>:<line>: ...``: unreadable file, invalid
            UTF-8 or JSON, a non-object line, a missing, empty or non-string field, text the byte
            tokenizer cannot represent, a record longer than the context, an output that is not
            one of ``labels``, a file without records.
    """
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as error:
        raise DataFileError([f"data.path={path}: cannot read the file ({error.strerror})"]) from error
    tokenizer = ByteTokenizer()
    # with labels, every label is scored after every prompt: the longest must fit as well
    longest_label = max((len(tokenizer.encode(label)) for label in labels or []), default=0)
    problems: list[str] = []
    records = []
    for number, raw in enumerate(content.split(b"\n"), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        fields, line_problems = _parse_line(where, raw)
        problems += line_problems
        if fields is None or line_problems:
            continue
        record = Record(number, fields["instruction"], fields.get("input") or "", fields["output"])
        response = max(len(tokenizer.encode(record.output)), longest_label)
        tokens = len(tokenizer.encode(record.prompt, bos=True, eos=True)) + response
        if tokens > block_size + 1:
            problems.append(
                f"{where}: the formatted record is {tokens} tokens with BOS/EOS; model.block_size={block_size} "
                f"fits at most {block_size + 1} (shorten it, or use a longer context, e.g. model=minigpt_long)"
            )
        if labels and record.output not in labels:
            problems.append(f'{where}: "output" {record.output!r} is not one of data.labels={list(labels)}')
        records.append(record)
    if not records and not problems:
        problems.append(f"{path}: the file has no records (expected one JSON object per line)")
    if problems:
        raise DataFileError(problems)
    return records


def split_records(records: list[Record], val_fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Train and validation records by a seeded rule.

    Distinct record texts are ordered by SHA-256 of ``seed`` and the text; the first
    ``ceil(val_fraction * distinct)`` go to validation. So identical records never straddle the
    split, and a record's side does not depend on where it sits in the file.

    Raises:
        DataFileError: When either side would be empty.
    """
    texts = sorted({r.text for r in records}, key=lambda t: hashlib.sha256(f"{seed}\n{t}".encode()).hexdigest())
    held_out = set(texts[: math.ceil(val_fraction * len(texts))])
    val = [r for r in records if r.text in held_out]
    train = [r for r in records if r.text not in held_out]
    if not val or not train:
        raise DataFileError(
            [
                f"data.val_fraction={val_fraction} splits {len(texts)} distinct record(s) into "
                f"{len(train)} train and {len(val)} validation: both need at least one"
            ]
        )
    return train, val


class InstructionDataModule(VerbDataModule):
    """Fine-tuning on instruction records; evaluation on the held-out records and the verb controls.

    Validation and test both use the held-out split: ``ppl`` (the responses), ``regular_ppl``
    (the verb corpus's control set, for forgetting) and, when ``labels`` is given, ``label_acc``:
    the share of held-out records whose own label (with the end-of-text token) scores above
    every other label.

    Args:
        path: The JSON-lines file.
        labels: The closed set of outputs of a classification dataset, or None.
        val_fraction: Share of distinct records held out for validation.
        split_seed: Seed of the train/validation rule.
        **kwargs: ``VerbDataModule`` arguments (the corpus gives the control set).
    """

    def __init__(
        self,
        path: str,
        labels: list[str] | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.path = Path(path)
        self.labels = list(labels) if labels else None
        self.val_fraction = val_fraction
        self.split_seed = split_seed

    @cached_property
    def splits(self) -> tuple[list[Record], list[Record]]:
        """(train, validation) records, read and checked once."""
        return split_records(read_records(self.path, self.block_size, self.labels), self.val_fraction, self.split_seed)

    def _records(self, records: list[Record]) -> LanguageModelingDataset:
        return LanguageModelingDataset([(r.prompt, r.text) for r in records], self.tokenizer, self.block_size, "lm")

    def label_items(self, records: list[Record]) -> list[LabelItem]:
        """The records as label choices (their own label first)."""
        return [
            LabelItem(r.prompt, (r.output, *(label for label in self.labels if label != r.output))) for r in records
        ]

    def sample_prompts(self, count: int = 8) -> list[tuple[str, str]]:
        """The first held-out records as ``(prompt, expected output)`` pairs (logged at each validation)."""
        return [(r.prompt, r.output) for r in self.splits[1][:count]]

    def text_splits(self) -> dict[str, list[tuple[str, str]]]:
        """The records as ``(prompt, text)`` examples: train, and the held-out split (validation and test)."""
        train, held_out = ([(r.prompt, r.text) for r in records] for records in self.splits)
        return {"train": train, "val": held_out, "test": held_out}

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) loader over the training records, one padded row each."""
        return self._loader(self._records(self.splits[0]), shuffle=True)

    def _eval_loaders(self, stage: str) -> list[DataLoader]:
        held_out = self.splits[1]
        datasets: list[Dataset] = [self._records(held_out), self._lm(self.control_splits[stage], "control")]
        if self.labels:
            items = self.label_items(held_out)
            datasets.append(TaskDataset(items, self.tokenizer, self.block_size, kind="labels", eos=True))
        return [self._loader(d) for d in datasets]


def instruction_datamodule(
    stage: str, path: str, labels: list[str] | None = None, val_fraction: float = 0.1, split_seed: int = 0, **kwargs
) -> VerbDataModule:
    """The DataModule of ``data=jsonl``: the records, or the verb corpus when the stage pretrains a base."""
    if stage == "pretrain":  # bases learn language from the verb corpus; the records fine-tune
        return PretrainDataModule(**kwargs)
    return InstructionDataModule(path, labels, val_fraction, split_seed, **kwargs)
