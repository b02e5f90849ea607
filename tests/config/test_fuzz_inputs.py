"""Fuzzed bad inputs: mutated real artifacts, data lines and override values load, or fail with minituner's named error.

Each property starts from a real artifact (a base, an adapter, a training checkpoint written by
minituner), mutates a copy (JSON fields and types, tensor-file bytes and headers) and asserts
that loading it either works or raises the loader's own error naming the file or key: never an
unhandled ``KeyError`` / ``TypeError`` / ``AttributeError`` or a library's traceback; and that
no other file changed. ``MINITUNER_FUZZ_EXAMPLES`` (default 300 per property, derandomised so
CI runs the same examples every time) sets how many examples each property tries; set it to run
more, with fresh random examples each run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from minituner.config.errors import ConfigError
from minituner.config.validation import validate_config
from minituner.data.instructions import DataFileError, read_records
from minituner.lora.adapter_io import AdapterError, load_adapter, save_adapter
from minituner.lora.inject import LoRAConfig, inject_lora
from minituner.model.minigpt import MiniGPT, MiniGPTConfig
from minituner.store.base_cache import BaseCheckpointError, load_base, save_base
from minituner.store.checkpoint_io import CheckpointError, load_checkpoint_dir, save_checkpoint_dir
from minituner.training.module import MiniGPTModule
from tests.helpers import compose_config

EXAMPLES = int(os.environ.get("MINITUNER_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize="MINITUNER_FUZZ_EXAMPLES" not in os.environ,
    database=None,
    suppress_health_check=list(HealthCheck),
)
TINY = MiniGPTConfig(n_layer=1, n_head=2, d_model=16, d_ff=32)
QV = LoRAConfig(target_modules="attn_qv", r=4)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> Iterator[Path]:
    """A real base, an adapter trained on it and a training checkpoint; checked unchanged after the module."""
    root = tmp_path_factory.mktemp("originals")
    torch.manual_seed(0)
    model = MiniGPT(TINY)
    digest = save_base(model, root / "base", {"note": "fuzz"})
    inject_lora(model, QV)
    save_adapter(model, root / "adapter", QV, "base", digest)
    module = MiniGPTModule(model, optimizer=torch.optim.AdamW)
    state = {k: v for k, v in module.state_dict().items() if k in module.trainable_names()}
    save_checkpoint_dir({"state_dict": state, "global_step": 3, "minituner": {"config": {"seed": 1}}}, root / "ckpt")
    before = snapshot(root)
    yield root
    assert snapshot(root) == before  # no attempt changed a file it did not own


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A fresh directory for one example, deleted afterwards (hypothesis reuses a test's fixtures)."""
    root = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        yield root
    finally:
        shutil.rmtree(root)


@contextmanager
def scratch_copy(source: Path) -> Iterator[Path]:
    """A copy of ``source`` to break, deleted afterwards."""
    with scratch_dir() as root:
        yield Path(shutil.copytree(source, root / source.name))


def mutate_json(data: st.DataObject, content: object) -> object:
    """``content`` with one value set, deleted or replaced at a path drawn into it (or replaced as a whole)."""
    if not isinstance(content, dict | list) or not content or data.draw(st.integers(0, 9)) == 0:
        return data.draw(json_values)
    keys = list(content) if isinstance(content, dict) else list(range(len(content)))
    key = data.draw(st.sampled_from(keys))
    action = data.draw(st.sampled_from(["deeper", "set", "delete"]))
    if action == "deeper":
        content[key] = mutate_json(data, content[key])
    elif action == "set":
        content[key] = data.draw(json_values)
    else:
        del content[key]
    return content


def mutate_json_file(data: st.DataObject, path: Path) -> None:
    path.write_text(json.dumps(mutate_json(data, json.loads(path.read_text()))))


def mutate_bytes(data: st.DataObject, path: Path) -> None:
    """Flip, cut or insert bytes, or rewrite a safetensors header's JSON (dtype, shape, offsets)."""
    blob = bytearray(path.read_bytes())
    action = data.draw(st.sampled_from(["flip", "truncate", "insert", "header"]))
    if action == "flip":
        for position in data.draw(st.lists(st.integers(0, len(blob) - 1), min_size=1, max_size=8)):
            blob[position] ^= data.draw(st.integers(1, 255))
    elif action == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif action == "insert":
        position = data.draw(st.integers(0, len(blob)))
        blob[position:position] = data.draw(st.binary(min_size=1, max_size=16))
    else:
        (size,) = struct.unpack("<Q", blob[:8])
        header = mutate_json(data, json.loads(blob[8 : 8 + size]))
        encoded = json.dumps(header).encode()
        blob = bytearray(struct.pack("<Q", len(encoded)) + encoded + blob[8 + size :])
    path.write_bytes(bytes(blob))


