"""`minituner-data`: tokenized examples as training sees them, split summaries, bad input refused."""

import json

from hydra.utils import instantiate

from minituner.apps.runner import run_app
from minituner.data.examples import EXAMPLES_DIR
from minituner.data.inspection import segments, split_summary, tokenize_example
from minituner.model.tokenizer import ByteTokenizer
from tests.helpers import compose_config

TOKENIZER = ByteTokenizer()


def test_the_prompt_and_bos_are_given_and_the_rest_with_eos_is_trained():
    example = tokenize_example("go: ", "go: she went.", TOKENIZER, 64)
    assert len(example.ids) == 1 + len(b"go: she went.") + 1
    assert example.trained == [False] * (1 + 4) + [True] * (len(b"she went.") + 1)
    assert segments(example, TOKENIZER) == [
        ("⟨BOS⟩", "special"),
        ("go: ", "given"),
        ("she went.", "trained"),
        ("⟨EOS⟩", "special"),
    ]


def test_multibyte_characters_read_as_themselves_and_summaries_count_tokens():
    example = tokenize_example("café: ", "café: déjà vu", TOKENIZER, 64)
    assert [text for text, _ in segments(example, TOKENIZER)] == ["⟨BOS⟩", "café: ", "déjà vu", "⟨EOS⟩"]
    summary = split_summary([("a: ", "a: b"), ("a: ", "a: bbbb")], TOKENIZER, 64)
    assert summary | {"tokens_mean": None} == {
        "examples": 2,
        "tokens_mean": None,
        "tokens_max": 9,
        "row_tokens": 65,
        "trained_tokens_mean": 3.5,
        "longest": "a: bbbb",
    }


def test_text_splits_are_the_examples_the_loaders_train_and_evaluate_on(tmp_path):
    verbs = instantiate(compose_config([], tmp_path).data)
    splits = verbs.text_splits()
    assert {stage: len(examples) for stage, examples in splits.items()} == {"train": 2400, "val": 400, "test": 1000}
    assert len(verbs.train_dataloader().dataset) == 2400
    records = instantiate(compose_config(["experiment=sentiment"], tmp_path).data)
    splits = records.text_splits()
    assert splits["val"] == splits["test"] and len(splits["train"]) + len(splits["val"]) == 250
    assert splits["train"][0][1].startswith(splits["train"][0][0])  # the text starts with its prompt


def test_minituner_data_prints_and_writes_the_examples_and_refuses_bad_input(tmp_path):
    data = f"data.path={EXAMPLES_DIR / 'sentiment.jsonl'}"
    done = run_app(
        "data",
        f"hydra.run.dir={tmp_path}/run",
        f"paths.outputs_dir={tmp_path}/outputs",
        "experiment=sentiment",
        data,
        "inspect.examples=3",
    )
    assert done.returncode == 0, done.stderr
    assert "given (not trained)" in done.stdout and "⟨BOS⟩" in done.stdout and "⟨EOS⟩" in done.stdout
    result = json.loads((tmp_path / "run" / "data.json").read_text())
    assert len(result["examples"]) == 3 and result["splits"]["train"]["row_tokens"] == 257
    first = result["examples"][0]["segments"]
    assert first[1][1] == "given" and "### Response:" in first[1][0] and first[2][1] == "trained"
    bad = run_app(
        "data",
        f"hydra.run.dir={tmp_path}/bad",
        "data=jsonl",
        f"data.path={tmp_path}/missing.jsonl",
        "inspect.split=dev",
    )
    assert bad.returncode == 2 and not (tmp_path / "bad").exists()
    assert "inspect.split='dev' is not allowed" in bad.stderr and "missing.jsonl: cannot read the file" in bad.stderr
