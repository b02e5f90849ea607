"""``trainer=ddp_cpu``: two gloo processes train LoRA and QLoRA; only rank 0 writes; ranks agree.

The comparison run is one process with the same global batch (2 x 16 rows = 32). The two runs
see the same examples per step but in other groupings and with other dropout masks, and each
rank averages its loss over its own tokens, so metrics match within a tolerance, not exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minituner.training.pipeline import train as train_here
from tests.helpers import compose_config, run_train, save_tiny_base

RUN = [
    "model=tiny",
    "regime.max_steps=12",
    "regime.max_epochs=-1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=2",
    "~callbacks.progress_bar",
    "trainer.enable_progress_bar=false",
    "callbacks.checkpoint.every_n_steps=5",
]
TOLERANCE = {"ppl": 0.02, "regular_ppl": 0.02}  # relative


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_tiny_base(tmp_path_factory.mktemp("base") / "tiny")


def train(run_dir: Path, base: Path, *overrides: str) -> dict:
    done = run_train(run_dir.parent, run_dir.name, f"base.path={base}", *RUN, *overrides, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize("quant", ["none", "nf4_dq"])
def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path, base, quant):
    ddp = train(tmp_path / "ddp", base, "trainer=ddp_cpu", "regime.batch_size=16", f"quant={quant}")
    # the reference is one ordinary process: this one will do
    single = train_here(
        compose_config([f"base.path={base}", *RUN, "regime.batch_size=32", f"quant={quant}"], tmp_path, run="single")
    )

    digests = ddp["trainable_sha256_per_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]  # DDP kept the ranks' adapters identical
    assert ddp["train_steps"] == single["train_steps"] == 12
    for key, tolerance in TOLERANCE.items():
        assert ddp[key] == pytest.approx(single[key], rel=tolerance), key
    # only rank 0 wrote: one adapter, one metrics file, no per-rank copies
    written = {p.name for p in (tmp_path / "ddp").iterdir()}
    assert {"adapter", "metrics.json", "manifest.json", "memory.json", "checkpoints"} <= written
    assert not {p for p in (tmp_path / "ddp").rglob("*") if "rank" in p.name and p.suffix != ".log"}
