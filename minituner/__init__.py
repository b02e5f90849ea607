"""minituner: LoRA and QLoRA fine-tuning of MiniGPT with PyTorch Lightning and Hydra."""

from omegaconf import OmegaConf

from minituner.examples import example_file

# `${example_file:sentiment.jsonl}` in a config: the shipped example, wherever minituner is installed
OmegaConf.register_new_resolver("example_file", example_file, replace=True)
