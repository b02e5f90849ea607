"""Checks of the ``trainer`` node against this machine: the accelerator, device count and precision it asks for.

Run with the other config checks, before anything is built, so ``trainer=gpu`` on a machine
without CUDA is one clear config error (exit 2) instead of Lightning's exception mid-setup.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
# Lightning 2.x's precision values (the long names, then the short aliases it also accepts).
PRECISIONS = (
    "64-true",
    "32-true",
    "16-true",
    "bf16-true",
    "16-mixed",
    "bf16-mixed",
    "transformer-engine",
    "transformer-engine-float16",
    "64",
    "32",
    "16",
    "bf16",
    64,
    32,
    16,
)
_FP16_MIXED = ("16-mixed", "16", 16)
_BF16 = ("bf16-mixed", "bf16-true", "bf16")


def requested_devices(devices: object) -> int | None | str:
    """How many devices ``trainer.devices`` asks for: a count, None for ``auto`` / -1 (all), or a problem text."""
    if devices in ("auto", -1, "-1"):
        return None
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
        return devices
    if isinstance(devices, list | tuple) and devices and all(isinstance(d, int) and d >= 0 for d in devices):
        return len(devices)
    return "must be a positive integer, a list of device indices, -1 (all) or 'auto'"


def _cuda_devices() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def trainer_problems(trainer: DictConfig) -> list[str]:
    """What this machine cannot do of ``trainer.accelerator`` / ``trainer.devices`` / ``trainer.precision``."""
    accelerator = OmegaConf.select(trainer, "accelerator")
    devices = OmegaConf.select(trainer, "devices")
    precision = OmegaConf.select(trainer, "precision")
    problems = []
    if accelerator not in ACCELERATORS:
        problems.append(f"trainer.accelerator={accelerator!r} is not allowed: must be one of {list(ACCELERATORS)}")
    count = requested_devices(OmegaConf.to_object(devices) if OmegaConf.is_config(devices) else devices)
    if isinstance(count, str):
        problems.append(f"trainer.devices={devices!r} is not allowed: {count}")
        count = None
    cuda = _cuda_devices()
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and cuda > 0)
    if accelerator in ("gpu", "cuda") and cuda == 0:
        problems.append(
            f"trainer.accelerator={accelerator!r} needs a CUDA GPU and torch sees none (torch {torch.__version__}, "
            f"built with CUDA {torch.version.cuda}): use trainer=cpu (or trainer=ddp_cpu)"
        )
    elif on_gpu and count is not None and count > cuda:
        problems.append(f"trainer.devices={devices!r} asks for {count} GPUs; this machine has {cuda}")
    if accelerator == "mps" and not torch.backends.mps.is_available():
        problems.append("trainer.accelerator='mps' needs Apple's Metal backend, which torch does not find here")
    if precision not in PRECISIONS:
        problems.append(f"trainer.precision={precision!r} is not allowed: must be one of {list(PRECISIONS)}")
    elif precision in _FP16_MIXED and not on_gpu and accelerator != "mps":
        problems.append(
            f"trainer.precision={precision!r} (fp16 mixed precision) is not supported on the CPU (Lightning would "
            "silently switch to bf16-mixed): use precision=bf16-mixed or 32-true"
        )
    elif precision in _BF16 and on_gpu and cuda and not torch.cuda.is_bf16_supported():
        problems.append(f"trainer.precision={precision!r} needs bf16 support, which this GPU lacks: use 16-mixed")
    return problems
