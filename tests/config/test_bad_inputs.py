"""One table of bad inputs (configs, adapter directories, base checkpoints, data files, pickles).

Every case must fail with an error that names the problem, and leave the good artifacts that
were there before (a base, an adapter, a run's metrics) byte for byte as they were.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException

from minituner.config.validation import ConfigError, validate_config
from minituner.data.instructions import DataFileError, read_records
from minituner.lora.adapter_io import AdapterError, load_adapter, save_adapter
from minituner.lora.inject import LoRAConfig, inject_lora
from minituner.lora.merge import merge_to_checkpoint
from minituner.model.minigpt import MiniGPT, MiniGPTConfig
from minituner.store.base_cache import BaseCheckpointError, load_base, save_base
from minituner.store.checkpoint_io import CheckpointError, load_checkpoint_dir, save_checkpoint_dir
from minituner.store.ownership import OwnershipError
from minituner.training.module import MiniGPTModule
from tests.helpers import compose_config

TINY = MiniGPTConfig(n_layer=1, n_head=2, d_model=16, d_ff=32)
QV = LoRAConfig(target_modules="attn_qv", r=4)


class Payload:
    """Unpickling this creates the marker file: proof that a pickle was (not) executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@dataclass
class Workspace:
    """Good artifacts made before each case, and scratch copies the cases may break."""

    root: Path
    base: Path  # the good base
    adapter: Path  # the good adapter (trained on that base)
    checkpoint: Path  # a good training checkpoint of that adapter
    marker: Path  # must never appear

    def tiny(self) -> MiniGPT:
        return load_base(self.base, TINY).model

    def broken_copy(self, source: Path, name: str) -> Path:
        """A copy of a good directory to break (the original stays intact)."""
        copy = self.root / "scratch" / name
        copy.mkdir(parents=True)
        for path in source.iterdir():
            (copy / path.name).write_bytes(path.read_bytes())
        return copy

    def pickle_bytes(self) -> bytes:
        return pickle.dumps({"weight": Payload(self.marker)})

    def data_file(self, *lines: str) -> Path:
        path = self.root / "scratch" / "data.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in lines))
        return path


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    torch.manual_seed(0)
    model = MiniGPT(TINY)
    keep = tmp_path / "keep"
    digest = save_base(model, keep / "base", {"note": "good base"})
    inject_lora(model, QV)
    save_adapter(model, keep / "adapter", QV, "base", digest)
    module = MiniGPTModule(model, optimizer=torch.optim.AdamW)
    checkpoint = {
        "state_dict": {k: v for k, v in module.state_dict().items() if k in module.trainable_names()},
        "optimizer_states": [{"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": []}],
    }
    save_checkpoint_dir(checkpoint, keep / "checkpoint")
    (keep / "run").mkdir()
    (keep / "run/metrics.json").write_text(json.dumps({"irregular_acc": 0.9}))
    return Workspace(tmp_path, keep / "base", keep / "adapter", keep / "checkpoint", tmp_path / "PWNED")


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def config_case(*overrides: str | Callable[[Workspace], str]) -> Callable[[Workspace], object]:
    """Compose and validate; an override may be a function of the workspace (paths of its artifacts)."""

    def run(ws: Workspace):
        resolved = [o(ws) if callable(o) else o for o in overrides]
        validate_config(compose_config(resolved, ws.root / "cfg"))

    return run


def merge_case(
    adapter: Callable[[Workspace], Path], out: Callable[[Workspace], Path], base: Callable[[Workspace], Path]
) -> Callable[[Workspace], object]:
    return lambda ws: merge_to_checkpoint(adapter(ws), out(ws), base(ws))


def adapter_case(breaker: Callable[[Workspace, Path], None], model=None, **kwargs) -> Callable[[Workspace], object]:
    def run(ws: Workspace):
        directory = ws.broken_copy(ws.adapter, "adapter")
        breaker(ws, directory)
        target = model(ws) if model else ws.tiny()
        load_adapter(target, directory, **kwargs)

    return run


def base_case(breaker: Callable[[Workspace, Path], None], expected=TINY) -> Callable[[Workspace], object]:
    def run(ws: Workspace):
        directory = ws.broken_copy(ws.base, "base")
        breaker(ws, directory)
        load_base(directory, expected)

    return run


