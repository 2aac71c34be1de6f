"""The library's :class:`~cvit_bench.progress.Progress` protocol shown with ``rich``: the one adapter.

Messages are printed above the bars; each counted step is a transient bar with its count, the time left and
any live fields (e.g. ``loss``).
"""
from __future__ import annotations

from typing import Any

from rich.console import Console


class _RichSteps:
    def __init__(self, bars, label: str, total: int | None) -> None:
        self.bars, self.label, self.total = bars, label, total
        self.task = None

    def __enter__(self) -> "_RichSteps":
        self.task = self.bars.add_task(self.label, total=self.total, info="")
        return self

    def advance(self, n: int = 1, **fields: Any) -> None:
        info = "  ".join(f"{k} {v}" for k, v in fields.items())
        self.bars.update(self.task, advance=n, **({"info": info} if fields else {}))

    def __exit__(self, *exc: object) -> None:
        self.bars.remove_task(self.task)


class RichProgress:
    """Use as ``with RichProgress(console) as progress: library_call(..., progress=progress)``."""

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                             TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console, transient=True)

    def __enter__(self) -> "RichProgress":
        self.bars.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.__exit__(*exc)

    def message(self, text: str) -> None:
        self.bars.console.print(text, highlight=False, markup=False)

    def steps(self, label: str, total: int | None = None) -> _RichSteps:
        return _RichSteps(self.bars, label, total)
