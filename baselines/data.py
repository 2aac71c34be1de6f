"""Training examples: prepared samples → token ids, answer-only labels and image features, built once per task.

Rules (why in brackets):

* **Text.** ``prefix, answer_part = prompt_format.render_train(sample.prompt, sample.target, has_image)``
  with the benchmark's prompt format (``vicuna_v1`` for CVIT), so the model is trained to continue exactly
  the string it is asked to continue at evaluation.
* **Token ids** = the processor's ids of ``prefix`` (with the image placeholder expanded to the model's image
  tokens and BOS added, as at evaluation) followed by the answer ids. The answer ids are the tail of
  ``tokenizer(prefix + answer_part)`` after ``tokenizer(prefix)`` when the latter is a prefix of the former
  (the answer tokenised in context, as the model will produce it); otherwise — a token merged across the
  boundary — ``tokenizer(answer_part, add_special_tokens=False)``. EOS is appended when the answer part
  does not already contain it, so the model learns to stop.
* **Labels** are −100 on every prefix position (system prompt, question, image tokens, padding) and equal
  to the ids on the answer tokens + EOS: the loss is on the answer only.
* **Length.** Sequences longer than ``max_length`` lose answer tokens from the right; a sample whose prefix
  alone reaches ``max_length`` (nothing left to learn) is dropped and reported.
* **Images** are decoded once with :func:`cvit_bench.data.images.load_image` in the task's preprocessing mode
  (``pad``/``crop``) and run through the processor once (pitfall 6 of the mini-benchmark notes: calling the
  processor per step dominates CPU time). When the features of a task would exceed ``cache_bytes`` they are
  not kept: examples hold an :class:`ImageRef` and the collator re-processes the batch's images.
* **Batches** are right-padded to the longest example *of the batch* (all-padding columns never exist).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..backends.families import pack_padding
from ..errors import CvitError, DataError
from ..data.images import load_image
from ..formats.sample import Sample

IGNORE_INDEX = -100
_TEXT_KEYS = ("input_ids", "attention_mask")
DEFAULT_CACHE_BYTES = 2 << 30


@dataclass(frozen=True)
class ImageRef:
    """An image not kept in memory: decoded and processed again when its batch is built."""

    path: str
    mode: str


@dataclass(frozen=True)
class Example:
    uid: str
    task: str
    input_ids: torch.Tensor                                  # 1-D long
    labels: torch.Tensor                                     # 1-D long, IGNORE_INDEX outside the answer
    image: dict[str, torch.Tensor] | ImageRef | None = None  # per-image processor outputs (rows of this image)
    # Other per-token processor outputs (e.g. Qwen2-VL's ``mm_token_type_ids``), aligned with input_ids; 0 on
    # the answer tokens and on padding.
    token_extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.numel())

    @property
    def n_answer_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


@dataclass
class EncodedTask:
    task: str
    split: str
    examples: list[Example]
    dropped: list[str] = field(default_factory=list)   # uids whose prefix alone exceeds max_length


def answer_token_ids(tokenizer: Any, prefixes: Sequence[str], answers: Sequence[str]) -> list[list[int]]:
    """Answer ids tokenised in context, plus EOS (see the module docstring for the rule)."""
    full = tokenizer([p + a for p, a in zip(prefixes, answers)], add_special_tokens=True)["input_ids"]
    pre = tokenizer(list(prefixes), add_special_tokens=True)["input_ids"]
    alone = tokenizer(list(answers), add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    out = []
    for f, p, a in zip(full, pre, alone):
        ids = list(f[len(p):]) if f[: len(p)] == p else list(a)
        if eos is not None and eos not in ids:
            ids.append(eos)
        out.append(ids)
    return out


def split_image_features(features: dict[str, torch.Tensor], n_images: int, where: str = "") -> list[dict[str, torch.Tensor]]:
    """Cut a processor's batched image outputs into one dict per image (rows along dim 0).

    LLaVA-style processors give ``pixel_values`` with one row per image. Qwen2-VL-style ones give flattened
    patches plus ``image_grid_thw``; image i owns ``prod(grid[i])`` patch rows.
    """
    grid = features.get("image_grid_thw")
    per_image_rows = [int(torch.prod(g)) for g in grid] if grid is not None else None
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(n_images)]
    for key, value in features.items():
        if not isinstance(value, torch.Tensor):
            continue
        if per_image_rows is not None and key != "image_grid_thw" and value.shape[0] == sum(per_image_rows):
            chunks = list(value.split(per_image_rows, dim=0))
        elif value.shape[0] == n_images:
            chunks = list(value.split(1, dim=0))
        else:
            raise CvitError(f"{where}: cannot split processor output {key!r} of shape {tuple(value.shape)} into"
                            f" {n_images} images (unsupported processor layout)")
        for i, c in enumerate(chunks):
            out[i][key] = c.clone()
    return out


def _feature_bytes(features: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in features.values())


def encode_samples(
    samples: Sequence[Sample],
    *,
    processor: Any,
    prompt_format: Any,
    image_root: str | Path,
    image_mode: str | Callable[[Sample], str] = "pad",
    max_length: int = 2048,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    chunk_size: int = 64,
    where: str = "",
) -> EncodedTask:
    """Encode one task's samples (see the module docstring); the returned examples keep the input order."""
    tok = processor.tokenizer
    mode_of = image_mode if callable(image_mode) else (lambda s, m=image_mode: m)
    root = Path(image_root)
    parts = [prompt_format.render_train(s.prompt, s.target, s.image is not None) for s in samples]
    answers = answer_token_ids(tok, [p for p, _ in parts], [a for _, a in parts])
    prefix_ids: list[list[int] | None] = [None] * len(samples)
    extras: list[dict[str, list[int]]] = [{} for _ in samples]
    images: list[dict[str, torch.Tensor] | ImageRef | None] = [None] * len(samples)
    cached_bytes, keep = 0, True
    for start in range(0, len(samples), chunk_size):
        idx = list(range(start, min(start + chunk_size, len(samples))))
        with_img = [i for i in idx if samples[i].image is not None]
        text_only = [i for i in idx if samples[i].image is None]
        if with_img:
            refs = [ImageRef(str(root / samples[i].image), mode_of(samples[i])) for i in with_img]
            pil = [load_image(r.path, r.mode) for r in refs]
            out = pack_padding(processor(images=pil, text=[parts[i][0] for i in with_img], padding=True,
                                         return_tensors="pt"))
            shape = out["input_ids"].shape
            per_token = [k for k, v in out.items() if k not in _TEXT_KEYS and isinstance(v, torch.Tensor)
                         and v.shape == shape]
            feats = split_image_features({k: v for k, v in out.items() if k not in _TEXT_KEYS and k not in per_token},
                                         len(with_img), where or (samples[0].task if samples else ""))
            for j, i in enumerate(with_img):
                keep_mask = out["attention_mask"][j].bool()
                prefix_ids[i] = out["input_ids"][j][keep_mask].tolist()
                extras[i] = {k: out[k][j][keep_mask].tolist() for k in per_token}
                cached_bytes += _feature_bytes(feats[j])
                keep = keep and cached_bytes <= cache_bytes
                images[i] = feats[j] if keep else refs[j]
        if text_only:
            out = tok([parts[i][0] for i in text_only], add_special_tokens=True)
            for j, i in enumerate(text_only):
                prefix_ids[i] = list(out["input_ids"][j])
    if not keep:  # over budget: every image of the task becomes a reference (uniform collation)
        for i, s in enumerate(samples):
            if s.image is not None and not isinstance(images[i], ImageRef):
                images[i] = ImageRef(str(root / s.image), mode_of(s))
    examples, dropped = [], []
    for i, s in enumerate(samples):
        pre, ans = prefix_ids[i], answers[i]
        if len(pre) >= max_length:
            dropped.append(s.uid)
            continue
        ans = ans[: max_length - len(pre)]
        ids = torch.tensor(pre + ans, dtype=torch.long)
        labels = torch.tensor([IGNORE_INDEX] * len(pre) + ans, dtype=torch.long)
        token_extras = {k: torch.tensor(v + [0] * len(ans), dtype=torch.long) for k, v in extras[i].items()}
        examples.append(Example(uid=s.uid, task=s.task, input_ids=ids, labels=labels, image=images[i],
                                token_extras=token_extras))
    split = samples[0].split if samples else ""
    return EncodedTask(task=samples[0].task if samples else "", split=split, examples=examples, dropped=dropped)