def checkpoint_case(breaker: Callable[[Workspace, Path], None], lora: LoRAConfig = QV) -> Callable[[Workspace], object]:
    def run(ws: Workspace):
        directory = ws.broken_copy(ws.checkpoint, "checkpoint")
        breaker(ws, directory)
        checkpoint = load_checkpoint_dir(directory)
        model = ws.tiny()
        inject_lora(model, lora)
        MiniGPTModule(model, optimizer=torch.optim.AdamW).on_load_checkpoint(checkpoint)

    return run


def pickled_checkpoint(ws: Workspace, directory: Path) -> None:
    """Replace the tensors by a pickle and record its hash, so only the format check is left."""
    payload = ws.pickle_bytes()
    (directory / "tensors.safetensors").write_bytes(payload)
    state = json.loads((directory / "state.json").read_text())
    state["tensors_sha256"] = hashlib.sha256(payload).hexdigest()
    (directory / "state.json").write_text(json.dumps(state))


def data_case(*lines: str, block_size: int = 64, labels=None) -> Callable[[Workspace], object]:
    def run(ws: Workspace):
        read_records(ws.data_file(*lines), block_size, labels)

    return run


def edit_json(name: str, change: Callable[[dict], dict]) -> Callable[[Workspace, Path], None]:
    def breaker(ws: Workspace, directory: Path) -> None:
        path = directory / name
        path.write_text(json.dumps(change(json.loads(path.read_text()))))

    return breaker


def write(name: str, content: Callable[[Workspace, bytes], bytes]) -> Callable[[Workspace, Path], None]:
    def breaker(ws: Workspace, directory: Path) -> None:
        path = directory / name
        path.write_bytes(content(ws, path.read_bytes()))

    return breaker


def remove(name: str) -> Callable[[Workspace, Path], None]:
    return lambda ws, directory: (directory / name).unlink()


