"""What a run prints: filtered library notices, the step-counting progress bar, the closing summary."""

import logging
import warnings
from types import SimpleNamespace

from minituner.apps.runner import RelayedApp, wait_all
from minituner.training.terminal import StepProgressBar, plain_progress, quiet_library_notices, run_summary


def test_library_notices_are_dropped_and_everything_else_still_shows(caplog):
    quiet_library_notices()
    quiet_library_notices()  # idempotent: one filter per logger
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert sum(type(f).__name__ == "_DropNotices" for f in logger.filters) == 1
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("`weights_only` was not set, defaulting to `False`.")
        logger.info("💡 Tip: For seamless cloud logging and experiment tracking, try installing litlogger")
        logger.info("`Trainer(limit_val_batches=1)` was configured so 1 batch will be used.")  # not the default
        logger.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == [
        "`Trainer(limit_val_batches=1)` was configured so 1 batch will be used.",
        "GPU available: False, used: False",
    ]
    with warnings.catch_warnings(record=True) as caught:
        quiet_library_notices()  # catch_warnings restored the filters: set them again inside
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, stacklevel=1)
        warnings.warn("a real problem", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a real problem"]


def bar_for(max_steps: int, global_step: int) -> StepProgressBar:
    bar = StepProgressBar()
    bar._trainer = SimpleNamespace(max_steps=max_steps, max_epochs=-1 if max_steps > 0 else 4, global_step=global_step)
    return bar


def test_the_bar_counts_steps_when_steps_bound_the_run_and_epochs_otherwise():
    assert bar_for(300, 12)._get_train_description(3) == "step 12/300"
    assert bar_for(-1, 12)._get_train_description(2).strip() == "Epoch 2/3"


def test_the_summary_names_the_artifact_and_the_three_headline_figures():
    lora = {
        "regime": "lora",
        "adapter_dir": "runs/x/adapter",
        "irregular_acc": 0.9825,
        "base_irregular_acc": 0.0025,
        "regular_ppl_drift": 0.0231,
        "regular_ppl": 1.28,
        "ppl": 1.19,
    }
    assert run_summary("runs/x", lora).splitlines() == [
        "run directory: runs/x",
        "adapter: runs/x/adapter",
        "irregular accuracy 98.25% (base 0.25%) | control drift +2.31% | test ppl 1.1900",
    ]
    pretrain = {
        "regime": "pretrain",
        "base_dir": "bases/minigpt-1",
        "irregular_acc": 0.0,
        "regular_ppl": 1.25,
        "ppl": 1.3,
    }
    assert run_summary("runs/p", pretrain).splitlines()[1:] == [
        "base: bases/minigpt-1",
        "irregular accuracy 0.00% | control ppl 1.2500 | test ppl 1.3000",
    ]


def test_off_a_terminal_the_bar_prints_plain_progress_lines(capsys):
    trainer = SimpleNamespace(
        max_steps=75, max_epochs=-1, global_step=40, current_epoch=0, callback_metrics={"train/loss": 0.3312}
    )
    assert plain_progress(trainer) == "progress: step 40/75 (epoch 0) train/loss 0.331"
    StepProgressBar(plain_interval=0.0).print_plain_progress(trainer)  # pytest's captured stdout: no terminal
    assert capsys.readouterr().out == "progress: step 40/75 (epoch 0) train/loss 0.331\n"
    StepProgressBar(plain_interval=60.0).print_plain_progress(trainer)  # not yet: nothing
    assert capsys.readouterr().out == ""


def test_a_relayed_app_shows_the_lines_it_is_asked_to_and_keeps_the_last_ones(capsys):
    child = RelayedApp("count", "counting", "--help", show=lambda line: line.startswith("minituner-count:"), keep=3)
    assert child.wait() == 0
    assert capsys.readouterr().out.startswith("  [counting] minituner-count: parameters, memory")
    assert len(child.tail) == 3


def test_waiting_on_silent_children_says_which_still_work(capsys):
    children = [RelayedApp("count", name, "--help", show=lambda line: False) for name in ("first", "second")]
    assert wait_all(children, quiet_seconds=0.5) == [0, 0]  # importing takes longer than half a second
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.startswith("  ... still working (") for line in lines)
    assert "first, second" in lines[0]
