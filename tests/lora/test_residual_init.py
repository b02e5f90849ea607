"""PiSSA, OLoRA and LoftQ (``lora.init``): the step-0 function, LoftQ's error, the saved residual, the export."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from minituner.apps import merge as merge_app
from minituner.config.errors import ConfigError
from minituner.config.validation import validate_config
from minituner.lora.adapter_io import RESIDUAL_FILE, AdapterError, load_adapter, save_adapter
from minituner.lora.inject import LoRAConfig, inject_lora, select_targets
from minituner.lora.layer import LoRALinear, adapter_parameters, lora_layers
from minituner.lora.residual_init import freeze_residuals, residual_starts
from minituner.model.precision import cast_frozen_base
from minituner.quant.linear import QuantizedLinear, quantize_model, rounded_weight
from minituner.reports.parity import parity
from minituner.store.base_cache import LoadedBase, load_base
from minituner.training.pipeline import train
from tests.helpers import BASE_SHA, IDX, QUICK, base_model, compose_config, save_tiny_base

CONFIG = LoRAConfig(r=4, alpha=8, target_modules="all_linear")


def started(init: str, quant: str = "none", config: LoRAConfig = CONFIG, iters: int = 1, dtype: str = "float32"):
    """The seed-0 MiniGPT with ``init``'s residual frozen (quantized or cast as asked) and its adapters at step 0."""
    model = base_model()
    config = LoRAConfig(**(config.to_dict() | {"init": init, "loftq_iters": iters}))
    scaling = LoRALinear.scaling_of(config.r, config.alpha, config.use_rslora)
    starts = residual_starts(model, select_targets(model, config), init, config.r, scaling, quant, 64, iters)
    freeze_residuals(model, starts)
    if quant != "none":
        quantize_model(model, quant)
    cast_frozen_base(model, dtype)
    inject_lora(model, config, starts)
    return model.eval(), starts, config


