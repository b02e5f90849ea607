"""A shuffling DataLoader that can continue an epoch exactly where a checkpoint left it.

A DataLoader with a seeded ``generator`` draws from it each time an epoch starts (its base
seed, then the sampler's permutation seed). Remembering the generator's state at the start of
the current epoch and the number of batches already trained is therefore enough to replay the
same permutation and skip what was done: the resumed run sees the batches in the very order an
uninterrupted run would, and later epochs draw the same seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader


@dataclass
class LoaderPosition:
    """Where training stood in an epoch: the generator state at its start, batches done since."""

    generator_state: torch.Tensor
    batches_done: int


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` (with a ``generator``) whose next epoch can start at a ``LoaderPosition``.

    Args:
        start: Continue from this position on the next ``iter()`` (a resumed run); then as usual.
    """

    def __init__(self, *args, start: LoaderPosition | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.generator is None:
            raise ValueError("ResumableDataLoader needs a seeded generator")
        self.start = start
        self.epoch_start_state = self.generator.get_state()

    def __iter__(self):
        skip = 0
        if self.start is not None:
            self.generator.set_state(self.start.generator_state)
            skip, self.start = self.start.batches_done, None
        self.epoch_start_state = self.generator.get_state()
        iterator = super().__iter__()
        for _ in range(skip):  # the same permutation, minus the batches already trained on
            next(iterator)
        return iterator

    def position(self, batches_done: int) -> LoaderPosition:
        """The position after ``batches_done`` batches of the current epoch."""
        return LoaderPosition(self.epoch_start_state.clone(), batches_done)

    def next_epoch_position(self) -> LoaderPosition:
        """The position at the start of the next epoch (the current one is finished)."""
        return LoaderPosition(self.generator.get_state(), 0)
