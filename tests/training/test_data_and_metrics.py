import math

import torch

from minituner.data.corpus import TaskItem
from minituner.data.datamodules import IrregularDataModule, LanguageModelingDataset, PretrainDataModule, TaskDataset
from minituner.model.minigpt import IGNORE_INDEX, MiniGPT, MiniGPTConfig
from minituner.model.tokenizer import ByteTokenizer
from minituner.training.metrics import candidate_preferences, relative_drift, summed_target_logprob

TOK = ByteTokenizer()


def test_language_modeling_rows_shift_by_one_and_ignore_padding():
    data = LanguageModelingDataset([("", "ab")], TOK, block_size=8, kind="lm")
    inputs, targets = data[0]
    assert inputs.tolist() == [TOK.bos_id, 97, 98, TOK.eos_id] + [TOK.pad_id] * 4
    assert targets.tolist() == [97, 98, TOK.eos_id] + [IGNORE_INDEX] * 5


def test_the_prompt_is_given_never_predicted():
    data = LanguageModelingDataset([("go: ", "go: x.")], TOK, block_size=10, kind="lm")
    inputs, targets = data[0]
    assert inputs.tolist()[:7] == TOK.encode("go: x.", bos=True)
    # BOS, 'g', 'o', ':' predict the prompt's own bytes 'g', 'o', ':', ' ': ignored
    assert targets.tolist() == [IGNORE_INDEX] * 4 + [ord("x"), ord("."), TOK.eos_id] + [IGNORE_INDEX] * 3


def test_task_targets_cover_exactly_the_candidate_tokens():
    data = TaskDataset([TaskItem("go: she", " went ", " goed ")], TOK, block_size=32)
    inputs, targets = data[0]
    for row, candidate in enumerate((" went ", " goed ")):
        scored = targets[row][targets[row] != IGNORE_INDEX].tolist()
        assert scored == list(candidate.encode())
        # each scored token is the input token one position later
        positions = (targets[row] != IGNORE_INDEX).nonzero().flatten()
        full = TOK.encode("go: she" + candidate, bos=True)
        assert [full[p + 1] for p in positions.tolist()] == scored
        assert inputs[row][: len(full) - 1].tolist() == full[:-1]


def test_summed_logprob_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]))
    targets = torch.tensor([[0, 1]])
    assert math.isclose(summed_target_logprob(logits, targets).item(), math.log(0.5) + math.log(0.8), rel_tol=1e-6)
    masked = torch.tensor([[IGNORE_INDEX, 1]])
    assert math.isclose(summed_target_logprob(logits, masked).item(), math.log(0.8), rel_tol=1e-6)


class PrefersToken(torch.nn.Module):
    """A fake LM that always gives token `token` probability ~1."""

    def __init__(self, token: int):
        super().__init__()
        self.token = token

    def forward(self, idx, targets=None):
        logits = torch.full((*idx.shape, 259), -10.0)
        logits[..., self.token] = 10.0
        return logits, None


def test_candidate_preferences_follow_the_model():
    data = TaskDataset([TaskItem("go: she", " went ", " goed ")], TOK, block_size=32)
    inputs, targets = (t.unsqueeze(0) for t in data[0])
    assert candidate_preferences(PrefersToken(ord("w")), inputs, targets).tolist() == [True]
    assert candidate_preferences(PrefersToken(ord("g")), inputs, targets).tolist() == [False]


def test_relative_drift():
    assert math.isclose(relative_drift(2.0, 2.1), 0.05)
    assert math.isclose(relative_drift(2.0, 1.5), -0.25)


def test_datamodules_serve_their_splits_with_a_seeded_shuffle():
    corpus = {"pretrain_per_form": 4, "finetune_train_per_form": 6}
    pre = PretrainDataModule(corpus=corpus, batch_size=8, seed=3)
    assert len(pre.train_dataloader().dataset) == len(pre.corpus.splits["pretrain_train"])
    kinds = [next(iter(loader))["kind"] for loader in pre.val_dataloader()]
    assert kinds == ["lm", "control", "task"]
    first = next(iter(pre.train_dataloader()))["input_ids"]
    again = next(iter(PretrainDataModule(corpus=corpus, batch_size=8, seed=3).train_dataloader()))["input_ids"]
    assert torch.equal(first, again)
    fine = IrregularDataModule(corpus=corpus, batch_size=8)
    assert len(fine.train_dataloader().dataset) == 8 * 5 * 6


def test_task_accuracy_of_an_untrained_model_is_a_fraction():
    model = MiniGPT(MiniGPTConfig())
    loader = IrregularDataModule(corpus={}, batch_size=8).test_dataloader()[2]
    batch = next(iter(loader))
    prefs = candidate_preferences(model, batch["input_ids"], batch["targets"])
    assert prefs.dtype == torch.bool and len(prefs) == len(batch["input_ids"])
