"""Measured activations: the storages autograd saves for backward, seen through its own hooks.

``torch.autograd.graph.saved_tensors_hooks`` hands every tensor an operation saves for its
backward to a pack hook. When the forward pass ends, the meter counts the distinct storages of
those tensors that the graph still holds (a view saved twice is one allocation; a tensor saved by
a part of the graph that was already freed, e.g. a checkpointed block with nothing to train,
holds nothing) and leaves out the model's parameters and buffers, which are weights, not
activations. Activation checkpointing passes the inputs it keeps through the same hooks, so a
checkpointed model is measured the same way.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn


class SavedTensorMeter:
    """Counts what autograd saves inside ``model``'s forward passes while the meter is active.

    Only the model's own forward passes are metered: a check on the loss elsewhere (``isfinite``
    saves the loss it reads) belongs to no training graph.

    Args:
        model: Its parameters and buffers are not counted; its forward calls are recorded in
            ``batches`` as ``(batch_size, seq_len)`` of their first argument.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.owned = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
        self.saved: list[weakref.ref] = []
        self.batches: list[tuple[int, int]] = []
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)
        self._handles: list = []

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        # the graph holds exactly the object returned here: alive while the graph needs it
        self.saved.append(weakref.ref(tensor))
        return tensor

    def _forward_starts(self, module: nn.Module, args: tuple) -> None:
        batch, seq = args[0].shape[:2]
        self.batches.append((int(batch), int(seq)))
        self._hooks.__enter__()

    def _forward_ends(self, module: nn.Module, args: tuple, output) -> None:
        self._hooks.__exit__(None, None, None)

    @property
    def bytes(self) -> int:
        """Bytes of the distinct storages the saved tensors still alive hold (read it before backward)."""
        storages = {}
        for reference in self.saved:
            tensor = reference()
            if tensor is not None:
                storage = tensor.untyped_storage()
                if storage.data_ptr() not in self.owned:  # live storages have distinct addresses
                    storages[storage.data_ptr()] = storage.nbytes()
        return sum(storages.values())

    def __enter__(self) -> SavedTensorMeter:
        self._handles = [
            self.model.register_forward_pre_hook(self._forward_starts),
            self.model.register_forward_hook(self._forward_ends, always_call=True),
        ]
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
