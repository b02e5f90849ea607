"""minituner: LoRA and QLoRA fine-tuning of MiniGPT with PyTorch Lightning and Hydra.

The subpackages, lowest layer first (each imports only those before it; ``tests/test_tree.py``
checks it): ``model`` (network, tokenizer), ``quant`` (quantized frozen weights), ``store`` (files
on disk: atomic writes, base cache, checkpoints, resume, provenance), ``lora`` (adapters),
``data`` (corpus, datamodules), ``memory`` (calculator, ledger), ``generation`` (sampling, the
verb task as text), ``config`` (shipped configs, validation: the only layer below the apps and the
pipeline that reads a Hydra config), ``callbacks`` (Lightning callbacks and the run hooks),
``training`` (LightningModule, the run pipeline), ``reports`` (generated REPORT.md and plots) and
``apps`` (one module per console script; nothing in the library imports them).
"""
