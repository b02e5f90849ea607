"""One training run from a composed config: ``train(cfg)`` (the library behind ``minituner-train``).

Validate, resume or start, build the base when it is missing (a pretraining run of its own),
quantize the frozen base, inject LoRA, fit, test, and write what the regime produced.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Checkpoint
from omegaconf import DictConfig, OmegaConf

from minituner.callbacks.graceful_stop import GracefulStop
from minituner.callbacks.run_hooks import RunContext, RunHooks, is_main_process, notify
from minituner.config.base_request import base_dir_for, base_identity, base_seed, shipped_dir
from minituner.config.errors import ConfigError
from minituner.config.identity import resumable_config
from minituner.config.nodes import activation_checkpointing, lora_config, model_config
from minituner.config.validation import validate_config
from minituner.lora.adapter_io import RESIDUAL_FILE, WEIGHTS_FILE, save_adapter
from minituner.lora.inject import inject_lora, select_targets
from minituner.lora.layer import LoRALinear
from minituner.lora.residual_init import RESIDUAL_INITS, ResidualStart, freeze_residuals, residual_starts
from minituner.model.minigpt import MiniGPT
from minituner.model.precision import cast_frozen_base
from minituner.quant.linear import quantize_model
from minituner.quant.storage import quantized_rows, quantized_storage
from minituner.store.artifacts import weights_bytes, write_json_atomic
from minituner.store.base_cache import LoadedBase, ensure_base, load_base, save_base
from minituner.store.resume import ResumeError, ResumePlan, plan_resume
from minituner.store.run_directory import run_lock
from minituner.store.shipped import install_shipped_base
from minituner.store.tensor_cache import cached_tensors
from minituner.training.base_build import base_build_config
from minituner.training.checkpoint_plugin import SafeCheckpointIO
from minituner.training.distributed import rank_digests
from minituner.training.metrics import relative_drift
from minituner.training.module import MiniGPTModule
from minituner.training.replay import ReplaySet, build_replay_set

log = logging.getLogger(__name__)


class RunInterrupted(RuntimeError):
    """A signal ended a run whose result cannot be kept (an unfinished base)."""

    def __init__(self, signal_name: str, message: str):
        self.signal_name = signal_name
        super().__init__(message)


def interrupted_exit_code(signal_name: str) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number."""
    return 128 + signal.Signals[signal_name].value


def _build_base(cfg: DictConfig) -> None:
    """Install the shipped base when its key is this config's, else pretrain it."""
    if install_shipped_base(shipped_dir(cfg), base_dir_for(cfg)):
        return
    log.info("no base at %s: pretraining it first", base_dir_for(cfg))
    train(base_build_config(cfg))


def prepare_model(cfg: DictConfig) -> tuple[MiniGPT, LoadedBase | None]:
    """The network a run starts from: fresh weights for pretraining, else the base (built if missing)."""
    base = None
    if cfg.regime.needs_base:
        base = load_base(ensure_base(base_dir_for(cfg), lambda: _build_base(cfg)), model_config(cfg))
    L.seed_everything(cfg.seed, workers=True)
    model = MiniGPT(model_config(cfg)) if base is None else base.model
    model.activation_checkpointing = activation_checkpointing(cfg)
    return model, base


def save_trained(
    cfg: DictConfig, model: MiniGPT, base: LoadedBase | None, metrics: dict, starts: dict[str, ResidualStart]
) -> dict:
    """Write what the regime produced and return its paths, hashes and sizes.

    ``pretrain`` stores the base in the cache, ``full`` the fine-tuned model in
    ``<run dir>/model/``, ``lora`` the adapter in ``<run dir>/adapter/`` (PEFT layout; with the
    frozen weights of a PiSSA, OLoRA or LoftQ start beside it).
    """
    run_dir = Path(cfg.paths.output_dir)
    if base is None:
        directory = base_dir_for(cfg)
        digest = save_base(
            model,
            directory,
            {
                "key": base_identity(cfg).key(),
                "seed": base_seed(cfg),
                "corpus": OmegaConf.to_container(cfg.data.corpus, resolve=True),
                "recipe": OmegaConf.to_container(cfg.regime, resolve=True),
                "metrics": {k: v for k, v in metrics.items() if isinstance(v, float)},
            },
        )
        return {"base_dir": str(directory), "base_sha256": digest, "base_bytes": weights_bytes(directory)}
    saved = {"base_bytes": weights_bytes(base.directory)}
    if cfg.regime.trainable == "lora":
        directory = run_dir / "adapter"
        digest = save_adapter(model, directory, lora_config(cfg), base.directory.name, base.weights_sha256, starts)
        saved |= {
            "adapter_dir": str(directory),
            "adapter_sha256": digest,
            "adapter_bytes": (directory / WEIGHTS_FILE).stat().st_size,
        }
        if starts:  # the frozen weights the adapter was trained against, beside it
            saved["residual_bytes"] = (directory / RESIDUAL_FILE).stat().st_size
        return saved
    directory = run_dir / "model"
    digest = save_base(model, directory, {"finetuned_from": base.weights_sha256}, kind="model")
    return saved | {"model_dir": str(directory), "model_sha256": digest, "model_bytes": weights_bytes(directory)}


