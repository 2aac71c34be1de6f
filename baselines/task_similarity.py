"""Task similarity of He et al. (docs/methods.md, Task similarity): image, instruction and output embeddings per task.

Per task, about ``n_samples`` training samples (every ⌊N / n⌋-th, as the code takes them) give three embeddings,
each the mean over the samples, then L2-normalised:

* **image**: the frozen vision encoder's per-image summary (:meth:`ModelFamily.image_features`: CLS token for
  LLaVA and InstructBLIP, mean merged patch for Qwen2-VL); a task without images has none (see below);
* **instruction**: the BERT ``[CLS]`` vector of the prompt texts (question + instruction, max 128 tokens);
* **output**: the BERT ``[CLS]`` vector of the answers.

For each modality the cosine matrix of the stacked tasks is taken; all its strict-upper-triangle values are
standardised together, ``sigmoid((s − mean) / std)``; the similarity of two tasks is the product over the
three modalities. :func:`similarity_matrix` returns the symmetric matrix with ones on the diagonal (a task is
identical to itself); :func:`new_vs_previous` the code's vector for TIR: the first row of the matrix of
``[new; previous...]``, i.e. standardised over the pairs of exactly those tasks.

Decisions where the code is silent: with a single pair (std undefined) or all pairs equal (std 0) every
standardised value is sigmoid(0) = 0.5; a modality missing for one of the two tasks (text-only task) counts
as 0.5 for that pair (neither similar nor dissimilar).

BERT: by default a tiny BERT built from a config with a fixed seed and a character-level WordPiece vocabulary
(:func:`tiny_text_encoder`; nothing is downloaded — its [CLS] vectors are random-feature summaries of the
text, enough to tell equal instructions from different ones); ``text_encoder=PATH`` loads a real one
(``bert-base-uncased`` in He et al.) with ``AutoModel``/``AutoTokenizer`` from a local folder.

On disk (``task_similarity.json`` in the stage folder, copied into ``results.json`` as ``task_similarity``
and drawn as a heatmap by the report): ``{"tasks": [...], "matrix": [[...]], "modalities": {"image":
[[...]], "instruction": [[...]], "output": [[...]]}, "text_encoder": "tiny-bert" | PATH, "n_samples": n}``.
"""
from __future__ import annotations

import math
import string
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from ..errors import CvitError, DataError

MODALITIES = ("image", "instruction", "output")
TINY = "tiny-bert"


@dataclass(frozen=True)
class TaskEmbedding:
    task: str
    image: torch.Tensor | None       # [d_vis], L2-normalised; None for a task without images
    instruction: torch.Tensor        # [d_text]
    output: torch.Tensor             # [d_text]
    n: int


@dataclass
class TextEncoder:
    name: str
    tokenizer: Any
    model: Any

    @torch.no_grad()
    def cls(self, texts: Sequence[str], batch_size: int = 16) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True, max_length=128,
                                 return_tensors="pt")
            out.append(self.model(**enc).last_hidden_state[:, 0].float())
        return torch.cat(out) if out else torch.zeros(0)