class Collator:
    """Examples → one right-padded batch dict (``input_ids``, ``attention_mask``, ``labels``, image features)."""

    def __init__(self, processor: Any) -> None:
        tok = processor.tokenizer
        self.processor = processor
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    def __call__(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        if not examples:
            raise DataError("empty batch")
        longest = max(e.n_tokens for e in examples)
        n = len(examples)
        input_ids = torch.full((n, longest), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n, longest), dtype=torch.long)
        labels = torch.full((n, longest), IGNORE_INDEX, dtype=torch.long)
        for row, e in enumerate(examples):
            k = e.n_tokens
            input_ids[row, :k] = e.input_ids
            attention[row, :k] = 1
            labels[row, :k] = e.labels
        batch: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        for key in sorted({k for e in examples for k in e.token_extras}):
            extra = torch.zeros((n, longest), dtype=torch.long)
            for row, e in enumerate(examples):
                if key in e.token_extras:
                    extra[row, : e.n_tokens] = e.token_extras[key]
            batch[key] = extra
        with_img = [e.image for e in examples if e.image is not None]
        if with_img:
            batch.update(self._image_features(with_img))
        return batch

    def _image_features(self, images: list[dict[str, torch.Tensor] | ImageRef]) -> dict[str, torch.Tensor]:
        if isinstance(images[0], ImageRef):
            pil = [load_image(r.path, r.mode) for r in images]  # type: ignore[union-attr]
            out = self.processor.image_processor(pil, return_tensors="pt")
            return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}
        keys = images[0].keys()  # type: ignore[union-attr]
        return {k: _cat_rows([f[k] for f in images]) for k in keys}  # type: ignore[index]


def _cat_rows(parts: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate per-image rows; 2-D token rows of different lengths (InstructBLIP's Q-Former text ids and
    mask, right-padded per encoding chunk by :func:`~cvit_bench.backends.families.pack_padding`) are
    right-padded with 0 to the longest first (0 = masked out), as at evaluation."""
    if all(p.dim() == 2 for p in parts) and len({p.shape[1] for p in parts}) > 1 and not parts[0].is_floating_point():
        width = max(p.shape[1] for p in parts)
        parts = [torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts]
    return torch.cat(parts, dim=0)


def make_batches(collate: Collator, examples: Sequence[Example], batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Consecutive batches of ``examples`` (for hooks such as EWC's Fisher pass)."""
    return [collate(examples[i:i + batch_size]) for i in range(0, len(examples), batch_size)]


def select_by_hash(examples: Sequence[Example], k: int, seed: int) -> list[Example]:
    """The first ``k`` examples in the order of ``sha256("<seed>:<uid>")``: a deterministic random subset
    that does not depend on file order (replay buffers, EWC's Fisher samples)."""
    if k <= 0:
        return []
    ranked = sorted(examples, key=lambda e: hashlib.sha256(f"{seed}:{e.uid}".encode()).digest())
    return ranked[:k]
