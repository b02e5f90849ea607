"""The README and docs/ read as a product: short front door, no development history, no dead links."""

from __future__ import annotations

import contextlib
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HISTORY = re.compile(r"\bsession\b|\bissue\s*#?\s*\d+|#\d{2,}\b", re.IGNORECASE)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def prose(page: Path) -> list[tuple[int, str]]:
    """The page's lines outside fenced code blocks, with their line numbers."""
    lines, fenced = [], False
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def test_the_readme_is_a_short_front_door_with_short_paragraphs():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300
    run = 0
    for number, line in prose(ROOT / "README.md"):
        paragraph_line = line.strip() and not line.startswith(("|", "#", "- ", "!["))
        run = run + 1 if paragraph_line else 0
        assert run <= 10, f"README.md:{number}: a paragraph over 10 lines"


def test_the_readme_s_tables_quote_the_result_files_their_sections_link():
    """Every number in a table row of a README section that links a result page is on that page."""
    readme = (ROOT / "README.md").read_text()
    checked = 0
    for section in re.split(r"^## ", readme, flags=re.MULTILINE):
        results = re.findall(r"\]\((benchmarks/results/[^)]+\.md)\)", section)
        if not results:
            continue
        source = "\n".join((ROOT / path).read_text() for path in results)
        rows = [line for line in section.splitlines() if line.startswith("|")][2:]  # past the header
        for row in rows:
            for number in re.findall(r"\d+(?:[.,]\d+)*", row):
                assert number in source, f"README.md, section {section.splitlines()[0]!r}: {number} not in {results}"
                checked += 1
    assert checked >= 10  # the two-commands and the seed tables


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_pages_speak_of_the_software_not_of_its_development(page):
    found = [f"{page.name}:{n}: {m.group(0)!r}" for n, line in prose(page) for m in HISTORY.finditer(line)]
    assert not found, found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_points_at_a_file_that_exists(page):
    dead = []
    for number, line in prose(page):
        for target in LINK.findall(line):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                dead.append(f"{page.name}:{number}: {target}")
    assert not dead, dead


@pytest.mark.parametrize("script", ["train", "preview", "generate", "data", "count", "merge", "sweep-report"])
def test_every_console_script_s_help_starts_with_its_purpose_and_fits_a_screen(script, monkeypatch, capsys):
    entry = importlib.metadata.entry_points(group="console_scripts")[f"minituner-{script}"].load()
    monkeypatch.setattr(sys, "argv", [f"minituner-{script}", "--help"])
    with contextlib.suppress(SystemExit):  # argparse exits after --help, Hydra returns
        entry()
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].startswith(f"minituner-{script}: ") and len(lines) <= 40, text
    assert "examples:" in text.lower() and "powered by Hydra" not in text
