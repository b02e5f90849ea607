"""The on-disk cache of costly tensors: read back only for the same inputs and the same sources."""

from __future__ import annotations

import torch

from minituner.store import tensor_cache
from minituner.store.provenance import source_digest
from minituner.store.tensor_cache import cached_tensors


def counting(values: list[int]):
    calls = []

    def compute() -> dict[str, torch.Tensor]:
        calls.append(1)
        return {"rows": torch.tensor(values), "more": torch.arange(6).view(2, 3).t()}  # one of them strided

    return compute, calls


def test_tensors_are_computed_once_then_read_back_equal(tmp_path):
    compute, calls = counting([1, 2, 3])
    first, path, cached = cached_tensors(tmp_path, "rows", {"seed": 1}, compute)
    again, path_again, cached_again = cached_tensors(tmp_path, "rows", {"seed": 1}, compute)
    assert (cached, cached_again, len(calls)) == (False, True, 1)
    assert path == path_again and path.parent == tmp_path and path.name.startswith("rows-")
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_other_inputs_or_edited_sources_never_read_a_stale_file(tmp_path, monkeypatch):
    compute, calls = counting([1])
    _, path, _ = cached_tensors(tmp_path, "rows", {"seed": 1}, compute)
    _, other_seed, cached = cached_tensors(tmp_path, "rows", {"seed": 2}, compute)
    assert not cached and other_seed != path
    monkeypatch.setattr(tensor_cache, "source_digest", lambda: "edited sources")
    _, edited, cached = cached_tensors(tmp_path, "rows", {"seed": 1}, compute)
    assert not cached and edited not in (path, other_seed) and len(calls) == 3


def test_an_unreadable_cache_file_is_computed_and_written_again(tmp_path, caplog):
    compute, calls = counting([4, 5])
    _, path, _ = cached_tensors(tmp_path, "rows", {"seed": 1}, compute)
    path.write_bytes(b"torn")
    tensors, same_path, cached = cached_tensors(tmp_path, "rows", {"seed": 1}, compute)
    assert not cached and same_path == path and len(calls) == 2 and "unreadable cache file" in caplog.text
    assert torch.equal(tensors["rows"], torch.tensor([4, 5]))
    assert cached_tensors(tmp_path, "rows", {"seed": 1}, compute)[2]  # rewritten: read back next time


def test_source_digest_changes_with_any_source_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    before = source_digest(tmp_path)
    assert source_digest(tmp_path) == before
    (tmp_path / "sub" / "b.py").write_text("y = 3\n")
    assert source_digest(tmp_path) != before
