"""The README stays a short entry (its two commands first, at most 250 lines), and no link in it or in
``docs/`` leads nowhere: every relative link names a file that exists, and every ``#anchor`` a heading
of that file (as GitHub makes anchors of headings)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from config.paths import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
DOCS = sorted((PROJECT_ROOT / "docs").glob("*.md"))
MAX_README_LINES = 250
# [text](target) outside code: the target up to a space or the closing parenthesis.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def prose(markdown: str) -> str:
    """The text without fenced blocks and code spans, where a bracket is not a link."""
    return CODE_SPAN.sub("", FENCE.sub("", markdown))


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped but hyphens and underscores, spaces to hyphens."""
    text = CODE_SPAN.sub(lambda span: span.group(0).strip("`"), heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    headings = re.findall(r"^#{1,6} (.+)$", FENCE.sub("", path.read_text()), re.MULTILINE)
    return {anchor(heading) for heading in headings}


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in LINK.findall(prose(path.read_text())):
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, fragment = target.partition("#")
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target}: no such heading in {linked.name}")
    return broken


def test_the_readme_opens_with_the_two_commands_and_stays_short() -> None:
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; at most {MAX_README_LINES}"
    first_block = FENCE.search(text)
    assert first_block is not None and "\n## " not in text[: first_block.start()]
    commands = [line.split("#")[0].strip() for line in first_block.group(0).splitlines()[1:-1]]
    assert commands == ["make run", "make test"]


def test_the_readme_says_how_to_run_all_unit_and_marked_tests() -> None:
    tests = README.read_text().partition("\n## Tests\n")[2].partition("\n## ")[0]
    assert "make test " in tests or "make test\n" in tests
    assert "tests/unit" in tests
    assert re.search(r"pytest -m \S+", tests)


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda path: str(path.relative_to(PROJECT_ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading(path: Path) -> None:
    assert broken_links(path) == []


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## The `yolo-jobs` command (CLI)\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#the-yolo-jobs-command-cli) [web](https://example.com/x) `[code](none.md)`\n"
        "[gone](missing.md) [nowhere](other.md#no-such-heading)\n"
        "```\n[in a block](none.md)\n```\n"
    )
    assert broken_links(page) == [
        "missing.md: no such file",
        "other.md#no-such-heading: no such heading in other.md",
    ]
