"""The progress bar the commands draw on a terminal (rich, from the `cli` extra)."""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = ["terminal_bar"]


def terminal_bar(file: TextIO, label: str, *fields: str) -> Progress:
    """A started rich progress bar on `file`: `label`, the bar, `fields`, time taken
    and time left.

    Args:
        file: Where to draw it (a terminal).
        label: The word before the bar, e.g. `importing`.
        fields: Text columns after the bar, rich format strings over the task, e.g.
            `"{task.fields[rate]}/s"`.

    Raises:
        ImportError: rich is not installed (the `cli` extra): plain lines will do.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn(label),
        BarColumn(),
        *(TextColumn(field) for field in fields),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=Console(file=file),
    )
    progress.start()
    return progress
