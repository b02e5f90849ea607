"""Self-replay and the KV-cached inference path: what the base writes, how it is trained on, what it never reads."""

from __future__ import annotations

import pytest
import torch

from minituner.data.corpus import CONTROL_VERBS, IRREGULAR_VERBS
from minituner.data.datamodules import IrregularDataModule
from minituner.lora.inject import LoRAConfig, inject_lora
from minituner.model.kv_cache import KVCache, next_token_logits
from minituner.model.minigpt import IGNORE_INDEX, MiniGPT, MiniGPTConfig
from minituner.model.tokenizer import ByteTokenizer
from minituner.training import pipeline
from minituner.training.pipeline import train
from minituner.training.replay import build_replay_set, complete
from tests.helpers import QUICK, TINY_SHAPE, compose_config

TOKENIZER = ByteTokenizer()


def tiny_model(seed: int = 0) -> MiniGPT:
    torch.manual_seed(seed)
    return MiniGPT(MiniGPTConfig(**(TINY_SHAPE | {"n_layer": 2}))).eval()


@pytest.mark.parametrize("adapted", [False, True])
def test_cached_logits_equal_the_full_forward_token_by_token(adapted):
    model = tiny_model()
    if adapted:  # the cache calls the projections as modules: LoRA-wrapped ones work unchanged
        inject_lora(model, LoRAConfig(target_modules="all_linear", seed=3))
        for p in model.parameters():
            p.data += 0.01 * torch.randn_like(p)
    ids = torch.randint(0, 256, (3, 30), generator=torch.Generator().manual_seed(1))
    cache = KVCache.empty(len(model.blocks))
    logits = next_token_logits(model, ids[:, :9], cache)  # a prompt of 9, then one token at a time
    torch.testing.assert_close(logits, model(ids[:, :9])[0][:, -1])
    for end in range(10, 31):
        logits = next_token_logits(model, ids[:, end - 1 : end], cache)
        torch.testing.assert_close(logits, model(ids[:, :end])[0][:, -1], rtol=1e-5, atol=1e-5)
    assert cache.length == 30
    with pytest.raises(ValueError, match="sequence length 65 exceeds model.block_size=64"):
        next_token_logits(model, torch.cat([ids, ids[:, :5]], dim=1), cache)


def test_completions_start_with_their_prompt_and_end_at_eos_or_the_length_cap():
    model = tiny_model()
    prompts = ["jump: ", "cook: ", "a: "]
    first = complete(model, prompts, TOKENIZER, 20, torch.Generator().manual_seed(5))
    again = complete(model, prompts, TOKENIZER, 20, torch.Generator().manual_seed(5))
    assert first == again  # seeded
    for prompt, ids in zip(prompts, first, strict=True):
        assert ids[: len(prompt) + 1] == TOKENIZER.encode(prompt, bos=True)
        assert len(ids) <= 20 and (len(ids) == 20 or ids[-1] == TOKENIZER.eos_id)
        assert TOKENIZER.eos_id not in ids[:-1] and TOKENIZER.pad_id not in ids
    assert model.training is False  # left as it was


def test_the_replay_set_trains_on_what_the_base_wrote_never_on_the_prompt():
    replay = build_replay_set(
        tiny_model(),
        ["jump: ", "open: "],
        64,
        sentences=6,
        weight=0.5,
        batch_size=4,
        temperature=1.0,
        max_len=40,
        seed=2,
    )
    assert replay.inputs.shape == replay.targets.shape == (6, 64)
    for row in range(6):
        cue = TOKENIZER.encode(["jump: ", "open: "][row % 2])
        given = 1 + len(cue)
        assert replay.inputs[row, 1:given].tolist() == cue
        assert (replay.targets[row, : given - 1] == IGNORE_INDEX).all()  # BOS and cue positions
        written = (replay.targets[row] != IGNORE_INDEX).nonzero().squeeze(1)
        assert written[0] == given - 1 and (written.diff() == 1).all()  # from the cue's end, no gaps
        # each target is the next input token (the last one is the sentence's last token)
        assert replay.targets[row, written[:-1]].tolist() == replay.inputs[row, written[:-1] + 1].tolist()
    inputs, targets = replay.batch(7)
    assert inputs.shape == (4, 64)
    assert torch.equal(replay.batch(7)[0], inputs) and not torch.equal(replay.batch(8)[0], inputs)


def test_replay_prompts_are_neither_fine_tuned_nor_control_verbs():
    prompts = IrregularDataModule(corpus={}).replay_prompts()
    lemmas = {p.removesuffix(": ") for p in prompts}
    assert len(lemmas) == len(prompts) == 65
    assert not lemmas & set(IRREGULAR_VERBS) and not lemmas & set(CONTROL_VERBS)


def test_the_trained_adapter_never_depends_on_the_test_split_and_replay_changes_it(tmp_path, seed_tiny_base):
    base_dir = next(d for d in seed_tiny_base(tmp_path / "outputs").iterdir() if (d / "config.json").is_file())
    run = ["regime=lora", f"base.path={base_dir}", *QUICK, "callbacks=none"]
    altered = ["data.corpus.finetune_test_per_form=20", "data.corpus.control_test_per_form=8"]
    same = train(compose_config(run, tmp_path, run="a"))
    other_test = train(compose_config([*run, *altered], tmp_path, run="b"))
    without_replay = train(compose_config([*run, "regime.replay.weight=0"], tmp_path, run="c"))

    assert other_test["adapter_sha256"] == same["adapter_sha256"]  # chosen and trained without the test split
    assert other_test["irregular_acc"] != same["irregular_acc"] or other_test["regular_ppl"] != same["regular_ppl"]
    assert without_replay["adapter_sha256"] != same["adapter_sha256"]


def test_a_cached_replay_set_trains_the_same_adapter_as_a_fresh_one(tmp_path, seed_tiny_base, monkeypatch):
    base_dir = next(d for d in seed_tiny_base(tmp_path / "outputs").iterdir() if (d / "config.json").is_file())
    run = ["regime=lora", f"base.path={base_dir}", *QUICK, "callbacks=none"]
    fresh = train(compose_config(run, tmp_path, run="fresh"))
    (kept,) = (tmp_path / "outputs" / "replay").iterdir()

    def never(*args, **kwargs):
        raise AssertionError("the base wrote its sentences again")

    monkeypatch.setattr(pipeline, "build_replay_set", never)
    cached = train(compose_config(run, tmp_path, run="cached"))  # reads the set: writing it would raise
    assert cached["adapter_sha256"] == fresh["adapter_sha256"]
    with pytest.raises(AssertionError, match="wrote its sentences again"):  # another seed: another set
        train(compose_config([*run, "seed=7"], tmp_path, run="other_seed"))
    assert [p.name for p in (tmp_path / "outputs" / "replay").iterdir()] == [kept.name]
