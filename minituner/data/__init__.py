"""What the model reads: the verb corpus, its datamodules, JSONL instruction data, a resumable loader."""

from minituner._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "corpus": ["CorpusConfig", "VerbCorpus", "generate_corpus", "task_items"],
        "datamodules": ["VerbDataModule", "PretrainDataModule", "IrregularDataModule", "verb_datamodule"],
        "instructions": ["DataFileError", "InstructionDataModule", "read_records", "instruction_datamodule"],
        "resumable_loader": ["LoaderPosition", "ResumableDataLoader"],
    },
)
