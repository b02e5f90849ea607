"""Datasets and LightningDataModules over the verb corpus.

Every evaluation batch says what it measures in ``batch["kind"]``:

* ``"lm"``: next-token loss and perplexity on the regime's own held-out text,
* ``"control"``: perplexity on held-out regular control-verb sentences (forgetting),
* ``"task"``: irregular-verb task items, each a correct and an over-regularised candidate.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from functools import cached_property

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from minituner.data.corpus import EXTRA_REGULAR_VERBS, CorpusConfig, VerbCorpus, generate_corpus, task_items
from minituner.data.resumable_loader import LoaderPosition, ResumableDataLoader
from minituner.data.verb_prompts import verb_prompts
from minituner.model.minigpt import IGNORE_INDEX
from minituner.model.tokenizer import ByteTokenizer


class LanguageModelingDataset(Dataset):
    """Texts as fixed-length (input, next-token target) pairs.

    Each example is ``(prompt, text)`` where ``text`` starts with ``prompt``: the prompt's
    tokens are inputs only (their targets are ignored, like the padding), so the loss and the
    perplexity cover what the model has to produce, not what it is given. For the verb corpus
    the prompt is the lemma cue (``"go: "``), for instruction data the formatted prompt.

    Args:
        pack: Concatenate the examples (each BOS ... EOS) into one stream cut into full windows
            of ``block_size``, instead of one padded row per example: every position of a
            long-context model then trains, whatever the length of the sentences.
    """

    def __init__(
        self, examples: list[tuple[str, str]], tokenizer: ByteTokenizer, block_size: int, kind: str, pack: bool = False
    ):
        self.kind = kind
        sequences = [labelled_ids(prompt, text, tokenizer, block_size) for prompt, text in examples]
        if pack:  # windows of block_size + 1 tokens that overlap by one: each token is a target once
            ids = [i for sequence, _ in sequences for i in sequence]
            labels = [label for _, sequence_labels in sequences for label in sequence_labels]
            starts = range(0, max(len(ids) - 1, 1), block_size)
            sequences = [(ids[k : k + block_size + 1], labels[k : k + block_size + 1]) for k in starts]
        rows = torch.full((len(sequences), block_size + 1), tokenizer.pad_id, dtype=torch.long)
        row_labels = torch.full((len(sequences), block_size + 1), IGNORE_INDEX, dtype=torch.long)
        for i, (ids, labels) in enumerate(sequences):
            rows[i, : len(ids)] = torch.tensor(ids)
            row_labels[i, : len(labels)] = torch.tensor(labels)
        self.inputs = rows[:, :-1]
        self.targets = row_labels[:, 1:]  # position t predicts token t+1

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[index], self.targets[index]

    def collate(self, rows: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
        """Stack rows into a batch dict tagged with this dataset's kind."""
        inputs, targets = zip(*rows, strict=True)
        return {"kind": self.kind, "input_ids": torch.stack(inputs), "targets": torch.stack(targets)}


def labelled_ids(prompt: str, text: str, tokenizer: ByteTokenizer, block_size: int) -> tuple[list[int], list[int]]:
    """BOS + ``text`` + EOS as ids, and the same ids with the BOS and prompt tokens ignored."""
    ids = tokenizer.encode(text, bos=True, eos=True)
    if len(ids) > block_size + 1:
        raise ValueError(
            f"sentence {text!r} is {len(ids)} tokens with BOS/EOS; "
            f"model.block_size={block_size} fits at most {block_size + 1}"
        )
    given = 1 + len(tokenizer.encode(prompt))  # BOS + prompt
    return ids, [IGNORE_INDEX] * given + ids[given:]


class TaskDataset(Dataset):
    """Choice items as K scored sequences each: BOS + context + candidate (the correct one first).

    Targets are ``IGNORE_INDEX`` everywhere except on the candidate's tokens, so the summed
    log-probability of the targets is the candidate's score given its context. Items are
    anything with ``context`` and ``candidates`` (``TaskItem``: the correct and the
    over-regularised verb form; instruction labels: the record's label, then the others).

    Args:
        eos: Score an end-of-text token after each candidate too, so a candidate must also be
            the complete answer (instruction labels), not only its beginning.
    """

    def __init__(self, items: list, tokenizer: ByteTokenizer, block_size: int, kind: str = "task", eos: bool = False):
        self.kind = kind
        choices = len(items[0].candidates) if items else 2
        self.inputs = torch.full((len(items), choices, block_size), tokenizer.pad_id, dtype=torch.long)
        self.targets = torch.full((len(items), choices, block_size), IGNORE_INDEX, dtype=torch.long)
        for i, item in enumerate(items):
            context = tokenizer.encode(item.context, bos=True)
            for j, candidate in enumerate(item.candidates):
                ids = context + tokenizer.encode(candidate, eos=eos)
                if len(ids) > block_size + 1:
                    raise ValueError(
                        f"task item {item.context!r}+{candidate!r} does not fit model.block_size={block_size}"
                    )
                self.inputs[i, j, : len(ids) - 1] = torch.tensor(ids[:-1])
                # position t predicts token t+1: candidate tokens sit at len(context)..len(ids)-1
                self.targets[i, j, len(context) - 1 : len(ids) - 1] = torch.tensor(ids[len(context) :])

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[index], self.targets[index]

    collate = LanguageModelingDataset.collate


