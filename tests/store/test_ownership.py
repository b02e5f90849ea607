"""Writers replace only minituner's own artifact of the same kind; everything else is refused and left byte for byte."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from minituner.lora.adapter_io import save_adapter
from minituner.lora.inject import LoRAConfig, inject_lora
from minituner.lora.merge import merge_to_checkpoint
from minituner.model.minigpt import MiniGPT, MiniGPTConfig
from minituner.store.artifacts import remove_artifact
from minituner.store.base_cache import load_base, save_base
from minituner.store.checkpoint_io import save_checkpoint_dir
from minituner.store.ownership import MARKER_FILE, OwnershipError, artifact_kind, check_writable
from tests.helpers import TINY_SHAPE, users_directory

TINY = MiniGPTConfig(**TINY_SHAPE)
QV = LoRAConfig(target_modules="attn_qv", r=4)


def tiny() -> MiniGPT:
    torch.manual_seed(0)
    return MiniGPT(TINY)


def write_base(kind: str) -> Callable[..., str]:
    return lambda directory, **kw: save_base(tiny(), directory, {}, kind=kind, **kw)


def write_adapter(directory: Path, **kw) -> str:
    model = tiny()
    inject_lora(model, QV)
    return save_adapter(model, directory, QV, "base", "ab" * 32)


def write_checkpoint(directory: Path, **kw) -> None:
    save_checkpoint_dir({"state_dict": tiny().state_dict(), "step": 3}, directory)


WRITERS = {
    "base": write_base("base"),
    "model": write_base("model"),
    "merged": write_base("merged"),
    "adapter": write_adapter,
    "checkpoint": write_checkpoint,
}


def snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``directory``: content hash and mode."""
    return {
        str(p.relative_to(directory)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("kind", WRITERS)
def test_each_writer_refuses_a_directory_it_did_not_make_and_leaves_every_byte(tmp_path, kind):
    target = users_directory(tmp_path / "mine")
    before = snapshot(target)
    refused = rf"refusing to write .* to {target}: it is not minituner's \(it holds notes.md, sub\).*new or empty"
    with pytest.raises(OwnershipError, match=refused):
        WRITERS[kind](target)
    assert snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging directory left behind


@pytest.mark.parametrize("kind", WRITERS)
def test_each_writer_replaces_its_own_kind_and_refuses_other_kinds(tmp_path, kind):
    WRITERS[kind](tmp_path / "artifact")
    assert artifact_kind(tmp_path / "artifact") == kind
    WRITERS[kind](tmp_path / "artifact")  # its own kind: replaced
    for other in WRITERS:
        if other != kind:
            before = snapshot(tmp_path / "artifact")
            with pytest.raises(OwnershipError, match=rf"it is minituner's {kind} .* only its own {other} directories"):
                WRITERS[other](tmp_path / "artifact")
            assert snapshot(tmp_path / "artifact") == before


@pytest.mark.parametrize("kind", WRITERS)
def test_an_artifact_with_a_users_file_added_is_no_longer_replaced(tmp_path, kind):
    WRITERS[kind](tmp_path / "artifact")
    (tmp_path / "artifact" / "README.md").write_text("what I trained\n")
    before = snapshot(tmp_path / "artifact")
    with pytest.raises(OwnershipError, match=r"but also holds files minituner did not write \(README.md\)"):
        WRITERS[kind](tmp_path / "artifact")
    assert snapshot(tmp_path / "artifact") == before
    assert not remove_artifact(tmp_path / "artifact", kind)  # nor deleted
    assert snapshot(tmp_path / "artifact") == before


@pytest.mark.parametrize("kind", WRITERS)
def test_files_share_one_mode(tmp_path, kind):
    WRITERS[kind](tmp_path / "artifact")
    expected = 0o666 & ~_umask()
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "artifact").iterdir()}
    assert set(modes.values()) == {expected}, modes  # safetensors alone would write 0600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_empty_directories_and_missing_paths_are_written(tmp_path):
    (tmp_path / "empty").mkdir()
    write_adapter(tmp_path / "empty")
    write_adapter(tmp_path / "new" / "nested")
    assert artifact_kind(tmp_path / "empty") == artifact_kind(tmp_path / "new" / "nested") == "adapter"


def test_a_file_or_a_link_in_the_way_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OwnershipError, match="a file is there"):
        write_adapter(tmp_path / "file")
    users_directory(tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OwnershipError, match="a symbolic link is there"):
        write_adapter(tmp_path / "link")
    with pytest.raises(OwnershipError, match="is a file, not a directory"):
        write_adapter(tmp_path / "file" / "below")
    assert (tmp_path / "file").read_text() == "x"


def test_a_directory_written_before_markers_existed_is_still_recognised(tmp_path):
    write_adapter(tmp_path / "old")
    (tmp_path / "old" / MARKER_FILE).unlink()
    assert artifact_kind(tmp_path / "old") == "adapter"
    write_adapter(tmp_path / "old")  # replaced, and now marked
    assert (tmp_path / "old" / MARKER_FILE).is_file()
    save_base(tiny(), tmp_path / "base", {"finetuned_from": "x"}, kind="model")
    (tmp_path / "base" / MARKER_FILE).unlink()
    assert artifact_kind(tmp_path / "base") == "model"


def test_overwrite_writes_into_a_users_directory_and_keeps_its_files(tmp_path):
    target = users_directory(tmp_path / "mine")
    theirs = snapshot(target)
    write_base("merged")(target, overwrite=True)
    after = snapshot(target)
    assert {k: v for k, v in after.items() if k in theirs} == theirs
    assert {"model.safetensors", "config.json", "tokenizer.json", MARKER_FILE} <= after.keys()
    write_base("merged")(target, overwrite=True)  # again: its own files are replaced, the user's kept
    assert {k: v for k, v in snapshot(target).items() if k in theirs} == theirs
    with pytest.raises(OwnershipError):
        write_base("merged")(target)  # without the flag: still refused (it holds the user's files)


def test_overwrite_never_replaces_a_users_file_of_the_same_name(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "config.json").write_text('{"mine": true}')
    with pytest.raises(OwnershipError, match=r"\['config.json'\] would be replaced and minituner did not write them"):
        write_base("merged")(target, overwrite=True)
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]
    assert (target / "config.json").read_text() == '{"mine": true}'


def test_overwrite_never_turns_one_kind_of_artifact_into_another(tmp_path):
    write_base("base")(tmp_path / "base")
    with pytest.raises(OwnershipError, match="it is minituner's base"):
        check_writable(tmp_path / "base", "merged", overwrite=True)


def test_merge_into_a_users_directory_is_refused_before_any_work(tmp_path):
    base_dir = tmp_path / "base"
    write_base("base")(base_dir)
    model = tiny()
    inject_lora(model, QV)
    save_adapter(model, tmp_path / "adapter", QV, "base", load_base(base_dir).weights_sha256)
    target = users_directory(tmp_path / "my_dir")
    before = snapshot(target)
    with pytest.raises(OwnershipError, match="it is not minituner's"):
        merge_to_checkpoint(tmp_path / "adapter", target, base_dir)
    assert snapshot(target) == before
    for inside in (tmp_path / "adapter" / "merged", base_dir / "merged"):
        with pytest.raises(OwnershipError, match="it is inside the"):
            merge_to_checkpoint(tmp_path / "adapter", inside, base_dir)
        assert not inside.exists()
    merge_to_checkpoint(tmp_path / "adapter", target, base_dir, overwrite=True)
    assert {k: v for k, v in snapshot(target).items() if k in before} == before
    assert artifact_kind(target) == "merged"
