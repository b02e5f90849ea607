"""Sweep reports: job directories aggregated (seeds as groups), and the experiment configs run as users run them."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from minituner.apps.runner import run_app
from minituner.reports.seed_groups import Stats, t_quantile_975
from minituner.reports.sweep import derived, seed_groups, write_sweep_report
from minituner.reports.sweep_jobs import parse_overrides, swept_keys
from minituner.training.pipeline import train
from tests.helpers import QUICK, compose_config, read_csv

REPORT_FILES = {"sweep.csv", "REPORT.md", "sweep.png", "multirun.yaml"}


def fake_job(
    sweep: Path,
    num: int,
    overrides: list[str],
    trainable: str = "lora",
    metrics: dict | None = None,
    status: str | None = None,
) -> Path:
    """A job directory as Hydra and minituner leave it (metrics only when the job finished)."""
    directory = sweep / f"{num}_{','.join(overrides)}"
    (directory / ".hydra").mkdir(parents=True)
    (directory / ".hydra/overrides.yaml").write_text(yaml.safe_dump(overrides))
    (directory / ".hydra/config.yaml").write_text(yaml.safe_dump({"regime": {"trainable": trainable}}))
    (directory / ".hydra/hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"num": num}}}))
    if metrics is not None:
        (directory / "metrics.json").write_text(json.dumps(metrics))
    if status is not None:
        (directory / "manifest.json").write_text(json.dumps({"status": status}))
    return directory


def metrics(acc: float, drift: float, trainable: int, total: int = 1000) -> dict:
    return {
        "base_irregular_acc": 0.2,
        "irregular_acc": acc,
        "regular_ppl_drift": drift,
        "trainable_params": trainable,
        "total_params": total,
    }


def test_overrides_are_parsed_without_prefixes_and_path_keys():
    parsed = parse_overrides(["+callbacks=x", "~logger", "lora.r=4", "paths.outputs_dir=/tmp/o", "hydra.verbose=true"])
    assert parsed == {"callbacks": "x", "logger": "", "lora.r": "4"}


def test_goals_are_judged_from_gain_and_drift():
    assert derived(metrics(0.35, 0.05, 10))["meets_goals"] is True
    assert derived(metrics(0.29, 0.01, 10))["meets_goals"] is False  # gain 9 points
    assert derived(metrics(0.9, 0.051, 10))["meets_goals"] is False
    assert derived(metrics(0.9, 0.01, 10))["trainable_fraction"] == pytest.approx(0.01)
    assert "meets_goals" not in derived({"irregular_acc": 0.5})  # pretraining has no base


def test_report_of_a_sweep_over_rank_regime_and_quant_with_a_failed_job(tmp_path):
    fake_job(tmp_path, 0, ["lora.r=2", "regime=lora", "quant=none"], metrics=metrics(0.5, 0.02, 100))
    fake_job(tmp_path, 1, ["lora.r=4", "regime=lora", "quant=none"], metrics=metrics(0.7, 0.03, 200))
    fake_job(tmp_path, 2, ["lora.r=2", "regime=lora", "quant=nf4_dq"], metrics=metrics(0.6, 0.04, 100))
    fake_job(tmp_path, 3, ["lora.r=4", "regime=lora", "quant=nf4_dq"], status="failed")
    fake_job(tmp_path, 10, ["lora.r=2", "regime=full", "quant=none"], trainable="all", metrics=metrics(0.99, 0.3, 1000))

    jobs = write_sweep_report(tmp_path)

    assert [j.num for j in jobs] == [0, 1, 2, 3, 10]  # by number, not by name (10 sorts before 2)
    assert swept_keys(jobs) == ["lora.r", "regime", "quant"]
    rows = read_csv(tmp_path / "sweep.csv")
    assert [r["status"] for r in rows] == ["completed"] * 3 + ["failed", "completed"]
    assert rows[4]["lora.r"] == "-"  # the rank does not apply to full fine-tuning
    assert [r["meets_goals"] for r in rows] == ["True", "True", "True", "", "False"]
    assert float(rows[1]["acc_gain_points"]) == pytest.approx(50.0)
    report = (tmp_path / "REPORT.md").read_text()
    assert "| 3 | failed | 4 | lora | nf4_dq |" in report
    assert "Highest task accuracy: lora.r=-, regime=full, quant=none (99.0%)" in report
    assert "while meeting the goals (gain >= 10 points, drift <= 5%): lora.r=2, regime=lora, quant=none (100)" in report
    assert "Jobs without a result: 3." in report
    assert (tmp_path / "sweep.png").read_bytes().startswith(b"\x89PNG")


def test_report_without_a_rank_sweep_and_with_no_finished_job(tmp_path):
    fake_job(tmp_path, 0, ["lora.target_modules=attn_qv"], status="running")
    fake_job(tmp_path, 1, ["lora.target_modules=mlp"])
    write_sweep_report(tmp_path)
    assert "No job has finished yet." in (tmp_path / "REPORT.md").read_text()
    assert [r["status"] for r in read_csv(tmp_path / "sweep.csv")] == ["running", "no result"]


def test_report_command_names_a_missing_or_empty_directory(tmp_path):
    missing = run_app("sweep-report", str(tmp_path / "nope"))
    empty = run_app("sweep-report", str(tmp_path))
    assert missing.returncode == 2 and f"sweep directory {tmp_path / 'nope'} does not exist" in missing.stderr
    assert empty.returncode == 2 and f"no job directories (with .hydra/overrides.yaml) under {tmp_path}" in empty.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def run_sweep(tmp_path: Path, *overrides: str) -> Path:
    """Run ``minituner-train -m`` with the quick settings; return the single sweep directory."""
    done = run_app("train", "-m", f"paths.outputs_dir={tmp_path}", *QUICK, *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = (tmp_path / "multiruns").iterdir()
    return sweep


def test_rank_ablation_multirun_writes_the_report_and_varies_quant_too(tmp_path, seed_tiny_base):
    seed_tiny_base(tmp_path)
    sweep = run_sweep(tmp_path, "experiment=rank_ablation", "lora.r=2,4", "quant=none,nf4", "seed=1")

    assert sweep.name.endswith("_rank_ablation")
    assert {p.name for p in sweep.iterdir()} >= REPORT_FILES
    rows = read_csv(sweep / "sweep.csv")
    assert [(r["lora.r"], r["quant"]) for r in rows] == [("2", "none"), ("2", "nf4"), ("4", "none"), ("4", "nf4")]
    assert all(r["status"] == "completed" for r in rows)
    assert int(rows[2]["trainable_params"]) == 2 * int(rows[0]["trainable_params"])  # params grow with r
    for row in rows:  # each job's own directory: its adapter and TensorBoard hparams
        job = sweep / row["directory"]
        assert "experiment" not in job.name and str(tmp_path) not in job.name  # short, flat names
        assert (job / "adapter/adapter_model.safetensors").is_file()
        assert (job / "tensorboard/hparams.yaml").is_file()
        assert json.loads((job / "metrics.json").read_text())["irregular_acc"] == float(row["irregular_acc"])
    report = (sweep / "REPORT.md").read_text()
    assert "| job | status | lora.r | quant |" in report and "4 job(s), 4 completed" in report


def test_target_module_comparison_multirun(tmp_path, seed_tiny_base):
    seed_tiny_base(tmp_path)
    sweep = run_sweep(tmp_path, "experiment=target_modules", "lora.target_modules=attn_qv,all_linear", "seed=1")

    rows = read_csv(sweep / "sweep.csv")
    assert [r["lora.target_modules"] for r in rows] == ["attn_qv", "all_linear"]
    assert int(rows[1]["trainable_params"]) > int(rows[0]["trainable_params"])
    assert (sweep / "sweep.png").is_file()


def test_early_stopping_ends_the_run_and_keeps_the_best_adapter(tmp_path, seed_tiny_base):
    seed_tiny_base(tmp_path / "outputs")
    # "Best" is the highest perplexity here (mode=max): training lowers it, so the first validation
    # (step 2) stays the best, patience 1 stops the run at the second (step 4) and the weights of
    # step 2 come back. A 2-step warm-up makes steps 1-2 the same whatever the run's length.
    stop = [
        "experiment=early_stopping",
        "trainer.max_steps=20",
        "trainer.val_check_interval=2",
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.mode=max",
        "callbacks.best_weights.mode=max",
        "regime.scheduler.warmup_steps=2",
    ]
    quick = [o for o in QUICK if not o.startswith(("trainer.max_steps", "trainer.val_check_interval"))]
    train(compose_config([*quick, *stop], tmp_path, run="stopped"))
    train(compose_config([*quick, *stop, "trainer.max_steps=2"], tmp_path, run="short"))  # the same run, to step 2

    stopped_metrics = json.loads((tmp_path / "stopped/metrics.json").read_text())
    assert stopped_metrics["train_steps"] == 4
    assert stopped_metrics["best_step"] == 2 and stopped_metrics["best_val_ppl"] > 1
    adapters = [load_file(tmp_path / run / "adapter/adapter_model.safetensors") for run in ("stopped", "short")]
    assert adapters[0].keys() == adapters[1].keys()
    assert all(adapters[0][k].equal(adapters[1][k]) for k in adapters[0])  # step 2's weights, not step 4's


# 3 seeds x 2 ranks: (rank, seed) -> (accuracy, drift)
GRID = {
    (4, 1): (0.90, 0.01),
    (4, 2): (0.80, 0.02),
    (4, 3): (0.85, 0.06),  # seed 3 misses the drift bar
    (8, 1): (0.95, 0.02),
    (8, 2): (0.97, 0.03),
    (8, 3): (0.99, 0.04),
}


def fabricated_sweep(tmp_path):
    for num, ((rank, seed), (acc, drift)) in enumerate(GRID.items()):
        fake_job(tmp_path, num, [f"lora.r={rank}", f"seed={seed}"], metrics=metrics(acc, drift, 10 * rank))
    return write_sweep_report(tmp_path)


def test_student_t_quantiles_and_the_interval_of_three_values():
    assert t_quantile_975(1) == 12.706 and t_quantile_975(2) == 4.303 and t_quantile_975(30) == 2.042
    assert t_quantile_975(1000) == pytest.approx(1.962, abs=0.002)
    stats = Stats.of([0.90, 0.80, 0.85])
    assert (stats.n, stats.min, stats.max) == (3, 0.80, 0.90)
    assert stats.mean == pytest.approx(0.85) and stats.sd == pytest.approx(0.05)
    assert stats.ci95 == pytest.approx(4.303 * 0.05 / math.sqrt(3))
    assert Stats.of([0.5]).sd is None and Stats.of([0.5]).ci95 is None


def test_jobs_that_differ_only_in_their_seeds_are_grouped_with_exact_figures(tmp_path):
    jobs = fabricated_sweep(tmp_path)

    groups = {label: (rows, stats) for label, rows, stats in seed_groups(jobs)}
    assert list(groups) == ["lora.r=4", "lora.r=8"]
    rows = read_csv(tmp_path / "sweep_groups.csv")
    assert [r["group"] for r in rows] == ["lora.r=4", "lora.r=8"] and [r["n"] for r in rows] == ["3", "3"]
    for row, rank in zip(rows, (4, 8), strict=True):
        accs = [a for (r, _), (a, _) in GRID.items() if r == rank]
        drifts = [d for (r, _), (_, d) in GRID.items() if r == rank]
        assert float(row["irregular_acc_mean"]) == pytest.approx(statistics.fmean(accs))
        assert float(row["irregular_acc_sd"]) == pytest.approx(statistics.stdev(accs))
        assert float(row["irregular_acc_min"]) == pytest.approx(min(accs))
        assert float(row["regular_ppl_drift_max"]) == pytest.approx(max(drifts))
        assert float(row["irregular_acc_ci95"]) == pytest.approx(4.303 * statistics.stdev(accs) / math.sqrt(3))
        assert float(row["acc_gain_points_mean"]) == pytest.approx(100 * (statistics.fmean(accs) - 0.2))
    # the goals are judged on the worst seed: rank 4's seed 3 drifts 6%
    assert [r["meets_goals_worst_seed"] for r in rows] == ["False", "True"]
    report = (tmp_path / "REPORT.md").read_text()
    assert "## Seed statistics" in report and "judged\non the **worst seed**" in report
    assert "| lora.r=4 | 3 | 85.0 ± 5.0% [72.6, 97.4] | 80.0% | 3.00 ± 2.65% [-3.57, 9.57] | 6.00% | missed |" in report
    assert "| lora.r=8 | 3 | 97.0 ± 2.0% [92.0, 102.0] | 95.0% | 3.00 ± 1.00% [0.52, 5.48] | 4.00% | met |" in report
    assert "Highest mean task accuracy: lora.r=8 (97.0% over 3 seed(s), worst seed 95.0%)." in report
    assert "while every seed meets the goals (gain >= 10 points, drift <= 5%): lora.r=8." in report
    assert len(read_csv(tmp_path / "sweep.csv")) == 6  # one row per job stays


def test_a_sweep_without_seeds_has_no_group_section(tmp_path):
    fake_job(tmp_path, 0, ["lora.r=4"], metrics=metrics(0.9, 0.01, 40))
    fake_job(tmp_path, 1, ["lora.r=8"], metrics=metrics(0.95, 0.02, 80))
    write_sweep_report(tmp_path)
    assert "Seed statistics" not in (tmp_path / "REPORT.md").read_text()
    assert not (tmp_path / "sweep_groups.csv").exists()


def test_a_failed_seed_is_left_out_of_its_group(tmp_path):
    fake_job(tmp_path, 0, ["seed=1"], metrics=metrics(0.9, 0.01, 40))
    fake_job(tmp_path, 1, ["seed=2"], status="failed")
    fake_job(tmp_path, 2, ["seed=3"], metrics=metrics(0.7, 0.03, 40))
    write_sweep_report(tmp_path)
    (row,) = read_csv(tmp_path / "sweep_groups.csv")
    assert row["group"] == "all jobs" and row["n"] == "2"
    assert float(row["irregular_acc_mean"]) == pytest.approx(0.8)


def test_a_real_two_seed_multirun_gets_the_grouped_report(tmp_path, seed_tiny_base):
    seed_tiny_base(tmp_path)
    sweep = run_sweep(tmp_path, "experiment=seeds", "seed=1,2")

    assert sweep.name.endswith("_seeds")
    jobs = read_csv(sweep / "sweep.csv")
    assert [r["seed"] for r in jobs] == ["1", "2"] and all(r["status"] == "completed" for r in jobs)
    (group,) = read_csv(sweep / "sweep_groups.csv")
    assert group["group"] == "all jobs" and group["n"] == "2"
    accs = [float(r["irregular_acc"]) for r in jobs]
    assert float(group["irregular_acc_mean"]) == pytest.approx(statistics.fmean(accs))
    assert float(group["irregular_acc_sd"]) == pytest.approx(statistics.stdev(accs))
    assert "## Seed statistics" in (sweep / "REPORT.md").read_text()
    assert (sweep / "sweep.png").read_bytes().startswith(b"\x89PNG")
