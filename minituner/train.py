"""The training app: ``minituner-train [overrides]`` (a thin ``@hydra.main`` around ``train``)."""

from __future__ import annotations

import copy
import hashlib
import logging
import signal
import sys
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Checkpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from minituner.adapter_io import save_adapter
from minituner.artifacts import exclusive_lock, write_json_atomic
from minituner.base_store import (
    CONF_DIR,
    LoadedBase,
    base_dir_for,
    base_key,
    base_seed,
    load_base,
    pretrain_recipe,
    save_base,
)
from minituner.checkpoint_io import SafeCheckpointIO
from minituner.config_nodes import lora_config, model_config
from minituner.lora_inject import inject_lora
from minituner.metrics import relative_drift
from minituner.model import MiniGPT
from minituner.module import MiniGPTModule
from minituner.quant_linear import SCHEMES, quantize_model
from minituner.quant_storage import storage_report
from minituner.resume import CHECKPOINT_DIR, plan_resume
from minituner.run_hooks import RunContext, RunHooks, is_main_process, notify
from minituner.validation import ConfigError, validate_config

log = logging.getLogger(__name__)


class RunInterrupted(RuntimeError):
    """A signal ended a run whose result cannot be kept (an unfinished base)."""

    def __init__(self, signal_name: str, message: str):
        self.signal_name = signal_name
        super().__init__(message)


def interrupted_exit_code(signal_name: str) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number."""
    return 128 + signal.Signals[signal_name].value


def _test_metrics(trainer: L.Trainer, module: MiniGPTModule, datamodule) -> dict[str, float]:
    trainer.test(module, datamodule=datamodule, verbose=False)
    return {
        k.removeprefix("test/"): float(v)
        for k, v in trainer.callback_metrics.items()
        if k.startswith("test/")
    }


def build_base(cfg: DictConfig) -> None:
    """Pretrain the base this fine-tuning config needs, with the shipped recipe.

    The build runs as its own ``regime=pretrain`` training in ``<run dir>/base_build``, with the
    same model, data and trainer settings and ``base.seed`` as its seed.
    """
    build_cfg = copy.deepcopy(cfg)
    with open_dict(build_cfg):
        build_cfg.regime = pretrain_recipe(cfg)
        build_cfg.seed = cfg.base.seed
        build_cfg.base.path = None
        build_cfg.quant.scheme = "none"  # a base is trained in full precision; QLoRA quantizes it after
        # in one process: under DDP, rank 0 builds it before the other ranks are launched
        build_cfg.trainer.devices, build_cfg.trainer.strategy = 1, "auto"
        # The fine-tune's own step limits must not cut the base's training short.
        for key in ("max_steps", "max_epochs", "val_check_interval", "check_val_every_n_epoch"):
            build_cfg.trainer[key] = build_cfg.regime[key]
        build_cfg.paths.output_dir = str(Path(cfg.paths.output_dir) / "base_build")
        # a resumed fine-tune whose base build was cut short continues that build too
        resumable = (Path(build_cfg.paths.output_dir) / CHECKPOINT_DIR).is_dir()
        build_cfg.resume = build_cfg.paths.output_dir if cfg.get("resume") and resumable else None
    log.info("no base at %s: pretraining it first", base_dir_for(cfg))
    train(build_cfg)


def prepare_model(cfg: DictConfig) -> tuple[MiniGPT, LoadedBase | None]:
    """The network a run starts from: fresh weights for pretraining, else the (built) base."""
    if not cfg.regime.needs_base:
        L.seed_everything(cfg.seed, workers=True)
        return MiniGPT(model_config(cfg)), None
    directory = base_dir_for(cfg)
    if not (directory / "config.json").is_file():
        # parallel sweep jobs that need the same missing base: the first builds it, the rest wait
        with exclusive_lock(directory.with_name(f".{directory.name}.lock")):
            if not (directory / "config.json").is_file():
                build_base(cfg)
    base = load_base(directory, model_config(cfg))
    L.seed_everything(cfg.seed, workers=True)
    return base.model, base


def save_trained(cfg: DictConfig, model: MiniGPT, base: LoadedBase | None, metrics: dict) -> dict:
    """Write what the regime produced and return its paths, hashes and sizes.

    ``pretrain`` stores the base in the cache, ``full`` the fine-tuned model in
    ``<run dir>/model/``, ``lora`` the adapter in ``<run dir>/adapter/`` (PEFT layout).
    """
    run_dir = Path(cfg.paths.output_dir)
    if base is None:
        directory = base_dir_for(cfg)
        digest = save_base(
            model,
            directory,
            {
                "key": base_key(cfg),
                "seed": base_seed(cfg),
                "corpus": OmegaConf.to_container(cfg.data.corpus, resolve=True),
                "recipe": OmegaConf.to_container(cfg.regime, resolve=True),
                "metrics": {k: v for k, v in metrics.items() if isinstance(v, float)},
            },
        )
        return {"base_dir": str(directory), "base_sha256": digest, "base_bytes": _size(directory)}
    saved = {"base_bytes": _size(base.directory)}
    if cfg.regime.trainable == "lora":
        directory = run_dir / "adapter"
        digest = save_adapter(model, directory, lora_config(cfg), base.directory.name, base.weights_sha256)
        return saved | {
            "adapter_dir": str(directory),
            "adapter_sha256": digest,
            "adapter_bytes": _size(directory),
        }
    directory = run_dir / "model"
    digest = save_base(model, directory, {"finetuned_from": base.weights_sha256})
    return saved | {"model_dir": str(directory), "model_sha256": digest, "model_bytes": _size(directory)}


def quantized_rows(model: MiniGPT) -> list[dict]:
    """Storage rows of the model's quantized linears only."""
    return [r for r in storage_report(model) if r["scheme"] in SCHEMES]


