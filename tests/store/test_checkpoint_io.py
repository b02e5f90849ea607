"""Checkpoints as safetensors + JSON: what goes in comes back, and nothing needs pickle."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch

from minituner.data.resumable_loader import ResumableDataLoader
from minituner.store.checkpoint_io import (
    CheckpointError,
    load_checkpoint_dir,
    newest_valid_checkpoint,
    save_checkpoint_dir,
)
from minituner.store.rng_state import rng_states, set_rng_states


def test_nested_values_round_trip_exactly(tmp_path):
    shared = torch.randn(3, 4)
    checkpoint = {
        "state_dict": {"a.weight": shared, "tied.weight": shared},  # shared storage is fine (copied)
        "optimizer_states": [
            {
                "state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.ones(2)}},
                "param_groups": [{"betas": (0.9, 0.95), "lr": 1e-3, "params": [0]}],
            }
        ],
        "loops": {"epoch": 2, "nan": math.nan, "none": None, "flag": True, "name": "x"},
        "python_rng": random.getstate(),
    }
    save_checkpoint_dir(checkpoint, tmp_path / "ckpt")
    loaded = load_checkpoint_dir(tmp_path / "ckpt")
    assert torch.equal(loaded["state_dict"]["tied.weight"], shared)
    state = loaded["optimizer_states"][0]
    assert list(state["state"]) == [0] and torch.equal(state["state"][0]["exp_avg"], torch.ones(2))
    assert state["param_groups"][0]["betas"] == (0.9, 0.95)
    assert math.isnan(loaded["loops"].pop("nan")) and loaded["loops"] == {
        "epoch": 2,
        "none": None,
        "flag": True,
        "name": "x",
    }
    assert loaded["python_rng"] == random.getstate()
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {
        "state.json",
        "tensors.safetensors",
        ".minituner-artifact.json",
    }


def test_objects_that_would_need_pickle_are_refused_naming_the_key(tmp_path):
    with pytest.raises(TypeError, match=r"checkpoint.callbacks.thing holds a PosixPath: checkpoints hold only tensors"):
        save_checkpoint_dir({"callbacks": {"thing": Path("x")}}, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


def test_the_newest_whole_checkpoint_is_chosen_and_the_skipped_ones_are_named(tmp_path):
    for step in (3, 6, 9):
        save_checkpoint_dir({"step": step}, tmp_path / f"step-{step:08d}")
    (tmp_path / "step-00000009/tensors.safetensors").write_bytes(b"torn")
    chosen, skipped = newest_valid_checkpoint(tmp_path)
    assert chosen == tmp_path / "step-00000006" and load_checkpoint_dir(chosen)["step"] == 6
    assert len(skipped) == 1 and "step-00000009" in skipped[0]
    assert newest_valid_checkpoint(tmp_path / "none") == (None, [])
    for directory in tmp_path.glob("step-*"):
        (directory / "state.json").unlink()
    with pytest.raises(CheckpointError, match=r"no usable checkpoint in .*\n  - checkpoint .*has no state.json"):
        newest_valid_checkpoint(tmp_path)


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    torch.manual_seed(3)
    random.seed(3)
    save_checkpoint_dir({"rng": rng_states()}, tmp_path / "ckpt")
    expected = (torch.rand(3), random.random())
    torch.manual_seed(99)
    random.seed(99)
    set_rng_states(load_checkpoint_dir(tmp_path / "ckpt")["rng"])
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]


def test_a_loader_resumes_the_epoch_at_its_position():
    def loader(start=None):
        return ResumableDataLoader(
            list(range(20)), batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(5), start=start
        )

    straight = loader()
    first_epoch = [b.tolist() for b in straight]
    second_epoch = [b.tolist() for b in straight]
    interrupted = loader()
    iterator = iter(interrupted)
    next(iterator), next(iterator)
    resumed = loader(start=interrupted.position(2))
    assert [b.tolist() for b in resumed] == first_epoch[2:]
    assert [b.tolist() for b in resumed] == second_epoch  # later epochs draw the same permutations
