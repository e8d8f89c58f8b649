"""One progress-bar builder (rich) for every long-running stage: decode, train, teach, verify, synth.

Bars go to stderr so that a verb's stdout stays its result; `enabled=False` (library use, `--no-progress`,
other hosts than process 0) gives a bar that draws nothing, so callers never branch on it.
"""
from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


def progress_bar(label: str, *fields: str, enabled: bool = True, elapsed: bool = False,
                 transient: bool = False) -> Progress:
    """A bar `label [####   ] n/N fields... time`; each of `fields` is a rich format string over the task,
    e.g. "loss {task.fields[loss]}". `elapsed` shows the time so far instead of the time remaining (for work
    whose rate is uneven, like teacher calls)."""
    columns: list[ProgressColumn] = [TextColumn(label), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(f) for f in fields]
    columns.append(TimeElapsedColumn() if elapsed else TimeRemainingColumn())
    return Progress(*columns, console=Console(stderr=True), disable=not enabled, transient=transient)
