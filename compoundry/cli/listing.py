"""Listings that stay readable at any terminal width.

A rich ``Table`` squeezed into 80 columns cuts every cell to a few characters (``dialo…``). When a listing
does not fit, it is printed as one block per row instead, ``column: value`` a line, the way ``psql \\x``
does; `--json` remains the form for scripts.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table


def print_rows(console: Console, columns: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None) -> None:
    """A table when its natural width fits the console, else a block per row."""
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*row)
    natural = Measurement.get(console, console.options.update_width(100_000), table).maximum  # unsqueezed
    if natural <= console.width:
        console.print(table)
        return
    if title:
        console.print(f"[bold]{title}[/]")
    width = max(len(c) for c in columns)
    for number, row in enumerate(rows):
        if number:
            console.print()
        for column, value in zip(columns, row, strict=True):
            console.print(f"[dim]{column:>{width}}[/]  {value}", highlight=False, overflow="fold")
