"""A prepared benchmark as every reader opens it: :meth:`PreparedData.open` is the one way in.

``path`` is the folder given to ``prepare --out`` (the benchmark subfolder is picked by id, or the only one
there when no id is given) or the benchmark subfolder itself, which holds ``manifest.json`` (the ``--data``
contract of evaluate, score, judge, train, export and the leaderboard). Opening reads and validates the
manifest (version, then schema); splits are read only when asked for, and each is checked against the
manifest's sha256 the first time it is read, so partial or edited data is refused naming the file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

from ..errors import CvitError, DataError
from ..files import sha256_file
from .manifest import MANIFEST_NAME, Manifest, SplitFile, image_root, read_manifest, resolve_prepared
from .sample import Sample, read_samples


@dataclass
class PreparedData:
    folder: Path                       # the benchmark subfolder holding manifest.json
    manifest: dict[str, Any]           # validated against manifest.schema.json
    _verified: set[str] = field(default_factory=set, repr=False)   # split files whose sha256 was checked

    @classmethod
    def open(cls, path: str | os.PathLike, benchmark: str | None = None) -> PreparedData:
        folder = Path(path)
        if benchmark is None and not (folder / MANIFEST_NAME).is_file():
            found = sorted(folder.glob(f"*/{MANIFEST_NAME}"))
            if len(found) == 1:   # one prepared benchmark: no id needed to pick it
                folder = found[0].parent
        folder = resolve_prepared(folder, benchmark)
        return cls(folder, read_manifest(folder))

    @cached_property
    def record(self) -> Manifest:
        """The manifest as its typed record."""
        return Manifest.from_dict(self.manifest)

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST_NAME

    def manifest_sha256(self) -> str:
        """The hash results record as provenance (``data_manifest_sha256``)."""
        return sha256_file(self.manifest_path)

    @property
    def benchmark_id(self) -> str:
        return self.record.benchmark_id

    @property
    def benchmark_version(self) -> str:
        return self.record.benchmark_version

    @property
    def template_set(self) -> str:
        return self.record.template_set

    @property
    def notes(self) -> dict[str, Any]:
        return dict(self.record.notes)

    @property
    def image_root(self) -> Path:
        """Where the samples' image paths are relative to (absolute, or inside the prepared folder)."""
        return image_root(self.folder, self.manifest)

    @property
    def files(self) -> dict[str, SplitFile]:
        """``<task>/<split>.parquet`` → its manifest entry (task, split, rows, sha256, fingerprint, templates)."""
        return dict(self.record.files)

    def require_benchmark(self, benchmark_id: str) -> None:
        if self.benchmark_id != benchmark_id:
            raise CvitError(f"{self.folder} holds benchmark {self.benchmark_id!r}, not {benchmark_id!r}")

    def tasks_with(self, split: str) -> Iterator[str]:
        """The tasks prepared with ``split``, in manifest order."""
        return iter(self.record.tasks_with(split))

    def has(self, task: str, split: str) -> bool:
        return self.record.split_file(task, split) is not None

    def fingerprint(self, task: str, split: str) -> str:
        return self.record.files[f"{task}/{split}.parquet"].fingerprint

    def split_path(self, task: str, split: str) -> Path:
        """The verified parquet file of (task, split); refused when the manifest lacks it, it is missing, or its
        sha256 differs from the manifest's."""
        rel = f"{task}/{split}.parquet"
        if rel not in self.record.files:
            raise DataError(f"the prepared data has no {rel} (tasks prepared: {', '.join(sorted(self.record.tasks))})",
                            file=self.manifest_path)
        self._verify(rel)
        return self.folder / rel

    def samples(self, task: str, split: str) -> list[Sample]:
        """The samples of (task, split), read now (callers keep what they reuse) from the verified file."""
        return read_samples(self.split_path(task, split))

    def verify(self) -> None:
        """Check every listed split file now (``evaluate`` does, before any model is loaded)."""
        for rel in self.record.files:
            self._verify(rel)

    def _verify(self, rel: str) -> None:
        if rel in self._verified:
            return
        path = self.folder / rel
        if not path.is_file():
            raise DataError("listed in the manifest but missing", file=path)
        if sha256_file(path) != self.record.files[rel].sha256:
            raise DataError("sha256 differs from the manifest (file changed after prepare)", file=path)
        self._verified.add(rel)
