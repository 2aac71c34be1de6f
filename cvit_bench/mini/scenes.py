"""The cvit-mini picture world: scenes, their drawing, and the task-content generators over them.

Shared by the ``synthetic`` task source (:mod:`cvit_bench.tasks.synthetic`, which turns generators into
prepared samples) and the mini base model's recipe (:mod:`cvit_bench.mini.base_model`, which pretrains on the same
pictures and needs every word the tasks can use). It lives in the core so that the model recipe does not
import a task loader.

Every image is a 32×32 RGB picture: a noisy dark background and one shape (circle, square, triangle, cross)
in one of four colours, centred near one of four positions (left/right/top/bottom), radius 4–6 px. Drawing
uses only NumPy integer arithmetic and PIL's PNG encoder (no timestamp chunks), so the same generator state
writes byte-identical PNGs. The generators (``shape_class``, ``color_vqa``, ``shape_mc``, ``scene_caption``)
and the human-style VQA answer rule are documented in :mod:`cvit_bench.tasks.synthetic`.
"""
from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..registry import Registry

IMAGE_SIZE = 32
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 235), "yellow": (230, 220, 40),
}
# Position name -> nominal centre (x, y) in pixels; the drawn centre is jittered by ±1 px.
POSITIONS: dict[str, tuple[int, int]] = {"left": (8, 16), "right": (24, 16), "top": (16, 8), "bottom": (16, 24)}
RADII: tuple[int, ...] = (4, 5, 6)
SIZE_WORDS: dict[int, str] = {4: "small", 5: "medium", 6: "large"}
LETTERS: tuple[str, ...] = ("A", "B", "C", "D")

# Where a position is said to be, two ways (canonical first).
POSITION_PHRASES: dict[str, tuple[str, str]] = {
    "left": ("on the left", "on the left side"),
    "right": ("on the right", "on the right side"),
    "top": ("at the top", "near the top"),
    "bottom": ("at the bottom", "near the bottom"),
}
# Non-canonical annotator answers per colour: m4c-equivalent forms first, then real disagreements.
COLOR_VARIANTS: dict[str, tuple[str, ...]] = {
    "red": ("Red", "red.", "dark red", "orange", "rde"),
    "green": ("Green", "green.", "light green", "lime", "gren"),
    "blue": ("Blue", "blue.", "dark blue", "purple", "bleu"),
    "yellow": ("Yellow", "yellow.", "light yellow", "gold", "yelow"),
}
N_VQA_ANSWERS = 10
P_CANONICAL_ANSWER = 0.7
N_CAPTION_REFERENCES = 5


@dataclass(frozen=True)
class Scene:
    """What one image shows; the drawing adds background and colour noise on top."""

    shape: str
    color: str
    position: str
    center: tuple[int, int]
    radius: int

    def meta(self) -> dict:
        return {"shape": self.shape, "color": self.color, "position": self.position,
                "center": list(self.center), "radius": self.radius}


def random_scene(rng: np.random.Generator) -> Scene:
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    color = list(COLORS)[int(rng.integers(len(COLORS)))]
    position = list(POSITIONS)[int(rng.integers(len(POSITIONS)))]
    jx, jy = (int(v) for v in rng.integers(-1, 2, size=2))
    x, y = POSITIONS[position]
    radius = RADII[int(rng.integers(len(RADII)))]
    return Scene(shape, color, position, (x + jx, y + jy), radius)


