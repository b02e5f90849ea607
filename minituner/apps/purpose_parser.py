"""An ``argparse`` parser whose ``--help`` starts with what the command does and ends with examples."""

from __future__ import annotations

import argparse


class PurposeFirstParser(argparse.ArgumentParser):
    """``--help`` opens with ``<prog>: <purpose>``, then the usage and options, then the ``examples`` as given."""

    def __init__(self, prog: str, purpose: str, examples: str, **kwargs):
        super().__init__(
            prog=prog, epilog=f"examples:\n{examples}", formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs
        )
        self.purpose = purpose

    def format_help(self) -> str:
        return f"{self.prog}: {self.purpose}\n\n{super().format_help()}"