def quantized_storage(model: MiniGPT) -> dict:
    """Bytes and bits per weight of the quantized linears, read from their buffers."""
    rows = quantized_rows(model)
    weights, stored = sum(r["weights"] for r in rows), sum(r["bytes"] for r in rows)
    return {"quantized_linear_bytes": stored, "quantized_bits_per_weight": 8 * stored / weights}


def trainable_sha256(model: MiniGPT) -> str:
    """SHA-256 over the names and bytes of the trainable tensors (what DDP must keep equal on every rank)."""
    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters()):
        if parameter.requires_grad:
            digest.update(name.encode())
            digest.update(parameter.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def rank_digests(trainer: L.Trainer, model: MiniGPT) -> list[str]:
    """Every rank's :func:`trainable_sha256`, rank 0 first; an error if the ranks disagree."""
    digests: list[str | None] = [None] * trainer.world_size
    torch.distributed.all_gather_object(digests, trainable_sha256(model))
    if len(set(digests)) > 1:
        raise RuntimeError(f"the ranks' trained weights differ after fit: {digests}")
    return digests


def _size(directory: Path) -> int:
    """Bytes of the weights file in a base, model or adapter directory."""
    (weights,) = [p for p in directory.iterdir() if p.suffix == ".safetensors"]
    return weights.stat().st_size


def train(cfg: DictConfig) -> dict:
    """Validate ``cfg``, train as its regime says, and write the run's artifacts.

    Callbacks that implement ``RunHooks`` see the run start, the model ready for fit, the end
    (with the metrics) or the failure (with the error, which is then re-raised).

    Returns:
        The metrics written to ``<run dir>/metrics.json``.
    """
    validate_config(cfg)
    checkpoint = None
    if cfg.get("resume"):
        plan = plan_resume(cfg)
        if plan.finished_metrics is not None:
            return plan.finished_metrics
        checkpoint = plan.checkpoint
    callbacks = [instantiate(c) for c in cfg.callbacks.values()] if cfg.get("callbacks") else []
    run = RunContext(cfg=cfg, run_dir=Path(cfg.paths.output_dir), overrides=_overrides())
    try:
        metrics = _run(cfg, callbacks, run, checkpoint)
    except BaseException as error:
        notify(callbacks, "on_run_failed", run, error)
        raise
    notify(callbacks, "on_run_end", run, metrics)
    return metrics


def _run(cfg: DictConfig, callbacks: list, run: RunContext, checkpoint: Path | None) -> dict:
    model, base = prepare_model(cfg)
    run.model, run.base = model, base
    notify(callbacks, "on_run_start", run)
    datamodule = instantiate(cfg.data)
    module = MiniGPTModule(
        model,
        optimizer=instantiate(cfg.regime.optimizer),
        scheduler=instantiate(cfg.regime.scheduler) if cfg.regime.get("scheduler") else None,
    )
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        logger=[instantiate(c) for c in cfg.logger.values()] if cfg.get("logger") else False,
        callbacks=callbacks or None,
        plugins=[SafeCheckpointIO()],  # checkpoints as safetensors + JSON, never pickle
        # on with callbacks.checkpoint only: otherwise Lightning would add a ModelCheckpoint of its own
        enable_checkpointing=any(isinstance(c, Checkpoint) for c in callbacks),
    )
    run.trainer = trainer
    metrics: dict = {"regime": cfg.regime.name, "seed": cfg.seed}
    if base is not None and cfg.evaluate_base:
        trainer.validate(module, datamodule=datamodule, verbose=False)  # step 0 of the val curves
        before = _test_metrics(trainer, module, datamodule)
        metrics.update({f"base_{k}": v for k, v in before.items()})
    if base is not None:
        metrics.update(base_dir=str(base.directory), base_sha256=base.weights_sha256)
    if cfg.quant.scheme != "none":  # quantize the frozen base first, then wrap it with LoRA
        quantize_model(model, cfg.quant.scheme, cfg.quant.check_dequantized)
        if cfg.evaluate_base:
            quantized = _test_metrics(trainer, module, datamodule)
            metrics.update({f"quantized_base_{k}": v for k, v in quantized.items()})
        metrics.update(quant_scheme=cfg.quant.scheme, **quantized_storage(model))
    if cfg.regime.trainable == "lora":
        inject_lora(model, lora_config(cfg))
    notify(callbacks, "on_model_ready", run)

    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint)
    metrics["train_seconds"] = round(time.perf_counter() - started, 2)
    metrics["train_steps"] = trainer.global_step
    for callback in callbacks:
        if isinstance(callback, RunHooks):
            metrics.update(callback.run_metrics())
    if base is None and "stopped_by_signal" in metrics:  # a half-trained base must not enter the cache
        raise RunInterrupted(
            metrics["stopped_by_signal"],
            f"pretraining stopped by {metrics['stopped_by_signal']} at step {trainer.global_step}: "
            "the base is not cached; run again to build it",
        )
    metrics.update(_test_metrics(trainer, module, datamodule))
    # quantized weights are buffers, not parameters: count them so totals compare across regimes
    metrics["total_params"] = model.num_parameters() + sum(r["weights"] for r in quantized_rows(model))
    metrics["trainable_params"] = model.num_parameters(trainable_only=True)
    if trainer.world_size > 1:
        metrics["trainable_sha256_per_rank"] = rank_digests(trainer, model)
    if "base_regular_ppl" in metrics:
        metrics["regular_ppl_drift"] = relative_drift(metrics["base_regular_ppl"], metrics["regular_ppl"])
    if is_main_process():  # under DDP the other ranks hold the same weights (checked above)
        metrics.update(save_trained(cfg, model, base, metrics))
        write_json_atomic(run.run_dir / "metrics.json", metrics)
    log.info("metrics: %s", metrics)
    return metrics


def _overrides() -> list[str]:
    """The command-line overrides of the current Hydra run ([] when called without Hydra)."""
    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    """Console entry point ``minituner-train``."""
    try:
        metrics = train(cfg)
    except ConfigError as error:
        log.error("%s", error)
        sys.exit(2)
    except RunInterrupted as error:
        log.error("%s", error)
        sys.exit(interrupted_exit_code(error.signal_name))
    if "stopped_by_signal" in metrics:  # saved, but unfinished: tell the caller (a scheduler, a shell)
        sys.exit(interrupted_exit_code(metrics["stopped_by_signal"]))


if __name__ == "__main__":
    main()
