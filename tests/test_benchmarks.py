"""The benchmarks' CPU path at smoke-test sizes: the device option, measured transient memory, scaling fits.

The benchmarks print figures for the README; these tests check what the figures are made of (every
variant timed, memory readings that follow from what was allocated, exponents that fit), never how
fast anything runs. The ``--device cuda`` path runs the same code with CUDA readings; CI has no GPU.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import cpu_determinism  # noqa: E402
import qlora_gap  # noqa: E402
import quant_layer  # noqa: E402
import quant_throughput  # noqa: E402
import scaling  # noqa: E402
import sweep_results  # noqa: E402
import train_throughput  # noqa: E402
import your_data  # noqa: E402
from device import CPU, device_named  # noqa: E402

from minituner.config.shipped import CONF_DIR  # noqa: E402
from minituner.config.validation import validate_config  # noqa: E402
from minituner.model.minigpt import MiniGPT, MiniGPTConfig  # noqa: E402
from tests.reports.test_sweep_report import fake_job, metrics  # noqa: E402


@pytest.fixture(autouse=True)
def restore_torch_settings():
    """The benchmarks set threads and determinism for their process; give the test process its own back."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def test_device_argument_refuses_what_cannot_run():
    with pytest.raises(SystemExit, match="choose cpu or cuda"):
        device_named("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            device_named("cuda")
    assert device_named("cpu") == CPU


def test_cpu_device_times_every_call_and_has_no_cuda_readings():
    calls = []
    assert CPU.median_seconds(lambda: calls.append(1), repeats=4) >= 0
    assert len(calls) == 5  # one warm-up, four timed
    CPU.reset_peak_memory()
    assert CPU.peak_memory_bytes() is None
    assert CPU.trainer_options()["precision"] == "32-true"
    with CPU.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_peak_allocated_bytes_follows_what_a_call_allocates():
    def two_at_once() -> None:
        a = torch.empty(1 << 20, dtype=torch.uint8)
        b = torch.empty(1 << 20, dtype=torch.uint8)
        del a, b

    def one_after_another() -> None:
        for _ in range(2):
            torch.empty(1 << 20, dtype=torch.uint8)

    assert CPU.peak_allocated_bytes(lambda: None) == 0
    assert CPU.peak_allocated_bytes(two_at_once) == 2 << 20
    assert CPU.peak_allocated_bytes(one_after_another) == 1 << 20


def test_train_throughput_times_every_variant_on_the_cpu_path():
    result = train_throughput.measure("tiny", (2, 16), warmup=1, steps=2, rounds=1, regimes=["lora", "qlora"])
    for regime in ("lora", "qlora"):
        for loop in ("plain", "minituner"):
            row = result["regimes"][regime][loop]
            assert row["steps"] == 2 and row["median_step_s"] > 0
            assert "peak_memory_bytes" not in row  # a CUDA reading
    assert {"qlora_vs_lora_minituner", "lora_minituner_vs_plain"} <= set(result["ratios"])
    if "peft_bitsandbytes" in result["regimes"]["qlora"]:  # the reference libraries are installed
        assert "qlora_vs_lora_peft_bitsandbytes" in result["ratios"]
    page = train_throughput.report({"peft": None, "bitsandbytes": None, "models": {"tiny": result}})
    assert "## `tiny`" in page and "| qlora | " in page and "| qlora_vs_lora_minituner |" in page


def test_quant_layer_measures_the_whole_weight_and_a_chunk_as_transient_memory():
    small = quant_layer.measure(64, 128, repeats=1)
    assert small["chunk_rows"] is None  # a small weight is dequantized whole
    assert small["whole_weight_transient_bytes"] >= small["dense_fp32_weight_bytes"]
    big = quant_layer.measure(4096, 2048, repeats=1)  # 32 MiB dense: chunked
    assert big["chunk_rows"] is not None
    assert big["whole_weight_transient_bytes"] >= big["dense_fp32_weight_bytes"]
    chunk_bytes = 4 * big["chunk_rows"] * 2048
    assert chunk_bytes <= big["chunked_transient_bytes"] < 2 * chunk_bytes
    page = quant_layer.report(
        {"tokens": 512, "bitsandbytes": None, "layers": [small, big], "goals_4096x4096": {"transient": True}}
    )
    assert "| 64 x 128, float32 | " in page and "(whole)" in page and "transient: met" in page


def test_quant_layer_runs_bf16_activations():
    row = quant_layer.measure(64, 128, repeats=1, dtype=torch.bfloat16)
    assert row["dtype"] == "bfloat16" and row["chunked_ms"] > 0


def test_quant_throughput_times_the_codec():
    row = quant_throughput.measure((64, 64), repeats=2)
    assert row["quantize_ms"] > 0 and row["dequantize_ms"] > 0
    result = {
        "bitsandbytes": None,
        "layers": [row],
        "round_trip_4096x4096": {"nf4_rmse": 0.00184, "int4_rmse": 0.00215},
        "bits_per_weight_4096x4096": {"nf4_dq": {"measured": 4.127, "formula": 4.127}},
    }
    page = quant_throughput.report(result)
    assert "| 64 x 64 | " in page and "| nf4_dq | 4.127 | 4.127 |" in page


def test_exponent_recovers_a_power_law():
    xs = [1e3, 1e4, 1e5, 1e6]
    assert scaling.exponent(xs, [3 * x**2 for x in xs]) == 2.0
    assert scaling.exponent(xs, [5 * x**0.5 for x in xs]) == 0.5
    assert scaling.exponent([10.0], [1.0]) is None


def test_scaling_measures_memory_the_calculator_can_explain(tmp_path, monkeypatch):
    monkeypatch.setattr(scaling, "SEQ_LENGTHS", (16, 32))
    monkeypatch.setattr(scaling, "BATCH", (2, 16))
    result = {"host": {"device": "cpu"}} | scaling.run(steps=1, device=CPU, sizes=["tiny"], seq_shape="tiny")
    for rows in (result["sizes"]["tiny"], result["seq_lengths"]["16"], result["seq_lengths"]["32"]):
        for regime in scaling.REGIMES:
            row = rows[regime]
            # a step holds at least the weights, gradients and Adam state the calculator counts exactly
            assert row["peak_memory_bytes"] >= row["predicted_without_activations_bytes"]
            assert row["saved_activations_bytes"] == row["predicted_activations_bytes"]
            assert 0.9 <= row["predicted_peak_ratio"] <= 1.1
    assert result["fits"]["sizes"]["lora"]["step_time"] is None  # no shape of 1M+ parameters measured
    assert result["fits"]["seq_lengths"]["lora"]["step_time"] is not None
    scaling.draw(result, tmp_path / "scaling.png")
    assert (tmp_path / "scaling.png").stat().st_size > 10_000


def test_a_result_file_names_the_machine_commit_and_date_beside_its_json(tmp_path):
    import result_files

    json_path, md_path = result_files.write_results(
        "demo", {"x": 1}, "A demo", result_files.markdown_table(["a", "b"], [[1, 2]]), directory=tmp_path
    )
    where = json.loads(json_path.read_text())["measured_on"]
    assert where["cores"] and where["torch"] == torch.__version__ and where["cpu_capability"] and where["date"]
    page = md_path.read_text()
    assert page.startswith("# A demo\n") and f"torch {torch.__version__}" in page and where["commit"] in page
    assert "| a | b |\n|---|---|\n| 1 | 2 |" in page


def test_nf4_width_measures_part_b_of_a_bare_base():
    import nf4_width

    torch.manual_seed(0)
    model = MiniGPT(MiniGPTConfig(n_layer=1, n_head=2, d_model=64, d_ff=128))
    batch = (torch.randint(0, 256, (2, 16)), torch.ones(2, 16, dtype=torch.bool))
    errors = nf4_width.nf4_errors(model, batch)
    assert 0 < errors["relative_logit_error"] < 1 and 0.5 <= errors["top1_agreement"] <= 1
    assert 0.05 < errors["weight_error"] < 0.2  # NF4 with blocks of 64: about a tenth of each weight's magnitude


def test_qlora_gap_share_is_the_paired_gap_closed_and_unresolved_when_the_gap_is_noise():
    closed_half = qlora_gap.gap_share([0.6, 0.7, 0.8], lora=[1.0, 1.1, 1.2], qlora=[0.2, 0.3, 0.4])
    assert closed_half["gap_resolved"] and closed_half["share"] == pytest.approx(0.5)
    assert closed_half["share_68"][0] <= 0.5 <= closed_half["share_68"][1]
    noise = qlora_gap.gap_share([0.5, 0.5, 0.5], lora=[0.4, 0.6, 0.5], qlora=[0.6, 0.4, 0.5])
    assert not noise["gap_resolved"] and noise["share"] is None


def test_qlora_gap_rows_are_the_variant_configs_and_the_multirun_sweeps_them_all(make_cfg):
    assert sorted(qlora_gap.ROWS) == sorted(p.stem for p in (CONF_DIR / "variant").glob("*.yaml"))
    sweep = OmegaConf.load(CONF_DIR / "experiment" / "qlora_gap.yaml").hydra.sweeper.params
    assert sweep.variant.split(",") == qlora_gap.ROWS
    for row in qlora_gap.ROWS:
        validate_config(make_cfg(f"variant={row}"))


def test_a_kept_sweep_result_holds_its_jobs_and_seed_statistics(tmp_path):
    sweep = tmp_path / "multiruns" / "rank_ablation"
    for num, (rank, seed, acc) in enumerate([(4, 1, 0.9), (4, 2, 0.8), (8, 1, 0.95), (8, 2, 0.97)]):
        fake_job(sweep, num, [f"lora.r={rank}", f"seed={seed}"], metrics=metrics(acc, 0.02, 10 * rank))
    assert sweep_results.run_sweep(tmp_path, "rank_ablation", [1, 2]) == sweep  # finished: reported, not run
    result, body = sweep_results.summarise(sweep)
    assert len(result["jobs"]) == 4 and [g["group"] for g in result["groups"]] == ["lora.r=4", "lora.r=8"]
    assert result["groups"][1]["stats"]["irregular_acc"]["mean"] == pytest.approx(0.96)
    assert "## Seed statistics" in body and "| lora.r=8 | 2 | 96.0 ± 1.4%" in body


def test_cpu_determinism_names_each_setting_and_says_when_a_repeat_differs():
    names = list(cpu_determinism.settings("AVX2"))
    assert names[1] == "one thread" and "ATEN_CPU_CAPABILITY=avx2" in names and names[-1].endswith("again")
    runs = {name: {"base_sha256": f"{i:064x}", "regular_ppl": 1.3, "wall_seconds": 9.0} for i, name in enumerate(names)}
    page = cpu_determinism.report({"steps": 200, "runs": runs})
    assert "5 distinct weight files from 5 runs" in page and "**other weights**" in page
    runs[names[-1]] = runs[names[0]]
    assert "4 distinct weight files from 5 runs; the default twice: the same weights" in cpu_determinism.report(
        {"steps": 200, "runs": runs}
    )


def test_your_data_page_shows_each_run_before_and_after():
    run = {"label_acc": 0.98, "ppl": 1.006, "regular_ppl": 47.6, "regular_ppl_drift": 32.2, "train_seconds": 78.0}
    run |= {"train_steps": 260, "adapter_bytes": 152944, "base_label_acc": 0.3, "base_ppl": 3771.2}
    run |= {"base_regular_ppl": 1.434, "wall_seconds": 300.0}
    page = your_data.report({"base_build": {"train_steps": 1500, "train_seconds": 181.0}, "runs": {"r": run}})
    assert "30.0% -> **98.0%**" in page and "3,771.200 -> 1.006" in page and "1.434 -> 47.600 (+3220%)" in page
    assert "260 steps, 78 s" in page and "152,944 B" in page and "1500 steps, 181 s" in page