def train(cfg: DictConfig) -> dict:
    """Validate ``cfg``, train as its regime says, and write the run's artifacts.

    Callbacks that implement ``RunHooks`` see the run start, the model ready for fit, the end
    (with the metrics) or the failure (with the error, which is then re-raised).

    Returns:
        The metrics written to ``<run dir>/metrics.json``.

    Raises:
        ConfigError: ``cfg`` is invalid (every problem listed), before anything is written.
        RunDirectoryBusy: Another live process holds the run directory.
    """
    validate_config(cfg)
    run_dir = Path(cfg.paths.output_dir)
    # One process per run directory (DDP's other ranks are the same run: rank 0 holds it for them).
    with run_lock(run_dir) if is_main_process() else contextlib.nullcontext():
        plan = resume_plan(cfg, run_dir)
        if plan.finished_metrics is not None:
            return plan.finished_metrics
        callbacks = [instantiate(c) for c in cfg.callbacks.values()] if cfg.get("callbacks") else []
        _warn_if_unprotected(callbacks)
        run = RunContext(cfg=cfg, run_dir=run_dir, overrides=_overrides())
        try:
            metrics = _run(cfg, callbacks, run, plan.checkpoint)
        except BaseException as error:
            notify(callbacks, "on_run_failed", run, error)
            raise
        notify(callbacks, "on_run_end", run, metrics)
        return metrics


def resume_plan(cfg: DictConfig, run_dir: Path) -> ResumePlan:
    """How this run starts: from step 0, from ``resume=``'s newest checkpoint, or not at all (finished)."""
    if not cfg.get("resume"):
        return ResumePlan()
    try:
        return plan_resume(run_dir, cfg.resume, resumable_config(cfg))
    except ResumeError as error:
        raise ConfigError(error.problems) from error


def _warn_if_unprotected(callbacks: list) -> None:
    """Say so when the chosen callbacks leave out checkpoints or the graceful stop (e.g. ``callbacks=none``)."""
    if not any(isinstance(c, Checkpoint) for c in callbacks):
        log.warning("no checkpoint callback (callbacks.checkpoint): this run cannot be resumed with resume=<run dir>")
    if not any(isinstance(c, GracefulStop) for c in callbacks):
        log.warning("no graceful_stop callback: SIGTERM/SIGINT end this run at once, without saving")


def _run(cfg: DictConfig, callbacks: list, run: RunContext, checkpoint: Path | None) -> dict:
    model, base = prepare_model(cfg)
    run.model, run.base = model, base
    notify(callbacks, "on_run_start", run)
    datamodule = instantiate(cfg.data)
    module = lightning_module(cfg, model, base, datamodule)
    trainer = run.trainer = build_trainer(cfg, callbacks)
    evaluator = Evaluator(trainer, module, datamodule)
    metrics: dict = {"regime": cfg.regime.name, "seed": cfg.seed}
    frozen, starts = prepare_frozen_base(cfg, model, base, evaluator)
    metrics |= frozen
    notify(callbacks, "on_model_ready", run)
    metrics |= fit(trainer, module, datamodule, checkpoint, callbacks)
    if base is None and "stopped_by_signal" in metrics:  # a half-trained base must not enter the cache
        raise RunInterrupted(
            metrics["stopped_by_signal"],
            f"pretraining stopped by {metrics['stopped_by_signal']} at step {trainer.global_step}: "
            "the base is not cached; run again to build it",
        )
    metrics |= evaluator.test()
    metrics |= parameter_counts(model)
    if trainer.world_size > 1:
        metrics["trainable_sha256_per_rank"] = rank_digests(trainer, model)
    if "base_regular_ppl" in metrics:
        metrics["regular_ppl_drift"] = relative_drift(metrics["base_regular_ppl"], metrics["regular_ppl"])
    if is_main_process():  # under DDP the other ranks hold the same weights (checked above)
        metrics |= save_trained(cfg, model, base, metrics, starts)
        write_json_atomic(run.run_dir / "metrics.json", metrics)
    log.info("metrics: %s", metrics)
    return metrics


