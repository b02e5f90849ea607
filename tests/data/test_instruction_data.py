"""Instruction data (data=jsonl): template, masking, split, checks of the file, the shipped example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch.nn.functional as F

from minituner.config.validation import ConfigError, validate_config
from minituner.data.examples import EXAMPLES_DIR
from minituner.data.examples.make_sentiment import LABELS, jsonl_text, sentiment_records
from minituner.data.instructions import (
    DataFileError,
    InstructionDataModule,
    Record,
    format_prompt,
    read_records,
    split_records,
)
from minituner.model.minigpt import IGNORE_INDEX, MiniGPT, MiniGPTConfig
from minituner.model.tokenizer import ByteTokenizer
from minituner.training.pipeline import train
from tests.helpers import QUICK, compose_config, run_train

TOK = ByteTokenizer()


def write_lines(path: Path, *lines: str | dict) -> Path:
    path.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines))
    return path


def test_alpaca_template_with_and_without_input():
    assert format_prompt("Add.", "2 and 3") == "### Instruction:\nAdd.\n### Input:\n2 and 3\n### Response:\n"
    assert format_prompt("Say hi.") == "### Instruction:\nSay hi.\n### Response:\n"
    assert format_prompt("Say hi.", "  \n") == format_prompt("Say hi.")  # a blank input is no input
    record = Record(1, "Say hi.", "", "hi")
    assert record.text == "### Instruction:\nSay hi.\n### Response:\nhi"


def test_loss_covers_the_response_and_end_of_text_only(tmp_path):
    path = write_lines(
        tmp_path / "d.jsonl",
        {"instruction": "Say hi.", "output": "hi"},
        {"instruction": "Add.", "input": "2 and 3", "output": "5"},
    )
    module = InstructionDataModule(str(path), val_fraction=0.5, corpus={}, block_size=64)
    train, val = module.splits
    for record in (*train, *val):
        dataset = module._records([record])
        targets = dataset.targets[0]
        kept = targets[targets != IGNORE_INDEX].tolist()
        assert kept == TOK.encode(record.output) + [TOK.eos_id]  # exactly the response + EOS
        first = len(TOK.encode(record.prompt))  # position of the last prompt token (after BOS)
        assert (targets[:first] == IGNORE_INDEX).all() and targets[first] == TOK.encode(record.output)[0]
        # the model's loss is the mean cross-entropy over those tokens alone
        model = MiniGPT(MiniGPTConfig(vocab_size=259, block_size=64, n_layer=1, n_head=2, d_model=16, d_ff=32))
        logits, loss = model(dataset.inputs, dataset.targets)
        mask = dataset.targets[0] != IGNORE_INDEX
        expected = F.cross_entropy(logits[0][mask], dataset.targets[0][mask])
        assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def records(n: int) -> list[Record]:
    return [Record(i + 1, "Name a number.", "", str(i)) for i in range(n)]


def test_split_is_seeded_deterministic_order_free_and_keeps_duplicates_together():
    data = records(40) + [Record(41, "Name a number.", "", "7")]  # a duplicate of record 8
    train, val = split_records(data, 0.25, seed=0)
    assert len(val) in (10, 11) and len(train) + len(val) == 41  # ceil(0.25 * 40 distinct) texts
    assert split_records(data, 0.25, seed=0) == (train, val)
    assert {r.text for r in split_records(list(reversed(data)), 0.25, seed=0)[1]} == {r.text for r in val}
    assert {r.text for r in split_records(data, 0.25, seed=1)[1]} != {r.text for r in val}
    sides = {r.text in {v.text for v in val} for r in data if r.output == "7"}
    assert len(sides) == 1  # both copies on the same side
    with pytest.raises(DataFileError, match=r"data.val_fraction=0.5 splits 1 distinct record\(s\) into"):
        split_records(records(1), 0.5, seed=0)


GOOD = {"instruction": "Rate.", "input": "ok", "output": "positive"}  # 61 tokens: fits 64
BAD_FILES = [
    ("invalid JSON", ['{"instruction": "a", "output": '], r"d.jsonl:1: invalid JSON \(Expecting value at column 32\)"),
    ("not an object", [GOOD, "[1, 2]"], r'd.jsonl:2: a record must be a JSON object with "instruction", "output"'),
    ("missing instruction", [{"output": "x"}], r'd.jsonl:1: missing "instruction"'),
    ("missing output", [GOOD, GOOD, {"instruction": "x"}], r'd.jsonl:3: missing "output"'),
    ("wrong type", [{"instruction": "x", "output": 3}], r'd.jsonl:1: "output" must be a string, found int 3'),
    ("wrong input type", [{"instruction": "x", "input": ["a"], "output": "y"}], r'd.jsonl:1: "input" must be a string'),
    ("empty output", [{"instruction": "x", "output": " "}], r'd.jsonl:1: "output" is empty'),
    ("empty file", [], r"d.jsonl: the file has no records \(expected one JSON object per line\)"),
    ("only blank lines", ["", "  "], r"d.jsonl: the file has no records"),
    (
        "too long",
        [GOOD, {"instruction": "x" * 80, "output": "negative"}],
        r"d.jsonl:2: the formatted record is 122 tokens with BOS/EOS; model.block_size=64 fits at most 65",
    ),
    (
        "unrepresentable",
        ['{"instruction": "x\\ud800", "output": "y"}'],
        r'd.jsonl:1: "instruction" has text the byte tokenizer cannot represent: character 2 is',
    ),
    (
        "not a label",
        [GOOD, {"instruction": "Rate.", "output": "Positive"}],
        r"""d.jsonl:2: "output" 'Positive' is not one of data.labels=\['positive', 'negative'\]""",
    ),
]


@pytest.mark.parametrize("case,lines,message", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_a_malformed_file_names_file_line_and_problem(tmp_path, case, lines, message):
    path = write_lines(tmp_path / "d.jsonl", *lines)
    with pytest.raises(DataFileError, match=message):
        read_records(path, block_size=64, labels=["positive", "negative"])


def test_every_problem_of_a_file_is_reported_at_once(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"instruction": "a"}\n\nnot json\n{"instruction": "ok", "output": "ok"}\n\xff\xfe\n')
    with pytest.raises(DataFileError) as error:
        read_records(path, block_size=64)
    assert error.value.problems == [
        f'{path}:1: missing "output" (each record needs "instruction" and "output"; "input" is optional)',
        f"{path}:3: invalid JSON (Expecting value at column 1)",
        f"{path}:5: byte 1 is not valid UTF-8 (the file must be UTF-8 text)",
    ]


def test_config_validation_reads_the_file_before_any_work(tmp_path):
    bad = write_lines(tmp_path / "bad.jsonl", {"instruction": "x"})
    cfg = compose_config(["data=jsonl", f"data.path={bad}", "data.val_fraction=1.5", "data.labels=[a]"], tmp_path)
    with pytest.raises(ConfigError) as error:
        validate_config(cfg)
    assert len(error.value.problems) == 2  # settings first; the records are read once they are valid
    assert "data.val_fraction=1.5 is not allowed: must be a number in (0, 1)" in error.value.problems[0]
    assert "data.labels=['a'] is not allowed" in error.value.problems[1]
    with pytest.raises(ConfigError, match=rf'{bad}:1: missing "output"'):
        validate_config(compose_config(["data=jsonl", f"data.path={bad}"], tmp_path))
    with pytest.raises(ConfigError, match="data.path is not set"):
        validate_config(compose_config(["data=jsonl"], tmp_path))
    with pytest.raises(ConfigError, match=rf"data.path={tmp_path / 'nope.jsonl'}: cannot read the file"):
        validate_config(compose_config(["data=jsonl", f"data.path={tmp_path / 'nope.jsonl'}"], tmp_path))


def test_shipped_example_is_what_its_script_writes_and_fits_minigpt_long():
    shipped = EXAMPLES_DIR / "sentiment.jsonl"
    assert shipped.read_text() == jsonl_text(sentiment_records())  # regenerated, never hand-edited
    loaded = read_records(shipped, block_size=256, labels=list(LABELS))
    assert len(loaded) == 250 and {r.output for r in loaded} == set(LABELS)
    with pytest.raises(DataFileError, match=r"model.block_size=64 fits at most 65 \(shorten it, or use"):
        read_records(shipped, block_size=64)


def test_label_choices_put_the_records_label_first(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", *(dict(GOOD, input=str(i)) for i in range(4)))
    module = InstructionDataModule(str(path), labels=["negative", "positive"], corpus={}, block_size=64)
    (item,) = module.label_items(module.splits[1][:1])
    assert item.candidates == ("positive", "negative") and item.context.endswith("### Response:\n")


def test_bad_data_file_on_the_command_line_stops_before_any_work(tmp_path):
    bad = write_lines(tmp_path / "bad.jsonl", "{oops", {"instruction": "x", "output": 1})
    done = run_train(tmp_path, "run", "data=jsonl", f"data.path={bad}", *QUICK, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 2
    assert f"{bad}:1: invalid JSON" in output and f'{bad}:2: "output" must be a string' in output
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "run/metrics.json").exists()


def test_sentiment_example_end_to_end_on_a_tiny_long_context_model(tmp_path):
    tiny_long = ["model=tiny", "model.block_size=256"]
    common = [*QUICK, *tiny_long]
    base_dir = train(compose_config(["regime=pretrain_packed", *common], tmp_path, run="base"))["base_dir"]
    run = run_train(tmp_path, "run", "experiment=sentiment", f"base.path={base_dir}", *common)
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    for key in ("base_label_acc", "label_acc", "ppl", "regular_ppl", "regular_ppl_drift"):
        assert isinstance(metrics[key], float), key
    assert "irregular_acc" not in metrics  # the verb task is not this run's task
    assert (tmp_path / "run/adapter/adapter_model.safetensors").is_file()
    # the held-out records are 10% of the 250 distinct ones, scored on one test batch (QUICK)
    assert 0 <= metrics["label_acc"] <= 1


def test_packed_pretraining_fills_every_window():
    from minituner.data.datamodules import LanguageModelingDataset

    examples = [("go: ", "go: we went."), ("be: ", "be: it is.")] * 10
    packed = LanguageModelingDataset(examples, TOK, block_size=16, kind="lm", pack=True)
    plain = LanguageModelingDataset(examples, TOK, block_size=16, kind="lm")
    assert len(packed) < len(plain) and (packed.inputs[:-1] != TOK.pad_id).all()  # only the last is padded
    # the same tokens are predicted, each once: packing changes the layout, not the targets
    kept = sorted(packed.targets[packed.targets != IGNORE_INDEX].tolist())
    assert kept == sorted(plain.targets[plain.targets != IGNORE_INDEX].tolist())
    stream = [i for _, text in examples for i in TOK.encode(text, bos=True, eos=True)]
    assert packed.inputs[:2].flatten().tolist() == stream[:32]  # consecutive windows of the stream
