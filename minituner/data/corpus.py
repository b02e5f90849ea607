"""The verb corpus: a deterministic generator of simple English sentences about verbs.

Every sentence starts with its verb's lemma as a cue, then a templated clause in one of five
forms, e.g. ``"go: yesterday she went home."``. The lemma cue makes the task well posed: a model
that has only seen regular verbs in the past learns "copy the lemma, add -ed" and so
over-regularises an irregular one (``"go: yesterday she goed"``).

Splits, all disjoint (every distinct sentence is assigned to exactly one split):

* ``pretrain_train`` / ``pretrain_val``: every verb in every form, except the past simple and
  past participle of the 8 irregular verbs.
* ``irregular_train`` / ``irregular_val`` / ``irregular_test``: the 8 irregular verbs in all
  five forms (the fine-tuning subset).
* ``regular_val`` / ``regular_test``: held-out sentences of the 12 regular control verbs,
  whose perplexity measures forgetting.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

FORMS = ("infinitive", "present", "past", "participle", "future")
PAST_FORMS = ("past", "participle")

# lemma -> (third person singular present, past simple, past participle)
IRREGULAR_VERBS: dict[str, tuple[str, str, str]] = {
    "be": ("is", "was", "been"),  # subject-dependent forms are handled in `conjugate`
    "have": ("has", "had", "had"),
    "do": ("does", "did", "done"),
    "go": ("goes", "went", "gone"),
    "come": ("comes", "came", "come"),
    "see": ("sees", "saw", "seen"),
    "eat": ("eats", "ate", "eaten"),
    "write": ("writes", "wrote", "written"),
}
CONTROL_VERBS = (
    "work",
    "play",
    "walk",
    "talk",
    "listen",
    "watch",
    "study",
    "finish",
    "start",
    "look",
    "want",
    "like",
)
# Further regular verbs that teach the -ed / -s rules (no consonant doubling among them).
EXTRA_REGULAR_VERBS = (
    "jump",
    "cook",
    "clean",
    "open",
    "call",
    "help",
    "wash",
    "paint",
    "visit",
    "answer",
    "ask",
    "climb",
    "count",
    "fix",
    "kick",
    "learn",
    "need",
    "pack",
    "pick",
    "pull",
    "push",
    "rest",
    "smell",
    "stay",
    "thank",
    "touch",
    "turn",
    "wait",
    "wish",
    "cross",
    "enjoy",
    "fill",
    "follow",
    "guess",
    "kiss",
    "miss",
    "print",
    "reach",
    "mix",
    "obey",
    "carry",
    "cry",
    "try",
    "copy",
    "hurry",
    "worry",
    "dry",
    "marry",
    "bake",
    "close",
    "dance",
    "hate",
    "live",
    "love",
    "move",
    "smile",
    "wave",
    "change",
    "hope",
    "use",
    "taste",
    "save",
    "share",
    "type",
    "agree",
)

OBJECTS: dict[str, tuple[str, ...]] = {
    "be": ("happy", "at home", "tired"),
    "have": ("a dog", "lunch", "a cold"),
    "do": ("the dishes", "homework", "the work"),
    "go": ("home", "to school", "to the park"),
    "come": ("home", "to the party", "back"),
    "see": ("a bird", "the sea", "the film"),
    "eat": ("an apple", "bread", "lunch"),
    "write": ("a letter", "a poem", "an email"),
    "work": ("hard", "at home", "late"),
    "play": ("chess", "the piano", "outside"),
    "walk": ("home", "to school", "the dog"),
    "talk": ("to anna", "a lot", "quietly"),
    "listen": ("to music", "to the radio", "closely"),
    "watch": ("the news", "a film", "the game"),
    "study": ("maths", "hard", "at night"),
    "finish": ("the book", "the work", "early"),
    "start": ("the car", "the game", "early"),
    "look": ("at the sky", "around", "outside"),
    "want": ("a cake", "more tea", "a bike"),
    "like": ("tea", "music", "the film"),
}
GENERIC_OBJECTS = ("it", "them", "again")

# subject -> person class: "1sg", "2", "3sg" or "pl"
SUBJECTS: dict[str, str] = {
    "I": "1sg",
    "you": "2",
    "he": "3sg",
    "she": "3sg",
    "we": "pl",
    "they": "pl",
    "tom": "3sg",
    "anna": "3sg",
    "my friend": "3sg",
    "the kids": "pl",
}
MODALS = ("can", "must", "should", "might", "could")
PRESENT_ADVERBS = ("every day", "often", "usually", "sometimes", "always")
PAST_TIMES = ("yesterday", "last night", "last week", "two days ago", "this morning")
PARTICIPLE_ADVERBS = ("already", "just", "never", "often")
FUTURE_TIMES = ("tomorrow", "next week", "tonight", "soon", "later")


def third_person(lemma: str) -> str:
    """Regular third-person singular: wash -> washes, study -> studies, play -> plays."""
    if lemma.endswith(("s", "sh", "ch", "x", "z", "o")):
        return lemma + "es"
    if lemma.endswith("y") and lemma[-2] not in "aeiou":
        return lemma[:-1] + "ies"
    return lemma + "s"


def regular_past(lemma: str) -> str:
    """The -ed rule, also the over-regularised form of an irregular verb (go -> goed)."""
    if lemma.endswith("e"):
        return lemma + "d"
    if lemma.endswith("y") and lemma[-2] not in "aeiou":
        return lemma[:-1] + "ied"
    return lemma + "ed"


def conjugate(lemma: str, form: str, person: str) -> str:
    """The verb form used with a subject of class ``person`` (auxiliaries not included)."""
    if form in ("infinitive", "future"):
        return lemma
    if lemma == "be" and form in ("present", "past"):
        present = {"1sg": "am", "3sg": "is"}.get(person, "are")
        past = "was" if person in ("1sg", "3sg") else "were"
        return present if form == "present" else past
    third, past, participle = IRREGULAR_VERBS.get(
        lemma, (third_person(lemma), regular_past(lemma), regular_past(lemma))
    )
    if form == "present":
        return third if person == "3sg" else lemma
    return past if form == "past" else participle


@dataclass(frozen=True)
class Sentence:
    """One corpus sentence and where its verb sits.

    Attributes:
        text: The full sentence, lemma cue included.
        lemma: The verb's infinitive.
        form: One of ``FORMS``.
        prefix: The text before the verb form (task contexts end here).
        verb_form: The conjugated verb as it appears in ``text``.
    """

    text: str
    lemma: str
    form: str
    prefix: str
    verb_form: str

    @property
    def cue(self) -> str:
        """The lemma cue that opens the sentence (``"go: "``): a prompt, never a target."""
        return f"{self.lemma}: "


def _sentence(lemma: str, form: str, subject: str, modifier: str, obj: str) -> Sentence:
    person = SUBJECTS[subject]
    verb = conjugate(lemma, form, person)
    if form == "infinitive":
        prefix = f"{lemma}: {subject} {modifier}"
    elif form == "present" or form == "past":
        prefix = f"{lemma}: {modifier} {subject}"
    elif form == "participle":
        aux = "has" if person == "3sg" else "have"
        prefix = f"{lemma}: {subject} {aux} {modifier}"
    else:
        prefix = f"{lemma}: {modifier} {subject} will"
    return Sentence(f"{prefix} {verb} {obj}.", lemma, form, prefix, verb)


_MODIFIERS = {
    "infinitive": MODALS,
    "present": PRESENT_ADVERBS,
    "past": PAST_TIMES,
    "participle": PARTICIPLE_ADVERBS,
    "future": FUTURE_TIMES,
}


def all_sentences(lemma: str, form: str) -> list[Sentence]:
    """Every distinct sentence the templates make for one verb in one form, in a fixed order."""
    objects = OBJECTS.get(lemma, GENERIC_OBJECTS)
    return [
        _sentence(lemma, form, subject, modifier, obj)
        for subject in SUBJECTS
        for modifier in _MODIFIERS[form]
        for obj in objects
    ]


@dataclass(frozen=True)
class CorpusConfig:
    """How many sentences each split takes per (verb, form) pair.

    Attributes:
        seed: Seed of the shuffles that assign sentences to splits.
        pretrain_per_form: Pre-training sentences per verb and allowed form.
        pretrain_val_per_form: Held-out pre-training sentences per verb and allowed form.
        finetune_train_per_form: Irregular fine-tuning sentences per verb and form.
        finetune_val_per_form: Irregular validation sentences per verb and form.
        finetune_test_per_form: Irregular test sentences per verb and form.
        control_val_per_form: Held-out control sentences per control verb and form (val).
        control_test_per_form: Held-out control sentences per control verb and form (test).
    """

    seed: int = 0
    pretrain_per_form: int = 40
    pretrain_val_per_form: int = 2
    finetune_train_per_form: int = 60
    finetune_val_per_form: int = 10
    finetune_test_per_form: int = 25
    control_val_per_form: int = 5
    control_test_per_form: int = 10


@dataclass
class VerbCorpus:
    """The generated splits, each a list of sentences."""

    splits: dict[str, list[Sentence]] = field(default_factory=dict)

    def texts(self, split: str) -> list[str]:
        """Sentence texts of one split."""
        return [s.text for s in self.splits[split]]

    def prompted_texts(self, split: str) -> list[tuple[str, str]]:
        """``(cue, text)`` pairs of one split: the cue is given, the rest is predicted."""
        return [(s.cue, s.text) for s in self.splits[split]]


SPLITS = (
    "pretrain_train",
    "pretrain_val",
    "irregular_train",
    "irregular_val",
    "irregular_test",
    "regular_val",
    "regular_test",
)


def _allocation(lemma: str, form: str, config: CorpusConfig) -> list[tuple[str, int]]:
    """Which splits take how many sentences of one (verb, form), in slicing order."""
    held_out: list[tuple[str, int]] = []
    if lemma in IRREGULAR_VERBS:
        held_out = [
            ("irregular_train", config.finetune_train_per_form),
            ("irregular_val", config.finetune_val_per_form),
            ("irregular_test", config.finetune_test_per_form),
        ]
        if form in PAST_FORMS:  # never seen in pre-training
            return held_out
    elif lemma in CONTROL_VERBS:
        held_out = [
            ("regular_val", config.control_val_per_form),
            ("regular_test", config.control_test_per_form),
        ]
    return held_out + [
        ("pretrain_val", config.pretrain_val_per_form),
        ("pretrain_train", config.pretrain_per_form),
    ]


def generate_corpus(config: CorpusConfig) -> VerbCorpus:
    """Generate every split deterministically from ``config``.

    Raises:
        ValueError: When the templates cannot supply as many distinct sentences as asked.
    """
    corpus = VerbCorpus({name: [] for name in SPLITS})
    for lemma in (*IRREGULAR_VERBS, *CONTROL_VERBS, *EXTRA_REGULAR_VERBS):
        for form in FORMS:
            pool = all_sentences(lemma, form)
            random.Random(f"{config.seed}:{lemma}:{form}").shuffle(pool)
            allocation = _allocation(lemma, form, config)
            needed = sum(count for _, count in allocation)
            if needed > len(pool):
                raise ValueError(
                    f"data.corpus asks for {needed} sentences of '{lemma}' ({form}) "
                    f"but the templates make only {len(pool)}; lower the *_per_form counts"
                )
            start = 0
            for split, count in allocation:
                corpus.splits[split].extend(pool[start : start + count])
                start += count
    return corpus


@dataclass(frozen=True)
class TaskItem:
    """One irregular-verb judgement: the model should prefer ``correct`` over ``wrong``."""

    context: str
    correct: str
    wrong: str

    @property
    def candidates(self) -> tuple[str, str]:
        """The candidates to score, the correct one first."""
        return self.correct, self.wrong


def task_items(sentences: list[Sentence]) -> list[TaskItem]:
    """Irregular-verb task items from the past-simple and past-participle sentences.

    The candidates carry the surrounding spaces (" went " vs " goed "), so both are scored as
    whole words and neither can win by being a prefix of a longer string.
    """
    return [
        TaskItem(s.prefix, f" {s.verb_form} ", f" {regular_past(s.lemma)} ")
        for s in sentences
        if s.lemma in IRREGULAR_VERBS and s.form in PAST_FORMS
    ]
