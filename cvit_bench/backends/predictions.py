"""Backend ``predictions``: answers come from existing prediction files instead of a model.

Lets ``evaluate`` finish (score, resume, assemble) a run whose generations were produced elsewhere. The "model" is
a folder in the score layout, ``DIR/<stage>/<task>.jsonl`` (cvit-bench or reference format); activating adapter
``<stage>`` selects ``DIR/<stage>/``, and a request's task is the first component of its uid.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CvitError
from ..formats.predictions import read_prediction_file
from .base import BACKENDS, GenerationRequest


@BACKENDS.add
class PredictionsBackend:
    name = "predictions"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.adapters: dict[str, str] = {}
        self.active: str | None = None
        self.dtype = "n/a"
        self._cache: dict[tuple[str, str], dict[str, str]] = {}

    @staticmethod
    def generation_dtype(dtype: str | None, device: str = "auto") -> str:
        return "n/a"   # the predictions were generated elsewhere

    @classmethod
    def load(cls, model: str, **_: Any) -> PredictionsBackend:
        root = Path(model)
        if not root.is_dir():
            raise CvitError(f"{root}: predictions folder does not exist")
        return cls(root)

    def add_adapter(self, name: str, path: str) -> None:
        self.adapters[name] = path

    def activate(self, name: str | None) -> None:
        self.active = name

    def remove_adapter(self, name: str) -> None:
        self.adapters.pop(name, None)

    def _answers(self, task: str) -> dict[str, str]:
        stage = self.active or "0"
        key = (stage, task)
        if key not in self._cache:
            path = self.root / stage / f"{task}.jsonl"
            if not path.is_file():
                raise CvitError(f"{path}: no prediction file for stage {stage}, task {task}")
            pf = read_prediction_file(path)
            if pf.key_kind == "uid":
                self._cache[key] = dict(zip(pf.keys, pf.texts))
            else:   # reference format: question_id -> source_id -> uid
                self._cache[key] = {f"{task}/test/{k}": t for k, t in zip(pf.keys, pf.texts)}
        return self._cache[key]

    def generate(self, requests: list[GenerationRequest], images: list) -> list[str]:
        out = []
        for r in requests:
            answers = self._answers(r.uid.split("/", 1)[0])
            if r.uid not in answers:
                raise CvitError(f"{self.root}: no prediction for {r.uid} at stage {self.active or '0'}")
            out.append(answers[r.uid])
        return out

    def auto_batch_size(self, requests, images) -> int:
        return 64

    def describe(self) -> dict[str, Any]:
        return {"backend": "predictions", "folder": str(self.root)}