@dataclass
class Evaluator:
    """The test pass of a run's trainer, module and data (the base's figures before fine-tuning too)."""

    trainer: L.Trainer
    module: MiniGPTModule
    datamodule: L.LightningDataModule

    def test(self) -> dict[str, float]:
        """Test metrics, without their ``test/`` prefix."""
        self.trainer.test(self.module, datamodule=self.datamodule, verbose=False)
        metrics = self.trainer.callback_metrics
        return {k.removeprefix("test/"): float(v) for k, v in metrics.items() if k.startswith("test/")}

    def validate(self) -> None:
        """One validation pass: step 0 of the validation curves."""
        self.trainer.validate(self.module, datamodule=self.datamodule, verbose=False)


def lightning_module(cfg: DictConfig, model: MiniGPT, base: LoadedBase | None, datamodule) -> MiniGPTModule:
    """The LightningModule: the model, the regime's optimizer and schedule, and its self-replay set."""
    return MiniGPTModule(
        model,
        optimizer=instantiate(cfg.regime.optimizer),
        scheduler=instantiate(cfg.regime.scheduler) if cfg.regime.get("scheduler") else None,
        replay=_replay_set(cfg, model, base, datamodule),  # written by the full-precision base, before quantization
    )


def build_trainer(cfg: DictConfig, callbacks: list) -> L.Trainer:
    """The Trainer of ``cfg.trainer`` with the run's loggers and callbacks; checkpoints as safetensors + JSON."""
    return instantiate(
        cfg.trainer,
        logger=[instantiate(c) for c in cfg.logger.values()] if cfg.get("logger") else False,
        callbacks=callbacks or None,
        plugins=[SafeCheckpointIO()],  # never pickle
        # on with callbacks.checkpoint only: otherwise Lightning would add a ModelCheckpoint of its own
        enable_checkpointing=any(isinstance(c, Checkpoint) for c in callbacks),
    )


def prepare_frozen_base(
    cfg: DictConfig, model: MiniGPT, base: LoadedBase | None, evaluator: Evaluator
) -> tuple[dict, dict[str, ResidualStart]]:
    """Evaluate the base, quantize and cast its frozen weights, inject LoRA, evaluate the model as stored.

    The order is fixed: a PiSSA, OLoRA or LoftQ start is taken from the fp32 weights and leaves its
    residual in them; the frozen base is then quantized from its fp32 weights, cast, and wrapped with
    LoRA. Returns the metrics of these steps (the base's test figures, its storage; ``quantized_base_*``
    / ``stored_base_*``: the model at step 0) and the residual starts by layer name (empty for the
    other inits).
    """
    metrics = {}
    if base is not None and cfg.evaluate_base:
        evaluator.validate()
        metrics |= {f"base_{k}": v for k, v in evaluator.test().items()}
    if base is not None:
        metrics |= {"base_dir": str(base.directory), "base_sha256": base.weights_sha256}
    adapted, starts = adapt_frozen_base(cfg, model, base is not None)
    metrics |= adapted
    quantized = cfg.quant.scheme != "none"
    if cfg.evaluate_base and (quantized or cfg.base.dtype != "float32"):  # the base as stored, adapters at step 0
        prefix = "quantized_base_" if quantized else "stored_base_"
        metrics |= {f"{prefix}{k}": v for k, v in evaluator.test().items()}
    return metrics, starts


