"""``docs/models.md``'s tables: each dataset's committed bundles side by side on the release battery, rendered
from their manifests (the battery each passed the release gate with).

    python -m training.model_choice    # rewrites the tables in docs/models.md from models/

A test checks that the page holds what the manifests render.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from training.model_card import TITLES

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "models.md"
BEGIN = "<!-- battery: python -m training.model_choice -->"
END = "<!-- /battery -->"
#: A figure is shown in bold where it is this much (dB) above every other bundle's on the row.
AHEAD_DB = 0.1


def manifests(models: Path) -> list[dict[str, Any]]:
    """The manifests of the bundles under ``models``, by name."""
    return [json.loads(path.read_text()) for path in sorted(models.glob("*/manifest.json"))]


def _served(scores: dict[str, float]) -> float:
    """The figure of the graph the service runs: int8 where the bundle ships one."""
    return scores.get("int8", scores["float32"])


def table(bundles: list[dict[str, Any]]) -> str:
    """One table per dataset: every battery row, a column per bundle."""
    datasets = sorted({manifest["dataset"] for manifest in bundles})
    parts = []
    for dataset in datasets:
        group = [m for m in bundles if m["dataset"] == dataset and m["evaluation"].get("release_gate")]
        if not group:
            continue
        header = ["row", *(f"`{m['name']}` {m['version']}" for m in group)]
        lines = [
            f"{TITLES.get(dataset, dataset)}:",
            "",
            "| " + " | ".join(header) + " |",
            "|---" + "|---:" * len(group) + "|",
        ]
        rows = group[0]["evaluation"]["release_gate"]["battery"]
        for row in rows:
            figures = [_served(m["evaluation"]["release_gate"]["battery"][row]) for m in group]
            cells = []
            for index, figure in enumerate(figures):
                others = figures[:index] + figures[index + 1 :]
                ahead = bool(others) and figure - max(others) > AHEAD_DB
                cells.append(f"**{figure:.2f}**" if ahead else f"{figure:.2f}")
            lines.append("| " + " | ".join([row, *cells]) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def render(page: str, bundles: list[dict[str, Any]]) -> str:
    """``page`` with the tables between the markers replaced by the current ones."""
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table(bundles)}\n{END}{tail}"


def main() -> int:
    PAGE.write_text(render(PAGE.read_text(), manifests(REPO / "models")))
    print(f"tables written to {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
