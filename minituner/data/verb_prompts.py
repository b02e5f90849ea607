"""Irregular-verb prompts: corpus sentences cut just before the verb form the task is about.

``"go: yesterday she"`` should continue `` went home.``; the base, which never saw an irregular
past form, writes `` goed home.``. The datamodules use them as self-replay cues and the
generation reports as the prompts a model completes.
"""

from __future__ import annotations

from dataclasses import dataclass

from minituner.data.corpus import IRREGULAR_VERBS, PAST_FORMS, Sentence, regular_past


@dataclass(frozen=True)
class VerbPrompt:
    """A sentence cut before its verb form: the prompt, the correct form, the over-regularised one."""

    prompt: str
    correct: str
    wrong: str


def verb_prompts(sentences: list[Sentence], per_verb_and_form: int | None = None) -> list[VerbPrompt]:
    """Prompts from the past-simple and participle sentences of irregular verbs, in corpus order.

    Args:
        sentences: A corpus split (e.g. ``irregular_test``).
        per_verb_and_form: Keep only the first n of each (verb, form) pair; None keeps all.
    """
    kept: dict[tuple[str, str], int] = {}
    prompts = []
    for s in sentences:
        if s.lemma not in IRREGULAR_VERBS or s.form not in PAST_FORMS:
            continue
        seen = kept.get((s.lemma, s.form), 0)
        if per_verb_and_form is None or seen < per_verb_and_form:
            kept[(s.lemma, s.form)] = seen + 1
            prompts.append(VerbPrompt(s.prefix, s.verb_form, regular_past(s.lemma)))
    return prompts