def adapt_frozen_base(cfg: DictConfig, model: MiniGPT, from_base: bool = True) -> tuple[dict, dict[str, ResidualStart]]:
    """The model as it starts training: residual start, quantized, cast, adapters injected (no evaluation).

    Returns the storage metrics of a quantized base and the residual starts by layer name.
    """
    metrics, starts = {}, {}
    if cfg.regime.trainable == "lora" and cfg.lora.init in RESIDUAL_INITS:
        starts = _residual_starts(cfg, model)
        freeze_residuals(model, starts)
    if cfg.quant.scheme != "none":
        quantize_model(model, cfg.quant.scheme, cfg.quant.check_dequantized, cfg.quant.block_size)
        metrics |= {"quant_scheme": cfg.quant.scheme, **quantized_storage(model)}
    if from_base:
        metrics["base_dtype"] = cfg.base.dtype
        cast_frozen_base(model, cfg.base.dtype)  # what is left dense, in base.dtype (a no-op for float32)
    if cfg.regime.trainable == "lora":
        inject_lora(model, lora_config(cfg), starts)
    return metrics, starts


def _residual_starts(cfg: DictConfig, model: MiniGPT) -> dict[str, ResidualStart]:
    """PiSSA / OLoRA / LoftQ factors of the adapted layers, from the fp32 base (validated up front)."""
    config = lora_config(cfg)
    scaling = LoRALinear.scaling_of(config.r, config.alpha, config.use_rslora)
    return residual_starts(
        model,
        select_targets(model, config),
        config.init,
        config.r,
        scaling,
        cfg.quant.scheme,
        cfg.quant.block_size,
        config.loftq_iters,
    )


def fit(trainer: L.Trainer, module: MiniGPTModule, datamodule, checkpoint: Path | None, callbacks: list) -> dict:
    """``trainer.fit`` (from ``checkpoint`` when resuming); its time, steps and the callbacks' run metrics."""
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint)
    metrics = {"train_seconds": round(time.perf_counter() - started, 2), "train_steps": trainer.global_step}
    for callback in callbacks:
        if isinstance(callback, RunHooks):
            metrics |= callback.run_metrics()
    return metrics


def parameter_counts(model: MiniGPT) -> dict[str, int]:
    """Total and trainable parameters; quantized weights are buffers, counted so totals compare across regimes."""
    total = model.num_parameters() + sum(r["weights"] for r in quantized_rows(model))
    return {"total_params": total, "trainable_params": model.num_parameters(trainable_only=True)}


def _replay_set(cfg: DictConfig, model: MiniGPT, base: LoadedBase | None, datamodule) -> ReplaySet | None:
    """The base's own sentences for ``regime.replay`` (None when the regime has none or its weight is 0).

    The same base, cues, settings and seed always write the same sentences (on any thread count),
    so they are cached under ``<paths.outputs_dir>/replay/`` (``store/tensor_cache.py``).
    """
    replay = cfg.regime.get("replay")
    if not replay or not replay.weight:
        return None
    started = time.perf_counter()
    # The set never depends on the run's length: the first steps of a short and a long run are the same.
    prompts = datamodule.replay_prompts()
    settings = {
        "sentences": replay.sentences,
        "temperature": replay.temperature,
        "max_len": replay.max_len,
        "seed": cfg.seed,
    }

    def write() -> dict:
        written = build_replay_set(
            model, prompts, cfg.model.block_size, weight=replay.weight, batch_size=replay.batch_size, **settings
        )
        return {"inputs": written.inputs, "targets": written.targets}

    where = ""
    if base is None:
        rows = write()
    else:
        inputs = {"base_sha256": base.weights_sha256, "prompts": prompts, "block_size": cfg.model.block_size}
        rows, path, cached = cached_tensors(Path(cfg.paths.outputs_dir) / "replay", "replay", inputs | settings, write)
        where = f" ({'read from' if cached else 'kept in'} {path})"
    replay_set = ReplaySet(rows["inputs"], rows["targets"], replay.weight, replay.batch_size, cfg.seed)
    log.info(
        "self-replay: the base wrote %d sentences%s in %.1f s, e.g. %s",
        len(replay_set.inputs),
        where,
        time.perf_counter() - started,
        replay_set.texts(datamodule.tokenizer)[:3],
    )
    return replay_set


def _overrides() -> list[str]:
    """The command-line overrides of the current Hydra run ([] when called without Hydra)."""
    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)
