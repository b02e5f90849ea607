"""The shipped base and reference adapter: never stale, installed instead of built, carried by the wheel."""

from __future__ import annotations

import json

from minituner.config.base_request import base_dir_for, base_identity, reference_run_name
from minituner.store.artifacts import sha256_file
from minituner.store.base_cache import load_base
from minituner.store.shipped import BASES, REFERENCE_ADAPTERS, SHIPPED_DIR, read_provenance, shipped_entry
from tests.helpers import QUICK, compose_config, read_metrics, run_train, save_tiny_base

REBUILD = "the shipped artifacts are stale: run `make shipped` and commit minituner/shipped/"


def test_the_shipped_base_and_reference_adapter_are_the_default_configs(tmp_path):
    cfg = compose_config([], tmp_path)
    base_name, reference_name = base_dir_for(cfg).name, reference_run_name(cfg)
    assert shipped_entry(SHIPPED_DIR, BASES, base_name), f"no shipped base {base_name}: {REBUILD}"
    assert shipped_entry(SHIPPED_DIR, REFERENCE_ADAPTERS, reference_name), f"no {reference_name}: {REBUILD}"
    provenance = read_provenance()
    assert provenance["base"]["key"] == base_identity(cfg).key(), REBUILD
    assert provenance["reference_adapter"]["name"] == reference_name, REBUILD
    for kind in (BASES, REFERENCE_ADAPTERS):  # only the current ones ship
        assert [p.name for p in (SHIPPED_DIR / kind).iterdir()] == [base_name if kind == BASES else reference_name]


def test_the_shipped_files_are_the_ones_their_provenance_records():
    provenance = read_provenance()
    base = load_base(SHIPPED_DIR / BASES / provenance["base"]["name"])  # checks the weights' own SHA-256 too
    for name, digest in provenance["base"]["sha256"].items():
        assert sha256_file(base.directory / name) == digest
    adapter = SHIPPED_DIR / REFERENCE_ADAPTERS / provenance["reference_adapter"]["name"]
    for name, digest in provenance["reference_adapter"]["sha256"].items():
        assert sha256_file(adapter / "adapter" / name) == digest
    config = json.loads((adapter / "adapter" / "adapter_config.json").read_text())
    assert config["revision"] == f"sha256:{base.weights_sha256}"  # trained on the shipped base
    made_on = provenance["made_on"]
    assert made_on["torch"] and made_on["cpu_capability"] and made_on["date"]


def test_a_run_whose_base_ships_installs_it_instead_of_pretraining(tmp_path):
    """A base whose cache key is the run's is copied from the shipped directory (here a stand-in of the tiny shape)."""
    cfg = compose_config(["regime=lora", *QUICK], tmp_path, "lora")
    shipped = tmp_path / "shipped"
    save_tiny_base(shipped / BASES / base_dir_for(cfg).name)
    done = run_train(tmp_path, "lora", "regime=lora", *QUICK, f"paths.shipped_dir={shipped}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "installed the shipped base" in done.stdout and "pretraining it first" not in done.stdout
    assert not (tmp_path / "lora" / "base_build").exists()
    metrics = read_metrics(tmp_path / "lora")
    assert metrics["base_sha256"] == sha256_file(shipped / BASES / base_dir_for(cfg).name / "model.safetensors")
