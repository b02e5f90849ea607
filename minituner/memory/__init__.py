"""Training memory: the calculator that predicts it (any shape) and the ledger that measures it."""

from minituner.memory.footprint import Footprint, fits, predict
from minituner.memory.ledger import process_memory, tensor_ledger

__all__ = ["Footprint", "fits", "predict", "process_memory", "tensor_ledger"]
