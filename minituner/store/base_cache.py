"""The pretrained-base cache: where a base lives, how it is saved and loaded.

A base is a directory with ``model.safetensors`` (weights), ``tokenizer.json`` and
``config.json`` (model shape, the recipe and data that made it, the weights' SHA-256). Its
cache directory is keyed by everything that determines the weights: model shape, corpus
settings, the pre-training recipe, the seed and the trainer limits that cut training short.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model

from minituner.model.minigpt import MiniGPT, MiniGPTConfig
from minituner.model.state_fit import fit_problems
from minituner.model.tokenizer import ByteTokenizer
from minituner.store.artifacts import (
    exclusive_lock,
    open_artifact,
    sha256_file,
    write_directory_atomic,
    write_json_atomic,
)
from minituner.store.keys import content_key

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
# Part of every key: raised when a code change alters what pre-training produces or how the key is
# computed, so that no cache entry made by other code is ever read as this code's.
BASE_FORMAT_VERSION = 3


@dataclass(frozen=True)
class BaseIdentity:
    """Everything that determines a pretrained base's weights; its cache key hashes exactly these.

    Attributes:
        model: The network's shape.
        corpus: The corpus settings (plain values).
        recipe: The pre-training regime, plain, each ``_target_`` cut to its last name.
        seed: The seed pre-training runs with.
        trainer: The trainer limits that cut pre-training short (``max_steps``, ``max_epochs``, ...).
    """

    model: MiniGPTConfig
    corpus: dict
    recipe: dict
    seed: int
    trainer: dict

    def key(self) -> str:
        """12-hex-digit cache key."""
        material = {
            "format_version": BASE_FORMAT_VERSION,
            "model": self.model.to_dict(),
            "corpus": self.corpus,
            "recipe": self.recipe,
            "seed": self.seed,
            "trainer": self.trainer,
        }
        return content_key(material)


def cache_entry(cache_dir: Path, model_name: str, identity: BaseIdentity, dev_run: bool = False) -> Path:
    """The base cache's directory for ``identity``: ``<cache_dir>/<model name>-<key>`` (``-devrun`` for a dev run)."""
    return Path(cache_dir) / f"{model_name}-{identity.key()}{'-devrun' if dev_run else ''}"


def ensure_base(directory: Path, build: Callable[[], None]) -> Path:
    """``directory``, calling ``build()`` first when it holds no base yet.

    Parallel sweep jobs that need the same missing base take a lock beside it: the first
    builds it, the others wait and then find it.
    """
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file():
        with exclusive_lock(directory.with_name(f".{directory.name}.lock")):
            if not (directory / CONFIG_FILE).is_file():
                build()
    return directory


@dataclass
class LoadedBase:
    """A base model read from disk, with where it came from and the hash of its weights."""

    model: MiniGPT
    directory: Path
    weights_sha256: str
    metadata: dict


def save_base(model: MiniGPT, directory: Path, metadata: dict, kind: str = "base", overwrite: bool = False) -> str:
    """Write a base directory atomically (built beside it, then swapped in as a whole).

    Args:
        model: The network whose weights are saved.
        directory: Destination (see ``write_directory_atomic``: only minituner's own ``kind``
            of directory is replaced).
        metadata: Extra fields of ``config.json``.
        kind: ``base`` (pretrained), ``model`` (fine-tuned) or ``merged``: the same format.
        overwrite: Write into a directory holding other files, keeping them.

    Returns:
        The SHA-256 of the weights file.
    """
    digests = []

    def fill(staging: Path) -> None:
        save_model(model, str(staging / WEIGHTS_FILE))
        digests.append(sha256_file(staging / WEIGHTS_FILE))
        write_json_atomic(staging / TOKENIZER_FILE, ByteTokenizer().to_dict())
        write_json_atomic(
            staging / CONFIG_FILE,
            {"model": model.config.to_dict(), "weights_sha256": digests[0], **metadata},
        )

    write_directory_atomic(Path(directory), fill, kind, overwrite)
    (digest,) = digests
    return digest


class BaseCheckpointError(ValueError):
    """A base (or fine-tuned / merged model) directory that cannot be used; the message names the file and why."""


def _stored_config(directory: Path, metadata: dict) -> MiniGPTConfig:
    problems = MiniGPTConfig.problems(metadata.get("model"), prefix="model.")
    if problems:
        raise BaseCheckpointError(f"{directory / CONFIG_FILE} is not a valid base config: " + "; ".join(problems))
    return MiniGPTConfig(**metadata["model"])


# The LM head is the token embedding (one tensor): a weights file holds it under one of the two names.
_TIED_WEIGHTS = {"tok_emb.weight", "lm_head.weight"}


def _check_weight_shapes(directory: Path, config: MiniGPTConfig) -> None:
    """Compare the weights file's header with the model's tensors before any memory is allocated for them."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in MiniGPT(config).state_dict().items()}
    try:
        with safe_open(str(directory / WEIGHTS_FILE), framework="pt") as handle:
            stored = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        raise BaseCheckpointError(f"{directory / WEIGHTS_FILE} is not a valid weights file: {error}") from error
    if len((expected.keys() - stored.keys()) & _TIED_WEIGHTS) == 1:  # the tied tensor under its other name
        expected = {k: v for k, v in expected.items() if k not in _TIED_WEIGHTS or k in stored}
    problems = fit_problems(expected, stored)
    if problems:
        raise BaseCheckpointError(
            f"{directory / WEIGHTS_FILE} does not fit the model in {CONFIG_FILE}: " + "; ".join(problems)
        )


def load_base(directory: Path, expected: MiniGPTConfig | None = None) -> LoadedBase:
    """Read a base directory, checking its files, model shape and weights hash.

    Args:
        directory: A directory written by :func:`save_base`.
        expected: When given, the stored model config must equal it.

    Raises:
        BaseCheckpointError: A missing file (named), an unreadable config, a shape mismatch
            (each differing key listed), a weights file that does not match the hash recorded
            or the model's tensors.
    """
    directory, metadata = open_artifact(
        directory, "base checkpoint", (WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE), CONFIG_FILE, BaseCheckpointError
    )
    stored = _stored_config(directory, metadata)
    if expected is not None and stored != expected:
        diffs = [
            f"model.{k}: base has {v!r}, config asks {getattr(expected, k)!r}"
            for k, v in asdict(stored).items()
            if getattr(expected, k) != v
        ]
        raise BaseCheckpointError(f"base {directory} does not match the model config: " + "; ".join(diffs))
    digest = sha256_file(directory / WEIGHTS_FILE)
    if digest != metadata.get("weights_sha256"):
        raise BaseCheckpointError(
            f"{directory / WEIGHTS_FILE} has SHA-256 {digest}, but {CONFIG_FILE} records "
            f"{metadata.get('weights_sha256')!r}: the file is corrupt or was replaced"
        )
    try:
        ByteTokenizer.load(directory / TOKENIZER_FILE)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise BaseCheckpointError(
            f"{directory / TOKENIZER_FILE} is not a byte tokenizer definition: {error}"
        ) from error
    _check_weight_shapes(directory, stored)
    model = MiniGPT(stored)
    try:  # safetensors only: a tensor file cannot run code the way a pickle can
        load_model(model, str(directory / WEIGHTS_FILE), strict=True)
    except (SafetensorError, RuntimeError, ValueError) as error:
        raise BaseCheckpointError(
            f"{directory / WEIGHTS_FILE} is not a valid weights file for this model: {error}"
        ) from error
    return LoadedBase(model, directory, digest, metadata)