def trained(model: torch.nn.Module, std: float = 0.02) -> torch.nn.Module:
    """``model`` with every adapter parameter moved by noise of ``std``, as training would."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in adapter_parameters(model).values():
            param.add_(torch.randn(param.shape, generator=generator) * std)
    return model


@pytest.mark.parametrize("dora", [False, True])
@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_start_as_the_base_up_to_float_error(init, dora):
    model, starts, _ = started(init, config=LoRAConfig(**(CONFIG.to_dict() | {"dora": dora})))
    assert (model(IDX)[0] - base_model()(IDX)[0]).abs().max() < 1e-5  # measured: 2.7e-7
    layer = lora_layers(model)["blocks.0.mlp.fc_in"]
    assert layer.lora_B.weight.abs().sum() > 0  # the adapter holds part of W, not zeros
    weight = base_model().get_submodule("blocks.0.mlp.fc_in").weight
    assert torch.allclose(starts["blocks.0.mlp.fc_in"].frozen_weight + layer.delta_weight(), weight, atol=1e-6)


def test_pissa_takes_the_principal_part_so_its_residual_has_the_smallest_norm_of_any_rank_r_split():
    _, starts, _ = started("pissa")
    weight = base_model().get_submodule("blocks.1.attn.q_proj").weight.detach()
    singular = torch.linalg.svdvals(weight.double())
    residual = starts["blocks.1.attn.q_proj"].frozen_weight.double()
    assert torch.isclose(torch.linalg.norm(residual), torch.linalg.norm(singular[CONFIG.r :]), rtol=1e-5)


@pytest.mark.parametrize("scheme", ["nf4_dq", "int4"])
def test_loftq_with_one_round_lowers_every_layer_s_reconstruction_error_against_plain_qlora(scheme):
    model, starts, _ = started("loftq", scheme)
    original = base_model()
    for name, layer in lora_layers(model).items():
        weight = original.get_submodule(name).weight.detach()
        plain = torch.linalg.norm(weight - rounded_weight(weight, scheme))
        loftq = torch.linalg.norm(weight - layer.base_weight() - layer.delta_weight())
        assert loftq < plain, name


def test_qpissa_quantizes_the_residual_of_the_full_precision_svd():
    model, starts, _ = started("pissa", "nf4_dq")
    layer = lora_layers(model)["blocks.0.mlp.fc_out"]
    assert isinstance(layer.base_layer, QuantizedLinear)
    expected = rounded_weight(starts["blocks.0.mlp.fc_out"].frozen_weight, "nf4_dq")
    assert torch.equal(layer.base_weight(), expected)


@pytest.mark.parametrize(
    ("init", "quant"), [("pissa", "none"), ("olora", "none"), ("pissa", "nf4_dq"), ("loftq", "nf4")]
)
def test_a_saved_residual_adapter_loads_onto_the_plain_base_with_the_trained_logits(tmp_path, init, quant):
    model, starts, config = started(init, quant)
    model = trained(model)
    save_adapter(model, tmp_path / "a", config, "base", BASE_SHA, starts)
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["init_lora_weights"] == init
    loaded = base_model()
    if quant != "none":
        quantize_model(loaded, quant)
    load_adapter(loaded, tmp_path / "a")
    assert torch.equal(loaded.eval()(IDX)[0], model(IDX)[0])


def test_a_residual_adapter_without_its_residual_file_is_refused_naming_it(tmp_path):
    model, starts, config = started("pissa")
    save_adapter(model, tmp_path / "a", config, "base", BASE_SHA, starts)
    (tmp_path / "a" / RESIDUAL_FILE).unlink()
    with pytest.raises(AdapterError, match=rf"init_lora_weights=.pissa. .*{RESIDUAL_FILE} .* is missing"):
        load_adapter(base_model(), tmp_path / "a")


peft = pytest.importorskip("peft")


@pytest.mark.parametrize(("init", "rslora"), [("pissa", False), ("olora", True), ("pissa_dora", False)])
def test_the_rank_2r_export_serves_on_the_untouched_base_in_minituner_and_peft(tmp_path, init, rslora):
    dora = init.endswith("_dora")
    config = LoRAConfig(**(CONFIG.to_dict() | {"use_rslora": rslora, "dora": dora}))
    model, starts, config = started(init.removesuffix("_dora"), config=config)
    model = trained(model)
    save_adapter(model, tmp_path / "a", config, "base", BASE_SHA, starts)
    assert merge_app.main([str(tmp_path / "a"), str(tmp_path / "plain"), "--as-lora"]) == 0
    exported = json.loads((tmp_path / "plain" / "adapter_config.json").read_text())
    assert (exported["r"], exported["init_lora_weights"]) == (2 * config.r, True)
    ours = base_model()
    load_adapter(ours, tmp_path / "plain")
    assert (ours.eval()(IDX)[0] - model(IDX)[0]).abs().max() < 1e-5  # the same function, on the plain base
    theirs = peft.PeftModel.from_pretrained(base_model(), str(tmp_path / "plain")).eval()
    assert (theirs(IDX)[0] - ours(IDX)[0]).abs().max() < 1e-5


def test_exporting_a_plain_lora_adapter_is_refused(tmp_path, capsys):
    model = base_model()
    inject_lora(model, CONFIG)
    save_adapter(model, tmp_path / "a", CONFIG, "base", BASE_SHA)
    assert merge_app.main([str(tmp_path / "a"), str(tmp_path / "plain"), "--as-lora"]) == 2
    assert "already a plain LoRA of it: nothing to export" in capsys.readouterr().err
    assert not (tmp_path / "plain").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["lora.init=pissa", "lora.r=20"], r"lora.r=20 with lora.init='pissa' is not allowed: .* rank at most 16"),
        (["lora.init=loftq"], r"lora.init='loftq' with quant.scheme='none' is not allowed"),
        (["lora.init=loftq", "quant=nf4", "lora.loftq_iters=0"], r"lora.loftq_iters=0 is not allowed"),
    ],
)
def test_a_residual_init_that_cannot_work_is_refused_before_any_work(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(make_cfg("model=tiny", "regime=lora", *overrides))


def test_a_qpissa_run_from_the_config_keeps_its_residual_and_merges_to_what_it_trained(tmp_path):
    base = save_tiny_base(tmp_path / "base")
    cfg = compose_config([*QUICK, "regime=lora", f"base.path={base}", "lora.init=pissa", "quant=nf4_dq"], tmp_path)
    metrics = train(cfg)
    adapter_dir = Path(cfg.paths.output_dir) / "adapter"
    assert (adapter_dir / RESIDUAL_FILE).is_file() and metrics["train_steps"] == 3
    assert merge_app.main([str(adapter_dir), str(tmp_path / "merged"), "--base", str(base)]) == 0
    assert merge_app.main([str(adapter_dir), str(tmp_path / "plain"), "--as-lora"]) == 0
    merged, on_plain = load_base(tmp_path / "merged").model.eval(), load_base(base).model
    load_adapter(on_plain, tmp_path / "plain")
    assert (merged(IDX)[0] - on_plain.eval()(IDX)[0]).abs().max() < 1e-5


@pytest.mark.parametrize("init", ["pissa", "loftq"])
def test_part_b_checks_a_residual_adapter_against_its_rounded_residual(tmp_path, init):
    model, starts, config = started(init, "nf4_dq")
    save_adapter(trained(model), tmp_path / "a", config, "base", BASE_SHA, starts)
    base = LoadedBase(base_model(), tmp_path, BASE_SHA, {})
    check, _ = parity(base, "nf4_dq", "float16", tmp_path / "a", (IDX, torch.ones_like(IDX, dtype=torch.bool)))
    assert check["within_tolerance"], check


def test_a_loftq_run_resumed_from_its_step_3_checkpoint_ends_bit_identical(tmp_path):
    base = save_tiny_base(tmp_path / "base")
    quick = [o for o in QUICK if not o.startswith(("trainer.max_steps", "trainer.val_check_interval"))]
    args = [
        *quick,
        "trainer.max_steps=6",
        "trainer.val_check_interval=6",
        "callbacks.checkpoint.every_n_steps=3",
        "regime=lora",
        f"base.path={base}",
    ]
    args += ["lora.init=loftq", "quant=nf4"]
    reference = train(compose_config(args, tmp_path, run="reference"))
    shutil.copytree(tmp_path / "reference", tmp_path / "resumed", ignore=shutil.ignore_patterns("step-00000006"))
    for finished in ("metrics.json", "adapter"):
        path = tmp_path / "resumed" / finished
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    resumed = train(compose_config([*args, f"resume={tmp_path}/resumed"], tmp_path, run="resumed"))
    varying = {"train_seconds", "adapter_dir"}
    assert {k: v for k, v in resumed.items() if k not in varying} == {
        k: v for k, v in reference.items() if k not in varying
    }
