import re

import pytest

from minituner.data.corpus import (
    CONTROL_VERBS,
    IRREGULAR_VERBS,
    SPLITS,
    CorpusConfig,
    conjugate,
    generate_corpus,
    regular_past,
    task_items,
    third_person,
)
from minituner.model.tokenizer import ByteTokenizer

TRAINING_SPLITS = ("pretrain_train", "irregular_train")
HELD_OUT_SPLITS = ("pretrain_val", "irregular_val", "irregular_test", "regular_val", "regular_test")
# Irregular past simple / participle forms that differ from every present-tense form.
IRREGULAR_PAST_WORDS = {
    "was",
    "were",
    "been",
    "had",
    "did",
    "done",
    "went",
    "gone",
    "came",
    "saw",
    "seen",
    "ate",
    "eaten",
    "wrote",
    "written",
}


@pytest.fixture(scope="module")
def corpus():
    return generate_corpus(CorpusConfig())


def test_generation_is_deterministic():
    assert generate_corpus(CorpusConfig()).splits == generate_corpus(CorpusConfig()).splits
    other = generate_corpus(CorpusConfig(seed=1))
    assert other.texts("irregular_test") != generate_corpus(CorpusConfig()).texts("irregular_test")


def test_splits_are_disjoint_and_no_held_out_sentence_is_trained_on(corpus):
    seen: dict[str, str] = {}
    for split in SPLITS:
        for text in corpus.texts(split):
            assert text not in seen, f"{text!r} is in {seen.get(text)} and {split}"
            seen[text] = split
    training = {t for s in TRAINING_SPLITS for t in corpus.texts(s)}
    for split in HELD_OUT_SPLITS:
        assert training.isdisjoint(corpus.texts(split))


def test_pretraining_corpus_has_no_irregular_past_form(corpus):
    for split in ("pretrain_train", "pretrain_val"):
        for sentence in corpus.splits[split]:
            words = set(re.findall(r"[a-z]+", sentence.text.lower()))
            assert not words & IRREGULAR_PAST_WORDS, sentence.text
            if sentence.lemma in IRREGULAR_VERBS:
                assert sentence.form not in ("past", "participle")


def test_finetuning_subset_holds_only_irregular_verbs_in_all_forms(corpus):
    for split in ("irregular_train", "irregular_val", "irregular_test"):
        sentences = corpus.splits[split]
        assert {s.lemma for s in sentences} == set(IRREGULAR_VERBS)
        assert {s.form for s in sentences} == {"infinitive", "present", "past", "participle", "future"}
    assert {s.lemma for s in corpus.splits["regular_test"]} == set(CONTROL_VERBS)


def test_every_sentence_fits_the_default_context(corpus):
    tokenizer = ByteTokenizer()
    longest = max(len(tokenizer.encode(t, bos=True, eos=True)) for s in SPLITS for t in corpus.texts(s))
    assert longest <= 64 + 1


def test_task_items_pair_the_correct_form_with_the_over_regularised_one(corpus):
    items = task_items(corpus.splits["irregular_test"])
    assert len(items) == 8 * 2 * CorpusConfig().finetune_test_per_form
    sample = {(i.correct, i.wrong) for i in items}
    assert (" went ", " goed ") in sample and (" eaten ", " eated ") in sample
    for item in items:
        assert item.correct != item.wrong


def test_conjugation_rules():
    assert [third_person(v) for v in ("watch", "study", "play", "go")] == [
        "watches",
        "studies",
        "plays",
        "goes",
    ]
    assert [regular_past(v) for v in ("like", "study", "play", "go", "eat")] == [
        "liked",
        "studied",
        "played",
        "goed",
        "eated",
    ]
    assert conjugate("be", "past", "pl") == "were" and conjugate("be", "present", "1sg") == "am"
    assert conjugate("write", "participle", "3sg") == "written"


def test_too_many_sentences_requested_is_a_clear_error():
    with pytest.raises(ValueError, match=r"data.corpus asks for .* sentences of 'be'"):
        generate_corpus(CorpusConfig(pretrain_per_form=1000))
