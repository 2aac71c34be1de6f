"""The one progress interface of the library: messages and counted steps.

Every long step (prepare, mini-base build, train, evaluate, leaderboard submit, demo) takes an optional
``progress: Progress``; it never imports ``rich``. The CLI adapts this protocol to ``rich`` once
(:mod:`cvit_bench.cli.progress`); a Python user passes :class:`PrintProgress`, their own object with the same
two methods, or nothing (:data:`SILENT`).

``message(text)`` says one thing that happened ("auto batch size: 32"). ``steps(label, total)`` opens a
counted step (a bar in the CLI) and returns a :class:`Steps` context manager whose ``advance(n, **fields)``
moves it on; ``fields`` carry a live value such as the training loss (``advance(1, loss="0.412")``).
"""
from __future__ import annotations

import sys
from typing import Any, Protocol, runtime_checkable

__all__ = ["Progress", "Steps", "SILENT", "PrintProgress", "as_progress"]


@runtime_checkable
class Steps(Protocol):
    def advance(self, n: int = 1, **fields: Any) -> None: ...

    def __enter__(self) -> "Steps": ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class Progress(Protocol):
    def message(self, text: str) -> None: ...

    def steps(self, label: str, total: int | None = None) -> Steps: ...


class _NoSteps:
    def advance(self, n: int = 1, **fields: Any) -> None:
        pass

    def __enter__(self) -> "_NoSteps":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class SilentProgress:
    """Shows nothing (the default of every library function)."""

    def message(self, text: str) -> None:
        pass

    def steps(self, label: str, total: int | None = None) -> Steps:
        return _NoSteps()


SILENT = SilentProgress()


class _PrintedSteps(_NoSteps):
    def __init__(self, owner: "PrintProgress", label: str, total: int | None) -> None:
        self.owner, self.label, self.total, self.done = owner, label, total, 0

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            total = f"/{self.total}" if self.total is not None else ""
            self.owner.message(f"{self.label}: {self.done}{total} done")

    def advance(self, n: int = 1, **fields: Any) -> None:
        self.done += n


class PrintProgress:
    """Plain lines on a stream (stderr by default): every message, and one line when a counted step ends."""

    def __init__(self, stream=None) -> None:
        self.stream = stream

    def message(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr, flush=True)

    def steps(self, label: str, total: int | None = None) -> Steps:
        return _PrintedSteps(self, label, total)


def as_progress(progress: Progress | None) -> Progress:
    """``None`` → :data:`SILENT`; anything else must have ``message`` and ``steps``."""
    if progress is None:
        return SILENT
    if not isinstance(progress, Progress):
        raise TypeError(f"progress must have message(text) and steps(label, total) methods, not {type(progress).__name__}")
    return progress