@lru_cache(maxsize=2)
def tiny_text_encoder(seed: int = 0) -> TextEncoder:
    """A 2-layer, 64-wide BERT with random weights (``torch.manual_seed(seed)``) and a character vocabulary."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    vocab = {t: i for i, t in enumerate(specials + chars + [f"##{c}" for c in chars])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                        sep_token="[SEP]", mask_token="[MASK]")
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=128, max_position_embeddings=512)
    torch.manual_seed(seed)
    return TextEncoder(TINY, tokenizer, BertModel(cfg).eval())


def load_text_encoder(spec: str = TINY) -> TextEncoder:
    """``tiny-bert`` (default, built in-process) or a local folder of a BERT model (e.g. bert-base-uncased)."""
    if spec == TINY:
        return tiny_text_encoder()
    from transformers import AutoModel, AutoTokenizer

    path = Path(spec)
    if not path.is_dir():
        raise CvitError(f"text encoder {spec!r}: not {TINY!r} and not a local model folder")
    try:
        return TextEncoder(str(path), AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval())
    except (OSError, ValueError) as exc:
        raise CvitError(f"{path}: cannot load the text encoder ({exc})") from None


def sample_indices(n_total: int, n: int) -> list[int]:
    """Every ⌊N / n⌋-th index, at most n of them (He et al.'s TaskEncoder subsampling)."""
    step = max(1, n_total // max(1, n))
    return list(range(0, n_total, step))[:n]


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm().clamp_min(1e-12)


def embed_task(task: str, prompts: Sequence[str], answers: Sequence[str], image_vectors: torch.Tensor | None,
               encoder: TextEncoder) -> TaskEmbedding:
    """Mean-then-normalise embeddings of one task from its (already subsampled) texts and image vectors."""
    if not prompts:
        raise DataError(f"task {task!r}: no samples to embed for task similarity")
    image = None
    if image_vectors is not None and image_vectors.numel():
        image = _unit(image_vectors.float().mean(dim=0))
    return TaskEmbedding(task=task, image=image, instruction=_unit(encoder.cls(prompts).mean(dim=0)),
                         output=_unit(encoder.cls(answers).mean(dim=0)), n=len(prompts))


def _standardise(raw: list[list[float | None]]) -> list[list[float]]:
    """sigmoid((s − mean) / std) over the strict upper triangle; symmetric result, ones on the diagonal."""
    n = len(raw)
    upper = [raw[i][j] for i in range(n) for j in range(i + 1, n) if raw[i][j] is not None]
    mean = math.fsum(upper) / len(upper) if upper else 0.0
    std = math.sqrt(math.fsum((u - mean) ** 2 for u in upper) / len(upper)) if len(upper) > 1 else 0.0
    out = [[1.0 if i == j else 0.5 for j in range(n)] for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            s = raw[i][j]
            if s is None or std <= 1e-12:
                continue
            out[i][j] = out[j][i] = 1.0 / (1.0 + math.exp(-(s - mean) / std))
    return out


def modality_matrices(embeddings: Sequence[TaskEmbedding]) -> dict[str, list[list[float]]]:
    out = {}
    for mod in MODALITIES:
        vecs = [getattr(e, mod) for e in embeddings]
        raw = [[None if a is None or b is None else float(a @ b) for b in vecs] for a in vecs]
        out[mod] = _standardise(raw)
    return out


def similarity_matrix(embeddings: Sequence[TaskEmbedding]) -> list[list[float]]:
    """Product over the three standardised modality matrices (symmetric, ones on the diagonal)."""
    mats = modality_matrices(embeddings)
    n = len(embeddings)
    return [[mats["image"][i][j] * mats["instruction"][i][j] * mats["output"][i][j] for j in range(n)]
            for i in range(n)]


def new_vs_previous(new: TaskEmbedding, previous: Sequence[TaskEmbedding]) -> list[float]:
    """He et al.'s TIR input: similarity of ``new`` to each of ``previous``, standardised over those tasks only."""
    if not previous:
        return []
    return similarity_matrix([new, *previous])[0][1:]


def similarity_record(embeddings: Sequence[TaskEmbedding], encoder_name: str) -> dict[str, Any]:
    return {"tasks": [e.task for e in embeddings], "matrix": similarity_matrix(embeddings),
            "modalities": modality_matrices(embeddings), "text_encoder": encoder_name,
            "n_samples": {e.task: e.n for e in embeddings}}


def embed_examples(task: str, examples: Sequence[Any], texts: dict[str, tuple[str, str]], model: Any,
                   make_batches: Any, encoder: TextEncoder, n_samples: int = 1000, batch_size: int = 16) -> TaskEmbedding:
    """Embed a task from its encoded training examples (images through ``model``'s frozen vision encoder) and
    ``texts`` = uid → (prompt, answer); ``make_batches`` is the trainer's collating batcher."""
    from ..backends.families import family_of

    chosen = [examples[i] for i in sample_indices(len(examples), n_samples)]
    family = family_of(model)
    param = next(p for p in model.parameters())
    vecs = []
    for batch in make_batches([e for e in chosen if e.image is not None], batch_size):
        batch = {k: (v.to(param.device, param.dtype) if v.is_floating_point() else v.to(param.device))
                 for k, v in batch.items()}
        vecs.append(family.image_features(model, batch).cpu())
    missing = [e.uid for e in chosen if e.uid not in texts]
    if missing:
        raise DataError(f"task {task!r}: no prompt text for sample {missing[0]}")
    return embed_task(task, [texts[e.uid][0] for e in chosen], [texts[e.uid][1] for e in chosen],
                      torch.cat(vecs) if vecs else None, encoder)


def embedding_tensors(e: TaskEmbedding) -> dict[str, torch.Tensor]:
    out = {"instruction": e.instruction, "output": e.output, "n": torch.tensor([e.n])}
    if e.image is not None:
        out["image"] = e.image
    return out


def embedding_from_tensors(task: str, t: dict[str, torch.Tensor]) -> TaskEmbedding:
    return TaskEmbedding(task=task, image=t.get("image"), instruction=t["instruction"], output=t["output"],
                         n=int(t["n"][0]))
