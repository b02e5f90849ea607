"""The preview's cache of part F and the reference completions: reused only while every input is the same."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from minituner.reports import reference_measurements as measurements


@pytest.fixture
def measured(monkeypatch, tmp_path):
    """Stand-ins for the expensive measurements that count their calls; the cache logic is the real one."""
    calls = []
    monkeypatch.setattr(measurements, "merge_fidelity", lambda *args: calls.append("F") or {"rows": len(calls)})
    monkeypatch.setattr(measurements, "what_the_model_writes", lambda *args: {"models": {}, "showcase": {}})
    monkeypatch.setattr(measurements, "base_copy", lambda *args, **kwargs: None)
    monkeypatch.setattr(measurements, "instantiate", lambda *args, **kwargs: None)
    adapter = tmp_path / "reference" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_model.safetensors").write_bytes(b"weights v1")
    cfg = OmegaConf.create({"preview": {"quant": "nf4_dq", "batch_size": 8}, "data": {"path": "corpus"}})
    base = SimpleNamespace(weights_sha256="base-1", model=None)
    metrics = {"base_regular_ppl": 1.2, "base_irregular_acc": 0.0, "irregular_acc": 0.9}

    def run(config=cfg, base_model=base):
        return measurements.reference_measurements(config, base_model, adapter, metrics, (None, None))

    cache = adapter.parent / measurements.CACHE_NAME
    return SimpleNamespace(run=run, calls=calls, adapter=adapter, cfg=cfg, cache=cache)


def test_second_call_reads_the_cache(measured):
    first, cached = measured.run()
    assert not cached and measured.calls == ["F"]
    second, cached = measured.run()
    assert cached and second == first and measured.calls == ["F"]
    assert json.loads(measured.cache.read_text())["measurements"] == first


@pytest.mark.parametrize("change", ["adapter", "base", "scheme", "data", "code"])
def test_any_changed_input_measures_again(measured, monkeypatch, change):
    measured.run()
    config, base = measured.cfg.copy(), SimpleNamespace(weights_sha256="base-1", model=None)
    if change == "adapter":
        (measured.adapter / "adapter_model.safetensors").write_bytes(b"weights v2")
    elif change == "base":
        base.weights_sha256 = "base-2"
    elif change == "scheme":
        config.preview.quant = "int4"
    elif change == "data":
        config.data.path = "other corpus"
    else:
        monkeypatch.setattr(measurements, "source_digest", lambda: "edited sources")
    _, cached = measured.run(config, base)
    assert not cached and measured.calls == ["F", "F"]
