"""The README and docs/ read as a product: short front door, no development history, no dead links."""

from __future__ import annotations

import contextlib
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

from minituner.data.corpus import CorpusConfig, generate_corpus

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


def test_the_readme_is_a_short_front_door():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_paragraph_or_list_item_runs_over_ten_lines(page):
    run = 0
    for number, line in prose(page):
        if re.match(r"(- |\d+\. )", line):  # a list item starts a block of its own
            run = 1
        else:
            run = run + 1 if line.strip() and not line.startswith(("|", "#", "![")) else 0
        assert run <= 10, f"{page.name}:{number}: a paragraph or list item over 10 lines"


def excerpt_lines(section: str) -> list[str]:
    """The lines of the section's excerpts (its ```text blocks), past blank lines and "..." (a cut)."""
    blocks = re.findall(r"^```text\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if line not in ("", "...")]


QUOTING = [ROOT / "README.md", *(ROOT / "docs" / f"{name}.md" for name in ("preview", "lora", "your-data"))]


@pytest.mark.parametrize("page", QUOTING, ids=lambda p: p.name)
def test_quoted_figures_and_excerpts_come_from_the_result_files_their_sections_link(page):
    """Every number in a table row of a section that links a result page is on that page, and every
    line of the section's excerpts (```text blocks) is a line of it: nothing is copied by hand."""
    checked = 0
    for section in re.split(r"^## ", page.read_text(), flags=re.MULTILINE):
        results = re.findall(r"\]\(((?:\.\./)?benchmarks/results/[^)]+\.md)\)", section)
        if not results:
            continue
        source = "\n".join((page.parent / path).read_text() for path in results)
        where = f"{page.name}, section {section.splitlines()[0]!r}"
        rows = [line for line in section.splitlines() if line.startswith("|")][2:]  # past the header
        for row in rows:
            for number in re.findall(r"\d+(?:[.,]\d+)*", row):
                assert number in source, f"{where}: {number} not in {results}"
                checked += 1
        for line in excerpt_lines(section):
            assert line in source.splitlines(), f"{where}: {line!r} is not a line of {results}"
            checked += 1
    assert checked >= 10  # the two-commands and seed tables, the preview's excerpt


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


def option_names(listing: str) -> set[str]:
    """``minigpt (default) | tiny | ...`` -> {"minigpt", "tiny"}: the first word of each ``|`` item."""
    listing = re.sub(r"\([^)]*\)", "", listing)
    return {m.group(1) for item in listing.split("|") if (m := re.match(r"\s*([a-z][a-z0-9_]*)", item))}


def help_listings() -> dict[str, str]:
    """Group -> its options as ``minituner-train --help`` lists them (continuation lines start with ``|``)."""
    template = (ROOT / "conf" / "train.yaml").read_text().split("Config groups it reads")[1].split("\n\n")[0]
    listings: dict[str, str] = {}
    for line in template.splitlines()[1:]:
        if m := re.match(r"\s+(\w+) {2,}(.+)$", line):
            group = m.group(1)
            listings[group] = m.group(2)
        elif line.strip().startswith("|"):
            listings[group] += line
    return listings


def defaults_comments() -> dict[str, str]:
    """Group -> the option list in the comment of its line in ``conf/train.yaml``'s defaults."""
    listings: dict[str, str] = {}
    for line in (ROOT / "conf" / "train.yaml").read_text().split("\nresume:")[0].splitlines():
        if m := re.match(r"\s+- (\w+): \S+\s+# (.*)$", line):
            group = m.group(1)
            listings[group] = m.group(2).rsplit(": ", 1)[-1] if "|" in m.group(2) else ""
        elif re.match(r"\s+# \|", line):
            listings[group] += line.split("#", 1)[1]
    return {group: listing for group, listing in listings.items() if listing}


def readme_config_table() -> dict[str, str]:
    section = (ROOT / "README.md").read_text().split("## Config groups")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `(\w+)` \| (.+) \|$", section, flags=re.MULTILINE)
    return {group: " | ".join(re.findall(r"`(\w+)`", cell)) for group, cell in rows}


def group_files(group: str) -> set[str]:
    return {p.stem for p in (ROOT / "conf" / group).glob("*.yaml")}


@pytest.mark.parametrize(
    "where,listings",
    [("--help", help_listings()), ("conf/train.yaml", defaults_comments()), ("README.md", readme_config_table())],
)
def test_config_groups_are_listed_with_their_real_options(where, listings):
    """Every option --help, the config comments and the README name is a file under conf/<group>/, and
    a full list (no "...") names them all; the count-only model presets may be left out of --help."""
    assert {"model", "regime", "quant", "trainer", "logger"} <= set(listings), (where, listings)
    for group, listing in listings.items():
        if group == "callbacks":
            continue  # listed as "default, none, or any of them by name"
        names, files = option_names(listing), group_files(group)
        assert names <= files, f"{where}: {group} lists {sorted(names - files)}, not in conf/{group}/"
        count_only = {"gpt2_like", "llama2_7b", "llama3_8b"} if (group, where) == ("model", "--help") else set()
        if "..." not in listing:
            assert files - count_only <= names, f"{where}: {group} leaves out {sorted(files - names - count_only)}"


def test_the_task_page_gives_the_corpus_split_sizes_the_generator_makes():
    sizes = {name: len(sentences) for name, sentences in generate_corpus(CorpusConfig()).splits.items()}
    documented = {}
    for names, counts in re.findall(r"^\| (`.+?) \| ([\d,/ ]+) \|", (ROOT / "docs" / "task.md").read_text(), re.M):
        names = re.findall(r"`(\w+)`", names)
        names = [names[0]] + [names[0].split("_")[0] + n if n.startswith("_") else n for n in names[1:]]
        documented |= dict(zip(names, (int(c.replace(",", "")) for c in counts.split("/")), strict=True))
    assert documented == sizes
