"""Instruction template sets (data in ``instructions/*.yaml``), deterministic assignment and prompt composition.

A template set maps each instruction family (``ins_type``) to its list of templates: one string for
``single``, five paraphrases for ``five``. Benchmarks may ship their own sets (a YAML file with the same
shape in ``instructions/``).

A *published* set (CoIN's ``original``, ``diverse``, ``10type``) names the folders of the published files
(``published: [Instructions_Original, ...]``) instead of listing templates: its text exists only inside those
files, so it is read from them at prepare time (the instruction is the last line of each ``text``) and never
typed in. Such a set starts empty; :meth:`TemplateSet.extended` returns the set with newly seen instructions
appended, so template indices follow first appearance in the files (deterministic), and prepare records the
collected templates in the manifest.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from ..errors import DataError, UnknownNameError

# How a task's prompt is built from its question and instruction (docs/benchmarks/cvit.md, Templates).
COMPOSITIONS = ("question_instruction", "instruction_only")


@dataclass(frozen=True)
class TemplateSet:
    id: str
    description: str
    families: dict[int, tuple[str, ...]]
    published: tuple[str, ...] = ()   # folder names of the published files the templates are read from

    def templates(self, family: int) -> tuple[str, ...]:
        try:
            return self.families[family]
        except KeyError:
            if self.published:
                return ()
            raise DataError(f"template set {self.id!r} has no family {family}", field="family") from None

    def extended(self, family: int, instructions: list[str]) -> TemplateSet:
        """This set with the instructions not yet known for ``family`` appended (published sets only)."""
        known = self.templates(family)
        new = [i for i in dict.fromkeys(instructions) if i not in known]
        if not new:
            return self
        return TemplateSet(id=self.id, description=self.description,
                           families={**self.families, family: known + tuple(new)}, published=self.published)

    def choose(self, family: int, seed: int, uid: str) -> tuple[int, str]:
        options = self.templates(family)
        index = choose_index(len(options), seed, uid)
        return index, options[index]

    def find(self, family: int, instruction: str) -> int | None:
        """Index of ``instruction`` among the family's templates (None if it is not one of them)."""
        options = self.templates(family)
        return options.index(instruction) if instruction in options else None


def choose_index(n: int, seed: int, uid: str) -> int:
    """Deterministic, uniform choice of one of ``n`` templates from ``(seed, uid)``.

    SHA-256 of ``"<seed>:<uid>"`` read as an integer, modulo n: the same sample always gets the same template
    (re-running prepare gives identical files), independent of sample order, and over many uids each template
    is used about equally often (the published five-type assignment rule is unknown; this is ours).
    """
    if n <= 1:
        return 0
    digest = hashlib.sha256(f"{seed}:{uid}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n


def compose_prompt(question: str, instruction: str, composition: str) -> str:
    """``question + "\\n" + instruction`` for QA families; the instruction alone for caption/classification."""
    if composition == "question_instruction":
        return f"{question}\n{instruction}" if question else instruction
    if composition == "instruction_only":
        return instruction
    raise DataError(f"unknown composition {composition!r}; valid: {', '.join(COMPOSITIONS)}", field="composition")


def split_prompt(text: str, composition: str) -> tuple[str, str]:
    """Inverse of :func:`compose_prompt` for published files: (question, instruction).

    Multi-line instructions (captioning/classification templates) are the whole text for
    ``instruction_only`` tasks; for QA tasks the instruction is the last line.
    """
    text = text.replace("<image>", "").strip("\n").strip()
    if composition == "instruction_only":
        return "", text
    if "\n" not in text:
        return text, ""
    question, instruction = text.rsplit("\n", 1)
    return question, instruction


def _instructions_dir() -> Path:
    return Path(str(resources.files("cvit_bench.instructions")))


def template_set_ids() -> list[str]:
    return sorted(p.stem for p in _instructions_dir().glob("*.yaml"))


@lru_cache(maxsize=None)
def load_template_set(set_id: str) -> TemplateSet:
    path = _instructions_dir() / f"{set_id}.yaml"
    if not path.is_file():
        raise UnknownNameError("template set", set_id, template_set_ids())
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    published = data.get("published") or []
    if not isinstance(published, list) or not all(isinstance(p, str) for p in published):
        raise DataError("must be a list of folder names", file=path, field="published")
    families = {}
    for key, value in (data.get("families") or {}).items():
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise DataError("each family must map to a non-empty list of strings", file=path, record=key, field="families")
        families[int(key)] = tuple(value)
    if not families and not published:
        raise DataError("a template set needs `families` or `published`", file=path, field="families")
    return TemplateSet(id=data.get("id", set_id), description=data.get("description", ""), families=families,
                       published=tuple(published))


def template_set_of(manifest: dict) -> TemplateSet:
    """The template set a prepared benchmark was built with; a published set comes back with the templates
    prepare read from the files (the manifest's ``templates``)."""
    ts = load_template_set(manifest["template_set"])
    for family, texts in (manifest.get("templates") or {}).items():
        ts = ts.extended(int(family), list(texts))
    return ts
