"""The fenced code blocks of README.md and docs/*.md, for the tests that run them.

A block is named by an HTML comment on the line before its opening fence, which the rendered page does
not show::

    <!-- snippet: training-python -->        a test runs it: doc_snippet("training-python")
    <!-- not-executed: needs a GPU -->       no test runs it, for the reason given

Every Python block must carry one of the two (tests/test_docs.py checks it, and that every named Python
block is run by some test). A name may label several blocks only if their code is identical, so that a
page can repeat the README's example and the test still runs what both show.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"<!--\s*(snippet|not-executed):\s*(.*?)\s*-->")
FENCE = re.compile(r"^```(\S*)\s*$")


def doc_files() -> list[Path]:
    """README.md and every page of docs/, in a stable order."""
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Block:
    path: Path  # the Markdown file
    line: int  # 1-based line of the opening fence
    language: str  # the fence's info string: python, bash, json, ... ("" if none)
    code: str  # the block's text, ending in a newline
    name: str | None  # <!-- snippet: NAME -->
    not_executed: str | None  # <!-- not-executed: REASON -->

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of one Markdown file, with the marker of the line before each."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        assert end < len(lines), f"{path}:{index + 1}: a code block is never closed"
        marker = MARKER.fullmatch(lines[index - 1].strip()) if index > 0 else None
        kind, value = (marker.group(1), marker.group(2)) if marker else (None, None)
        found.append(
            Block(
                path=path,
                line=index + 1,
                language=opening.group(1),
                code="\n".join(lines[index + 1 : end]) + "\n",
                name=value if kind == "snippet" else None,
                not_executed=value if kind == "not-executed" else None,
            )
        )
        index = end + 1
    return found


def all_blocks() -> list[Block]:
    return [block for path in doc_files() for block in blocks(path)]


def doc_snippet(name: str) -> Block:
    """The block named ``name`` in README.md or docs/ (the first, if identical copies are named alike)."""
    named = [block for block in all_blocks() if block.name == name]
    assert named, f"no code block is marked <!-- snippet: {name} --> in README.md or docs/"
    assert all(block.code == named[0].code for block in named), (
        f"the blocks named {name!r} differ: {', '.join(block.where for block in named)}"
    )
    return named[0]


def prose(path: Path) -> str:
    """The file's text outside fenced blocks (for links and inline commands)."""
    text = path.read_text(encoding="utf-8")
    return re.sub(r"^```.*?^```[ \t]*$", "", text, flags=re.DOTALL | re.MULTILINE)
