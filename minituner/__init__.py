"""minituner: LoRA and QLoRA fine-tuning of MiniGPT with PyTorch Lightning and Hydra.

The rooms (the README's "Layout and data flow" draws how a run passes through them):
``model`` (network, tokenizer), ``data`` (corpus, datamodules), ``lora`` (adapters), ``quant``
(quantized frozen weights), ``memory`` (calculator, ledger), ``training`` (LightningModule, the
run pipeline), ``store`` (files on disk: atomic writes, base cache, checkpoints, resume,
provenance), ``config`` (shipped configs, validation), ``reports`` (generated REPORT.md and
plots), ``callbacks`` (Lightning callbacks) and ``apps`` (one module per console script; nothing
in the library imports them).
"""

from minituner.config.resolvers import register_resolvers

register_resolvers()
