"""A Markdown table from rows of values: the one format every report of the package uses."""

import math
from collections.abc import Iterable, Sequence
from typing import Any


def format_cell(value: Any, digits: int = 4) -> str:
    """Floats with a fixed number of decimals (NaN as "n/a"); anything else as str, | escaped."""
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table, numbers right-aligned."""
    rows = [list(row) for row in rows]
    align = [
        "---:" if rows and isinstance(rows[0][i], int | float) else "---"
        for i in range(len(header))
    ]
    lines = [
        "| " + " | ".join(format_cell(h) for h in header) + " |",
        "| " + " | ".join(align) + " |",
    ]
    lines += ["| " + " | ".join(format_cell(v, digits) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
