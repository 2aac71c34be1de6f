"""The library's one progress protocol: long steps report messages and counted steps through it."""
from __future__ import annotations

import io

import pytest

from cvit_bench.progress import SILENT, PrintProgress, Progress, as_progress


class Recorder:
    """A user's own progress object: anything with ``message`` and ``steps``."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.counted: dict[str, int] = {}

    def message(self, text: str) -> None:
        self.messages.append(text)

    def steps(self, label: str, total: int | None = None):
        recorder = self

        class _Steps:
            def __enter__(self):
                recorder.counted[label] = 0
                return self

            def advance(self, n: int = 1, **fields):
                recorder.counted[label] += n

            def __exit__(self, *exc):
                pass

        return _Steps()


def test_as_progress_accepts_the_protocol_and_refuses_a_bare_callable():
    assert as_progress(None) is SILENT
    rec = Recorder()
    assert isinstance(rec, Progress) and as_progress(rec) is rec
    with pytest.raises(TypeError, match="message\\(text\\) and steps"):
        as_progress(print)   # the old convention: a plain callable


def test_print_progress_writes_messages_and_a_line_per_finished_step():
    stream = io.StringIO()
    p = PrintProgress(stream)
    p.message("hello")
    with p.steps("stage 1", 10) as bar:
        bar.advance(4, loss="0.5")
        bar.advance(6)
    assert stream.getvalue() == "hello\nstage 1: 10/10 done\n"


def test_prepare_reports_through_the_protocol(tmp_path):
    from cvit_bench.data.prepare import prepare

    rec = Recorder()
    prepare("cvit-mini", templates="single", source="synthetic", raw_root=tmp_path / "raw", out=tmp_path / "out",
            progress=rec)
    assert "loading mini-shape/train" in rec.messages and "loading mini-caption/test" in rec.messages


def test_mini_base_build_counts_its_pretraining_steps(tmp_path):
    from cvit_bench.mini.base_model import MiniRecipe, build_mini_base

    rec = Recorder()
    build_mini_base(tmp_path / "b", seed=1, recipe=MiniRecipe(steps=100, n_train=64, n_heldout=8, min_accuracy=0.0),
                    progress=rec)
    assert rec.counted == {"mini base: pretraining": 100}
    assert any(m.startswith("mini base: held-out accuracy") for m in rec.messages)