def shape_mask(shape: str, center: tuple[int, int], radius: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """Boolean mask of a shape, with integer arithmetic only (exact on every platform).

    circle: dx² + dy² ≤ r²; square: max(|dx|, |dy|) ≤ 0.8 r; triangle (apex up): -r ≤ dy ≤ r and
    2|dx| ≤ dy + r; cross: two bars of half-width r/3 and half-length r.
    """
    ys, xs = np.mgrid[0:size, 0:size]
    dx, dy = xs - center[0], ys - center[1]
    r = radius
    masks = {
        "circle": lambda: dx * dx + dy * dy <= r * r,
        "square": lambda: 5 * np.maximum(np.abs(dx), np.abs(dy)) <= 4 * r,
        "triangle": lambda: (dy >= -r) & (dy <= r) & (2 * np.abs(dx) <= dy + r),
        "cross": lambda: ((3 * np.abs(dx) <= r) & (np.abs(dy) <= r)) | ((3 * np.abs(dy) <= r) & (np.abs(dx) <= r)),
    }
    return masks[shape]()


def draw_scene(scene: Scene, rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """HxWx3 uint8 image: background noise in [0, 40), the shape in its colour ± 20 per channel."""
    img = rng.integers(0, 40, size=(size, size, 3), dtype=np.int16)
    mask = shape_mask(scene.shape, scene.center, scene.radius, size)
    noise = rng.integers(-20, 21, size=(size, size, 3), dtype=np.int16)
    color = np.array(COLORS[scene.color], dtype=np.int16)
    img[mask] = np.clip(color + noise[mask], 0, 255)
    return img.astype(np.uint8)


def png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def stream_rng(*parts: object) -> np.random.Generator:
    """A NumPy generator seeded by SHA-256 of the joined parts (independent streams per task/split/use)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


# --------------------------------------------------------------------------------------------- generators

@dataclass
class Item:
    """Task content of one sample, before the template set adds the instruction."""

    question: str
    target: str
    references: list[str]
    choices: list[str] = field(default_factory=list)


class Generator(Protocol):
    name: str     # the generator name a synthetic task block gives
    kind: str     # the TaskSpec.kind it produces (checked against the YAML)

    def make(self, scene: Scene, rng: np.random.Generator) -> Item: ...

    def texts(self) -> Iterable[str]:
        """Every string this generator can put into question, target, references or choices (vocabulary)."""
        ...


GENERATORS: Registry[Generator] = Registry("synthetic generator")


def caption_references(scene: Scene) -> list[str]:
    canon, alt = POSITION_PHRASES[scene.position]
    c, s = scene.color, scene.shape
    # Each caption is one sentence ending with a period (a separate word for the word-level tokenizer), as the
    # caption instruction asks and as the IF check (if@caption) requires.
    return [f"a {c} {s} {canon} .", f"a {c} {s} {alt} .", f"there is a {c} {s} {canon} .",
            f"a {SIZE_WORDS[scene.radius]} {c} {s} {canon} .", f"{c} {s} {canon} of the image ."]


def _all_scenes() -> Iterable[Scene]:
    for shape in SHAPES:
        for color in COLORS:
            for pos, center in POSITIONS.items():
                for r in RADII:
                    yield Scene(shape, color, pos, center, r)


class ShapeClass:
    """Object classification (CVIT ImageNet type): the instruction alone asks for the object."""

    name = "shape_class"
    kind = "classification"

    def make(self, scene: Scene, rng: np.random.Generator) -> Item:
        return Item(question="", target=scene.shape, references=[scene.shape])

    def texts(self) -> Iterable[str]:
        return SHAPES


def _is_clear_plurality(word: str, answers: list[str]) -> bool:
    """``word`` (after m4c-style lower-casing and dropping a final period) has at least 3 votes and more than
    any other answer, so a model answering ``word`` gets full soft accuracy."""
    counts: dict[str, int] = {}
    for a in answers:
        key = a.lower().rstrip(".")
        counts[key] = counts.get(key, 0) + 1
    mine = counts.pop(word, 0)
    return mine >= 3 and all(mine > c for c in counts.values())


class ColorVQA:
    """Short-answer VQA (CVIT TextVQA type) with 10 human-style answers."""

    name = "color_vqa"
    kind = "short_answer"
    question = "What color is the shape?"

    def make(self, scene: Scene, rng: np.random.Generator) -> Item:
        variants = COLOR_VARIANTS[scene.color]
        while True:   # redraw until the colour is the clear plurality answer (as the target must be)
            answers = []
            for _ in range(N_VQA_ANSWERS):
                if rng.random() < P_CANONICAL_ANSWER:
                    answers.append(scene.color)
                else:
                    answers.append(variants[int(rng.integers(len(variants)))])
            if _is_clear_plurality(scene.color, answers):
                return Item(question=self.question, target=scene.color, references=answers)

    def texts(self) -> Iterable[str]:
        yield self.question
        for color, variants in COLOR_VARIANTS.items():
            yield color
            yield from variants


class ShapeMC:
    """Multiple choice with letters (CVIT ScienceQA type): options one per line as ``A. circle``."""

    name = "shape_mc"
    kind = "multiple_choice"
    stem = "Which shape is in the image?"

    def question_text(self) -> str:
        return "\n".join([self.stem, *(f"{letter}. {choice}" for letter, choice in zip(LETTERS, SHAPES))])

    def make(self, scene: Scene, rng: np.random.Generator) -> Item:
        letter = LETTERS[SHAPES.index(scene.shape)]
        return Item(question=self.question_text(), target=letter, references=[letter], choices=list(SHAPES))

    def texts(self) -> Iterable[str]:
        return [self.question_text(), *LETTERS, *SHAPES]


class SceneCaption:
    """Captioning (CVIT Flickr30k type): five references, the first one is the training target."""

    name = "scene_caption"
    kind = "caption"

    def make(self, scene: Scene, rng: np.random.Generator) -> Item:
        refs = caption_references(scene)
        return Item(question="", target=refs[0], references=refs)

    def texts(self) -> Iterable[str]:
        for scene in _all_scenes():
            yield from caption_references(scene)


GENERATORS.add(ShapeClass())
GENERATORS.add(ColorVQA())
GENERATORS.add(ShapeMC())
GENERATORS.add(SceneCaption())


def benchmark_texts(task_specs: Iterable[Any]) -> list[str]:
    """Every question/target/reference/choice string the synthetic tasks of a benchmark can produce."""
    texts: list[str] = []
    for task in task_specs:
        block = task.extra.get("synthetic")
        if isinstance(block, dict) and block.get("generator") in GENERATORS:
            texts.extend(GENERATORS.get(block["generator"]).texts())
    return texts

