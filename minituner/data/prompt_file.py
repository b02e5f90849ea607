"""A file of prompts, one per line: what ``minituner-generate prompts_file=...`` reads."""

from __future__ import annotations

from pathlib import Path

from minituner.data.instructions import DataFileError


def read_prompt_file(path: Path) -> list[str]:
    """The non-blank lines of a UTF-8 file (line endings removed, everything else kept).

    Raises:
        DataFileError: The path is not a file, a line is not UTF-8 (each such line named with the
            byte and column), or every line is blank.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError([f"prompts_file={str(path)!r} is not a file"])
    prompts, problems = [], []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8").removesuffix("\r")
        except UnicodeDecodeError as error:
            problems.append(
                f"{path}:{number}: not UTF-8 text (byte {raw[error.start]:#04x} at column {error.start + 1}): "
                "the byte tokenizer reads UTF-8 only"
            )
            continue
        if line.strip():
            prompts.append(line)
    if not prompts and not problems:
        problems.append(f"prompts_file={str(path)!r} holds no prompt (every line is blank)")
    if problems:
        raise DataFileError(problems)
    return prompts
