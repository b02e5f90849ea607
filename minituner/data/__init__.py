"""What the model reads: the verb corpus, its datamodules, JSONL instruction data, a resumable loader."""

from minituner.data.corpus import CorpusConfig, VerbCorpus, generate_corpus, task_items
from minituner.data.datamodules import IrregularDataModule, PretrainDataModule, VerbDataModule, verb_datamodule
from minituner.data.instructions import DataFileError, InstructionDataModule, instruction_datamodule, read_records
from minituner.data.resumable_loader import LoaderPosition, ResumableDataLoader
from minituner.data.verb_prompts import VerbPrompt, verb_prompts

__all__ = [
    "CorpusConfig",
    "DataFileError",
    "InstructionDataModule",
    "IrregularDataModule",
    "LoaderPosition",
    "PretrainDataModule",
    "ResumableDataLoader",
    "VerbCorpus",
    "VerbDataModule",
    "VerbPrompt",
    "generate_corpus",
    "instruction_datamodule",
    "read_records",
    "task_items",
    "verb_datamodule",
    "verb_prompts",
]