def nan_adapter(ws: Workspace, directory: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(directory / "adapter_model.safetensors")
    first = sorted(tensors)[0]
    tensors[first][0, 0] = float("nan")
    save_file(tensors, directory / "adapter_model.safetensors")


def pickled_base(ws: Workspace, directory: Path) -> None:
    """Replace the weights by a pickle and record its hash, as a tampered download would."""
    payload = ws.pickle_bytes()
    (directory / "model.safetensors").write_bytes(payload)
    config = json.loads((directory / "config.json").read_text())
    config["weights_sha256"] = hashlib.sha256(payload).hexdigest()
    (directory / "config.json").write_text(json.dumps(config))


def rank_8_model(ws: Workspace) -> MiniGPT:
    model = ws.tiny()
    inject_lora(model, LoRAConfig(target_modules="attn_qv", r=8))
    return model


def all_linear_model(ws: Workspace) -> MiniGPT:
    model = ws.tiny()
    inject_lora(model, LoRAConfig(target_modules="all_linear", r=4))
    return model


GOOD_RECORD = '{"instruction": "Rate.", "input": "ok", "output": "positive"}'
CASES = [
    # configs: validated after composition, before any tensor is built
    (
        "config: batch size 0",
        config_case("regime.batch_size=0"),
        ConfigError,
        r"regime.batch_size=0 is not allowed: must be a positive integer",
    ),
    (
        "config: negative lr",
        config_case("regime.optimizer.lr=-1"),
        ConfigError,
        r"regime.optimizer.lr=-1 is not allowed: must be a number > 0",
    ),
    (
        "config: heads",
        config_case("model.n_head=3"),
        ConfigError,
        r"model.n_head=3 does not divide model.d_model=64: allowed n_head values are \[1, 2, 4",
    ),
    (
        "config: dropout",
        config_case("model.dropout=1.5"),
        ConfigError,
        r"model.dropout=1.5 is not allowed: must be in \[0, 1\)",
    ),
    ("config: rank 0", config_case("lora.r=0"), ConfigError, r"lora.r=0 is not allowed"),
    ("config: targets", config_case("lora.target_modules=[nothing]"), ConfigError, r"nothing"),
    (
        "config: quantized full FT",
        config_case("regime=full", "quant=nf4"),
        ConfigError,
        r"quant.scheme='nf4' with regime='full' is not allowed: a quantized base is frozen",
    ),
    (
        "config: negative seed",
        config_case("seed=-1"),
        ConfigError,
        r"seed=-1 is not allowed: must be a non-negative integer",
    ),
    (
        "config: no stop",
        config_case("regime.max_steps=-1", "regime.max_epochs=-1"),
        ConfigError,
        r"regime.max_steps and regime.max_epochs are both -1",
    ),
    (
        "config: base recipe",
        config_case("base.recipe=lora"),
        ConfigError,
        r"base.recipe='lora' is not allowed: must be one of \['pretrain', 'pretrain_packed'\]",
    ),
    ("config: unset data path", config_case("data=jsonl"), ConfigError, r"data.path is not set"),
    (
        "config: val fraction",
        config_case("data=jsonl", "data.path=x", "data.val_fraction=0"),
        ConfigError,
        r"data.val_fraction=0 is not allowed: must be a number in \(0, 1\)",
    ),
    ("config: eval batch", config_case("data.eval_batch_size=0"), ConfigError, r"data.eval_batch_size=0"),
    (
        "config: unknown key",
        config_case("regime.learning_rate=1"),
        ConfigCompositionException,
        r"Could not override 'regime.learning_rate'",
    ),
    (
        "config: added unknown key",
        config_case("+lora.rank=4"),
        ConfigError,
        r"lora.rank \(4\) is not a known key: nothing reads it; allowed here: \['alpha', 'bias'",
    ),
    (
        "config: misspelt trainer argument",
        config_case("+trainer.accumulate_grad_batch=2"),
        ConfigError,
        r"did you mean trainer.accumulate_grad_batches\?",
    ),
    (
        "config: several at once",
        config_case("regime.batch_size=0", "lora.r=0", "seed=-1"),
        ConfigError,
        r"invalid configuration \(3 problem\(s\)\)",
    ),
    # hardware the trainer asks for (checked against this machine, before Lightning sees it)
    *(
        [
            (
                "config: GPU without CUDA",
                config_case("trainer=gpu"),
                ConfigError,
                r"trainer.accelerator='gpu' needs a CUDA GPU and torch sees none",
            )
        ]
        if not torch.cuda.is_available()
        else []
    ),
    (
        "config: fp16 mixed precision on the CPU",
        config_case("trainer.precision=16-mixed"),
        ConfigError,
        r"trainer.precision='16-mixed' \(fp16 mixed precision\) is not supported on the CPU",
    ),
    (
        "config: unknown precision",
        config_case("trainer.precision=fp8"),
        ConfigError,
        r"trainer.precision='fp8' is not allowed: must be one of \['64-true'",
    ),
    ("config: zero devices", config_case("trainer.devices=0"), ConfigError, r"trainer.devices=0 is not allowed"),
    (
        "config: unknown accelerator",
        config_case("trainer.accelerator=tpu"),
        ConfigError,
        r"trainer.accelerator='tpu' is not allowed",
    ),
    # paths: the base a run reads, the directories it writes (the workspace's good artifacts stand in for the user's)
    (
        "config: base.path at a directory that is not a base",
        config_case(lambda ws: f"base.path={ws.root / 'keep/run'}"),
        ConfigError,
        r"base.path='.*keep/run' is not a base directory: it has no model.safetensors, config.json, "
        r"tokenizer.json \(found: metrics.json\)",
    ),
    (
        "config: base.path at an adapter",
        config_case(lambda ws: f"base.path={ws.adapter}"),
        ConfigError,
        r"is not a base directory: .*\(found: minituner's adapter\) \(an adapter goes on its base with regime=lora",
    ),
    (
        "config: base.path missing, no build",
        config_case(lambda ws: f"base.path={ws.root / 'nowhere'}", "base.build_if_missing=false"),
        ConfigError,
        r"base.path='.*nowhere' does not exist and base.build_if_missing",
    ),
    (
        "config: base.path below a file",
        config_case(lambda ws: f"base.path={ws.root / 'keep/run/metrics.json/base'}"),
        ConfigError,
        r"the base would be built there\): cannot write a pretrained base to .*metrics.json is a file",
    ),
    (
        "config: pretraining over a directory that is not a base",
        config_case("regime=pretrain", lambda ws: f"base.path={ws.root / 'keep/run'}"),
        ConfigError,
        r"refusing to write a pretrained base to .*keep/run: it is not minituner's \(it holds metrics.json\)",
    ),
    (
        "config: pretraining over an adapter",
        config_case("regime=pretrain", lambda ws: f"base.path={ws.adapter}"),
        ConfigError,
        r"it is minituner's adapter .*only its own base directories",
    ),
    (
        "config: run directory that holds other files",
        config_case(lambda ws: f"paths.output_dir={ws.root / 'keep/run'}"),
        ConfigError,
        r"the run directory .*keep/run \(hydra.run.dir\) is not empty and is not a minituner run \(it holds "
        r"metrics.json\)",
    ),
    (
        "config: resume a directory that is not a run",
        config_case(lambda ws: f"resume={ws.adapter}", lambda ws: f"paths.output_dir={ws.adapter}"),
        ConfigError,
        r"resume='.*adapter': .* is not a run directory",
    ),
    # minituner-merge's arguments (checked before any work)
    (
        "merge: into a directory that is not minituner's",
        merge_case(lambda ws: ws.adapter, lambda ws: ws.root / "keep/run", lambda ws: ws.base),
        OwnershipError,
        r"refusing to write a merged model to .*keep/run: it is not minituner's",
    ),
    (
        "merge: over the base",
        merge_case(lambda ws: ws.adapter, lambda ws: ws.base, lambda ws: ws.base),
        OwnershipError,
        r"it is minituner's base \(a pretrained base\), and minituner replaces only its own merged directories",
    ),
    (
        "merge: inside the adapter",
        merge_case(lambda ws: ws.adapter, lambda ws: ws.adapter / "merged", lambda ws: ws.base),
        OwnershipError,
        r"it is inside the adapter",
    ),
    (
        "merge: not an adapter",
        merge_case(lambda ws: ws.base, lambda ws: ws.root / "out", lambda ws: ws.base),
        AdapterError,
        r"adapter .*base has no adapter_config.json",
    ),
    (
        "merge: --base not a base",
        merge_case(lambda ws: ws.adapter, lambda ws: ws.root / "out", lambda ws: ws.adapter),
        BaseCheckpointError,
        r"base checkpoint .*adapter has no model.safetensors",
    ),
    # adapter directories
    ("adapter: no config", adapter_case(remove("adapter_config.json")), AdapterError, r"has no adapter_config.json"),
    (
        "adapter: no weights",
        adapter_case(remove("adapter_model.safetensors")),
        AdapterError,
        r"has no adapter_model.safetensors",
    ),
    (
        "adapter: truncated",
        adapter_case(write("adapter_model.safetensors", lambda ws, b: b[: len(b) // 2])),
        AdapterError,
        r"adapter_model.safetensors is truncated or corrupt",
    ),
    (
        "adapter: config not JSON",
        adapter_case(write("adapter_config.json", lambda ws, b: b"{not json")),
        AdapterError,
        r"adapter_config.json is not valid JSON",
    ),
    (
        "adapter: unknown field",
        adapter_case(edit_json("adapter_config.json", lambda c: c | {"surprise": 1})),
        AdapterError,
        r"unknown field 'surprise'",
    ),
    (
        "adapter: unsupported feature",
        adapter_case(edit_json("adapter_config.json", lambda c: c | {"modules_to_save": ["lm_head"]})),
        AdapterError,
        r"modules_to_save=\['lm_head'\] is a PEFT feature minituner does not support",
    ),
    (
        "adapter: rank",
        adapter_case(lambda ws, d: None, model=rank_8_model),
        AdapterError,
        r"rank mismatch loading .*model has r=8, adapter has r=4",
    ),
    (
        "adapter: targets",
        adapter_case(lambda ws, d: None, model=all_linear_model),
        AdapterError,
        r"does not fit this model: missing \[.*k_proj",
    ),
    (
        "adapter: keys left unapplied",
        adapter_case(edit_json("adapter_config.json", lambda c: c | {"target_modules": ["q_proj"]})),
        AdapterError,
        r"unexpected \(would be left unapplied\) \[.*v_proj",
    ),
    (
        "adapter: other base",
        adapter_case(lambda ws, d: None, base_sha256="cd" * 32),
        AdapterError,
        r"was trained on base sha256:[0-9a-f]{64} \(base\), but this base is sha256:cdcd",
    ),
    ("adapter: NaN", adapter_case(nan_adapter), AdapterError, r"holds NaN/Inf values in \["),
    (
        "adapter: pickle payload",
        adapter_case(write("adapter_model.safetensors", lambda ws, b: ws.pickle_bytes())),
        AdapterError,
        r"adapter_model.safetensors is truncated or corrupt",
    ),
    # base checkpoints
    (
        "base: another model config",
        base_case(lambda ws, d: None, expected=MiniGPTConfig(n_layer=2, n_head=2, d_model=16, d_ff=32)),
        ValueError,
        r"does not match the model config: model.n_layer: base has 1, config asks 2",
    ),
    (
        "base: replaced weights",
        base_case(write("model.safetensors", lambda ws, b: b[:-4] + b"\0\0\0\0")),
        ValueError,
        r"model.safetensors has SHA-256 [0-9a-f]{64}, but config.json records",
    ),
    ("base: missing weights", base_case(remove("model.safetensors")), BaseCheckpointError, r"has no model.safetensors"),
    (
        "base: config not JSON",
        base_case(write("config.json", lambda ws, b: b"{")),
        ValueError,
        r"config.json is not valid JSON",
    ),
    (
        "base: pickle payload",
        base_case(pickled_base),
        ValueError,
        r"model.safetensors is not a valid weights file: Error while deserializing header",
    ),
    # training checkpoints (resume)
    (
        "checkpoint: torn tensors",
        checkpoint_case(write("tensors.safetensors", lambda ws, b: b[: len(b) // 2])),
        CheckpointError,
        r"tensors.safetensors does not match the SHA-256 recorded in state.json",
    ),
    (
        "checkpoint: state not JSON",
        checkpoint_case(write("state.json", lambda ws, b: b[:-3])),
        CheckpointError,
        r"state.json is not valid JSON",
    ),
    ("checkpoint: no state", checkpoint_case(remove("state.json")), CheckpointError, r"has no state.json"),
    (
        "checkpoint: other format",
        checkpoint_case(edit_json("state.json", lambda s: s | {"format": "torch"})),
        CheckpointError,
        r"format 'torch' is not 'minituner-checkpoint/1'",
    ),
    (
        "checkpoint: pickle payload",
        checkpoint_case(pickled_checkpoint),
        CheckpointError,
        r"checkpoint .*: unreadable \(SafetensorError",
    ),
    (
        "checkpoint: another model config",
        checkpoint_case(lambda ws, d: None, lora=LoRAConfig(target_modules="attn_qv", r=8)),
        ValueError,
        r"wrong shapes \(found vs model\) \[.model.blocks.0.attn.q_proj.lora_A.weight: \(4, 16\) vs",
    ),
    # data files
    ("data: invalid JSON", data_case(GOOD_RECORD, "{oops"), DataFileError, r"data.jsonl:2: invalid JSON"),
    ("data: missing output", data_case('{"instruction": "x"}'), DataFileError, r'data.jsonl:1: missing "output"'),
    ("data: empty file", data_case(), DataFileError, r"data.jsonl: the file has no records"),
    (
        "data: too long",
        data_case(GOOD_RECORD, block_size=32),
        DataFileError,
        r"data.jsonl:1: the formatted record is 61 tokens with BOS/EOS; model.block_size=32 fits at most 33",
    ),
    (
        "data: not a label",
        data_case(GOOD_RECORD, labels=["yes", "no"]),
        DataFileError,
        r"""data.jsonl:1: "output" 'positive' is not one of data.labels=\['yes', 'no'\]""",
    ),
]


def test_the_table_has_at_least_thirty_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("name,case,error,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named_and_changes_nothing(ws, name, case, error, message):
    before = snapshot(ws.root / "keep")
    with pytest.raises(error, match=message):
        case(ws)
    assert snapshot(ws.root / "keep") == before  # the good base, adapter and run are untouched
    assert not ws.marker.exists()  # no pickle was ever executed
