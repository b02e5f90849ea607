"""``minituner-merge ADAPTER_DIR OUT_DIR [--base BASE_DIR] [--quant SCHEME] [--as-lora]``: merge an adapter.

Writes the adapter merged into its base, or (``--as-lora``) a PiSSA / OLoRA / LoftQ adapter as a plain
LoRA of the untouched base.
"""

from __future__ import annotations

import sys
from pathlib import Path

from minituner.lora.adapter_io import AdapterError
from minituner.lora.export import export_plain_lora
from minituner.lora.merge import MERGE_TARGETS, merge_to_checkpoint
from minituner.quant.linear import SCHEMES
from minituner.store.base_cache import BaseCheckpointError
from minituner.store.ownership import OwnershipError
from minituner.training.terminal import PurposeFirstParser


def _parser() -> PurposeFirstParser:
    parser = PurposeFirstParser(
        "minituner-merge",
        "write a LoRA adapter merged into its base (a base checkpoint), or export it as a plain LoRA.",
        "  minituner-merge outputs/runs/<run>/adapter merged/                      # fp32 base + adapter\n"
        "  minituner-merge outputs/runs/<run>/adapter merged_nf4/ --quant nf4_dq   # merged into the NF4 weights\n"
        "  minituner-merge outputs/runs/<run>/adapter plain/ --as-lora             # PiSSA, OLoRA, LoftQ\n\n"
        "writes: OUT_DIR only (a new or empty directory, or an earlier merged model; never files of yours)",
    )
    parser.add_argument("adapter_dir", type=Path, help="adapter directory (a run's adapter/)")
    parser.add_argument("out_dir", type=Path, help="directory for the merged checkpoint")
    parser.add_argument("--base", type=Path, default=None, help="base directory (default: from the adapter)")
    parser.add_argument(
        "--allow-base-mismatch", action="store_true", help="merge onto a base the adapter was not trained on"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into OUT_DIR even when it holds other files (they are kept; nothing minituner did not write "
        "is ever replaced or deleted)",
    )
    parser.add_argument(
        "--quant",
        choices=["none", *SCHEMES],
        default="none",
        help="store the merged model in this quantization scheme (written as the weights it computes with)",
    )
    parser.add_argument(
        "--merge-into",
        choices=list(MERGE_TARGETS),
        default="quantized",
        help="with --quant: merge into the quantized base and re-quantize (quantized, as PEFT does), or merge "
        "into the full-precision base and then quantize (full_precision)",
    )
    parser.add_argument(
        "--as-lora",
        action="store_true",
        help="instead of merging: write a PiSSA, OLoRA or LoftQ adapter as a rank-2r plain LoRA of the original "
        "base (it then serves on the untouched base, in minituner or PEFT)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``minituner-merge ADAPTER_DIR OUT_DIR [--base BASE_DIR] [--overwrite]`` (2: bad input)."""
    args = _parser().parse_args(argv)
    try:
        if args.as_lora:
            digest = export_plain_lora(args.adapter_dir, args.out_dir, args.overwrite)
            print(f"plain LoRA adapter written to {args.out_dir} (sha256 {digest})")
            return 0
        digest = merge_to_checkpoint(
            args.adapter_dir,
            args.out_dir,
            args.base,
            args.allow_base_mismatch,
            args.overwrite,
            args.quant,
            args.merge_into,
        )
    except (AdapterError, BaseCheckpointError, OwnershipError) as error:
        print(f"minituner-merge: error: {error}", file=sys.stderr)
        return 2
    print(f"merged checkpoint written to {args.out_dir} (sha256 {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
