"""The documentation's code blocks, for the tests that run them as written."""

from __future__ import annotations

from pathlib import Path

from tests.server import REPO


def blocks(page: str, language: str = "sh", section: str | None = None) -> list[str]:
    """The ```language blocks of ``page`` (a path from the repository root), or of one ``## section``
    of it (None: the whole page)."""
    text = (REPO / page).read_text()
    if section is not None:
        text = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [part.split("```", 1)[0] for part in text.split(f"```{language}\n")[1:]]


def first_screen() -> list[str]:
    """The README's ```sh blocks before its first section."""
    text = (REPO / "README.md").read_text().split("\n## ", 1)[0]
    return [part.split("```", 1)[0] for part in text.split("```sh\n")[1:]]


def read(page: str) -> str:
    return Path(REPO / page).read_text()