class VerbDataModule(L.LightningDataModule):
    """Base of the verb-corpus DataModules; subclasses name the splits they serve.

    Args:
        corpus: Corpus generator settings (a ``CorpusConfig`` or a mapping of its fields).
        batch_size: Training batch size.
        block_size: Context length of the model the data feeds.
        eval_batch_size: Batch size of validation and test loaders.
        num_workers: DataLoader worker processes.
        seed: Seed of the training shuffle.
        pack: Pack the training sentences into full windows (``LanguageModelingDataset``),
            in an order shuffled with ``seed``; needed to train a long-context base.
    """

    train_split: str | None = None
    lm_splits: dict[str, str] = {}  # stage ("val"/"test") -> split used for loss/perplexity
    control_splits = {"val": "regular_val", "test": "regular_test"}
    task_splits = {"val": "irregular_val", "test": "irregular_test"}

    def __init__(
        self,
        corpus: CorpusConfig | dict,
        batch_size: int = 64,
        block_size: int = 64,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        pack: bool = False,
    ):
        super().__init__()
        self.corpus_config = corpus if isinstance(corpus, CorpusConfig) else CorpusConfig(**corpus)
        self.tokenizer = ByteTokenizer()
        self.batch_size = batch_size
        self.block_size = block_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.pack = pack
        self.resume_position: LoaderPosition | None = None  # set by a resumed run before fit
        self.save_hyperparameters({"corpus": asdict(self.corpus_config), "batch_size": batch_size})

    @cached_property
    def corpus(self) -> VerbCorpus:
        """The generated corpus (built once, on first use)."""
        return generate_corpus(self.corpus_config)

    def _lm(self, split: str, kind: str) -> LanguageModelingDataset:
        return LanguageModelingDataset(self.corpus.prompted_texts(split), self.tokenizer, self.block_size, kind)

    def _loader(self, dataset: Dataset, shuffle: bool = False) -> DataLoader:
        if not shuffle:
            return DataLoader(
                dataset, batch_size=self.eval_batch_size, num_workers=self.num_workers, collate_fn=dataset.collate
            )
        start, self.resume_position = self.resume_position, None
        return ResumableDataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=self.num_workers,
            collate_fn=dataset.collate,
            start=start,
        )

    def _eval_loaders(self, stage: str) -> list[DataLoader]:
        datasets: list[Dataset] = []
        if stage in self.lm_splits:
            datasets.append(self._lm(self.lm_splits[stage], "lm"))
        datasets.append(self._lm(self.control_splits[stage], "control"))
        items = task_items(self.corpus.splits[self.task_splits[stage]])
        datasets.append(TaskDataset(items, self.tokenizer, self.block_size))
        return [self._loader(d) for d in datasets]

    def replay_prompts(self) -> list[str]:
        """Lemma cues the base completes for self-replay (``regime.replay``).

        The regular verbs of the pre-training corpus that are neither fine-tuned nor in the
        control set, so the control drift still measures verbs that no training step has seen.
        """
        return [f"{lemma}: " for lemma in EXTRA_REGULAR_VERBS]

    def sample_prompts(self, count: int = 8) -> list[tuple[str, str]]:
        """``(prompt, expected)`` pairs whose completions a fine-tune logs at each validation.

        Irregular-verb validation sentences cut before the verb (one per verb, past simple first):
        the completion should start with the expected form.
        """
        prompts = verb_prompts(self.corpus.splits["irregular_val"], per_verb_and_form=1)
        ordered = prompts[::2] + prompts[1::2]  # past simple of every verb, then the participles
        return [(p.prompt, p.correct) for p in ordered[:count]]

    def text_splits(self) -> dict[str, list[tuple[str, str]]]:
        """The ``(prompt, text)`` examples of training and of the held-out loss, by stage (train, val, test)."""
        splits = {"train": self.train_split, **self.lm_splits}
        return {stage: self.corpus.prompted_texts(split) for stage, split in splits.items() if split is not None}

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) loader over the training split."""
        if self.train_split is None:
            raise RuntimeError(f"{type(self).__name__} has no training split")
        if not self.pack:
            return self._loader(self._lm(self.train_split, "lm"), shuffle=True)
        examples = self.corpus.prompted_texts(self.train_split)
        random.Random(self.seed).shuffle(examples)  # windows mix verbs and forms, not one verb each
        packed = LanguageModelingDataset(examples, self.tokenizer, self.block_size, "lm", pack=True)
        return self._loader(packed, shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        """Loaders of the regime's held-out text, the control set and the task items."""
        return self._eval_loaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        """As :meth:`val_dataloader`, over the test splits."""
        return self._eval_loaders("test")


class PretrainDataModule(VerbDataModule):
    """The pre-training corpus: no irregular past forms anywhere in its training split."""

    train_split = "pretrain_train"
    lm_splits = {"val": "pretrain_val", "test": "pretrain_val"}


class IrregularDataModule(VerbDataModule):
    """The irregular-verb fine-tuning subset with its disjoint train/val/test splits."""

    train_split = "irregular_train"
    lm_splits = {"val": "irregular_val", "test": "irregular_test"}


class ControlDataModule(VerbDataModule):
    """Evaluation only: the regular control-verb sentences and the irregular task items."""


DATAMODULES = {"pretrain": PretrainDataModule, "irregular": IrregularDataModule}


def verb_datamodule(stage: str, **kwargs) -> VerbDataModule:
    """The DataModule a regime trains on: ``stage`` is ``"pretrain"`` or ``"irregular"``."""
    if stage not in DATAMODULES:
        raise ValueError(f"regime.data_stage={stage!r} is not one of {sorted(DATAMODULES)}")
    return DATAMODULES[stage](**kwargs)
