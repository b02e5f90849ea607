"""Training memory: the calculator that predicts it (any shape) and the ledger that measures it."""

from minituner._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {"footprint": ["Footprint", "predict", "fits"], "ledger": ["tensor_ledger", "process_memory"]},
)