def rehash(path: Path, record: Path, key: str) -> None:
    """Record ``path``'s new SHA-256 where its loader checks it, so the loader reads past the hash check."""
    content = json.loads(record.read_text())
    content[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    record.write_text(json.dumps(content))


def named(error: Exception, *names: object) -> bool:
    return any(str(name) in str(error) for name in names)


@FUZZ
@given(data=st.data(), target=st.sampled_from(["adapter_config.json", "adapter_model.safetensors"]))
def test_a_mutated_adapter_loads_or_is_refused_by_name(originals, data, target):
    with scratch_copy(originals / "adapter") as directory:
        (mutate_json_file if target.endswith(".json") else mutate_bytes)(data, directory / target)
        model = load_base(originals / "base", TINY).model
        try:
            load_adapter(model, directory)
        except AdapterError as error:
            assert named(error, directory, target), error


@FUZZ
@given(data=st.data(), target=st.sampled_from(["config.json", "model.safetensors", "tokenizer.json"]))
def test_a_mutated_base_loads_or_is_refused_by_name(originals, data, target):
    with scratch_copy(originals / "base") as directory:
        (mutate_json_file if target.endswith(".json") else mutate_bytes)(data, directory / target)
        if target == "model.safetensors" and data.draw(st.booleans()):
            rehash(directory / target, directory / "config.json", "weights_sha256")  # a tampered, re-hashed file
        try:
            load_base(directory, TINY if data.draw(st.booleans()) else None)
        except BaseCheckpointError as error:
            assert named(error, directory, target), error


@FUZZ
@given(data=st.data(), target=st.sampled_from(["state.json", "tensors.safetensors"]))
def test_a_mutated_checkpoint_loads_or_is_refused_by_name(originals, data, target):
    with scratch_copy(originals / "ckpt") as directory:
        if target == "state.json":
            mutate_json_file(data, directory / target)
        else:
            mutate_bytes(data, directory / target)
            if data.draw(st.booleans()):
                rehash(directory / target, directory / "state.json", "tensors_sha256")
        model = load_base(originals / "base", TINY).model
        inject_lora(model, QV)
        try:
            checkpoint = load_checkpoint_dir(directory)
            MiniGPTModule(model, optimizer=torch.optim.AdamW).on_load_checkpoint(checkpoint)
        except CheckpointError as error:
            assert named(error, directory, "checkpoint"), error


record_fields = st.fixed_dictionaries({}, optional={k: json_values for k in ("instruction", "input", "output")})
lines = st.one_of(
    st.text(max_size=40),
    record_fields.map(json.dumps),
    st.builds(lambda r: json.dumps({"instruction": "Rate.", "output": "positive"} | r), record_fields),
)


@FUZZ
@given(content=st.lists(lines, max_size=5), labels=st.none() | st.just(["positive", "negative"]))
def test_fuzzed_instruction_lines_load_or_are_refused_by_line(content, labels):
    with scratch_dir() as directory:
        path = directory / "data.jsonl"
        path.write_bytes("\n".join(content).encode("utf-8", errors="surrogatepass"))
        try:
            read_records(path, 64, labels)
        except DataFileError as error:
            assert error.problems and all(p.startswith(f"{path}") for p in error.problems), error


OVERRIDE_KEYS = [
    "regime.batch_size",
    "regime.max_steps",
    "regime.optimizer.lr",
    "regime.replay.weight",
    "lora.r",
    "lora.alpha",
    "lora.dropout",
    "lora.target_modules",
    "lora.bias",
    "model.n_head",
    "model.d_model",
    "model.dropout",
    "model.vocab_size",
    "seed",
    "base.seed",
    "base.recipe",
    "quant.scheme",
    "trainer.precision",
    "trainer.devices",
    "trainer.accelerator",
    "data.eval_batch_size",
]
override_values = st.one_of(
    st.integers(-(2**31), 2**31).map(str),
    st.floats(allow_nan=False).map(repr),
    st.sampled_from(["null", "true", "false", "[]", "[1,2]", "[q_proj]", "{}", "auto", "-1", "0", "1e-3", "''", "abc"]),
    st.text(alphabet="abcdefgh0123456789_-.,[]{}:'\" ", max_size=12),
)


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    """The default training config, composed once (Hydra's compose costs ~0.2 s; the checks ~0.07 s)."""
    return compose_config([], tmp_path_factory.mktemp("fuzz-overrides"))


@FUZZ
@given(key=st.sampled_from(OVERRIDE_KEYS), value=override_values)
def test_fuzzed_override_values_validate_or_are_refused_by_key(composed, key, value):
    # Parsed by Hydra's own override parser and applied as Hydra applies a value override.
    try:
        (override,) = OverridesParser.create().parse_overrides([f"{key}={value}"])
    except OverrideParseException:  # the override's syntax: Hydra's CLI prints it with the override
        return
    if override.is_sweep_override():  # only a multirun takes those (-m)
        return
    cfg = copy.deepcopy(composed)
    OmegaConf.update(cfg, key, override.value(), merge=True)
    try:
        validate_config(cfg)
    except ConfigError as error:
        assert error.problems and named(error, key), error
