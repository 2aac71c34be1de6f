"""CIDEr-D (docs/scoring.md, cider_d@ptb), vectorised, plus the caption metrics built on it.

Arithmetic (docs/scoring.md, CIDEr-D), for images i = 1..N of one corpus, candidate c_i and references s_i1..s_im:

* n-grams of order n = 1..4 of whitespace tokens, raw counts tf(g);
* df(g) = number of images whose *reference set* contains g; ℓ = log N;
* w(g) = tf(g) · (ℓ − log max(1, df(g))); ‖·‖_n = Euclidean norm of the order-n weights;
  length = number of bigrams (tokens − 1, 0 for an empty sentence);
* v_n(c, s) = Σ_{g ∈ c, |g| = n} min(w_c(g), w_s(g)) · w_s(g), divided by ‖c‖_n‖s‖_n when both are non-zero,
  times exp(−δ²/(2σ²)) with δ = length(c) − length(s), σ = 6;
* score_i = 10 · mean_n(Σ_j v_n(c_i, s_ij)) / m_i; corpus score = mean_i score_i.

Implementation: every sentence is turned into integer n-gram ids with numpy (tokens are factorised, an
order-n gram id is the dense rank of (order-(n−1) id, next token)), (sentence, gram) counts come from one
``np.unique``, and the candidate/reference overlap is a sorted join on (image, gram). Nothing is computed per
pair of strings in Python, so 20,000 images × 5 references take about a second. Several independent corpora
can be scored in one call (``groups``): df and ℓ are then per corpus (used by the best-reference step).

Metric ids: ``cider_d@whitespace`` (compat TextCaps), ``cider_d_bestref@whitespace`` (compat Flickr30k),
``cider_d@ptb`` (standard, Java PTB tokeniser) and ``cider_d@ptb-py`` (standard, pure-Python PTB
approximation). Use :meth:`CiderDPtbJava.resolve_for` before scoring: it maps ``cider_d@ptb`` to ``cider_d@ptb-py``
when Java is unavailable, so the caller can record the id actually used together with a warning.
All values are reported × 100 (an exact caption scores 1000).

CIDEr depends on the whole evaluated set (IDF), so it is always computed once over the full split; scoring a
handful of samples gives small-corpus numbers (a one-image set always scores 0), hence the ``warning`` extra.
"""
from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..errors import CvitError, DataError
from ..formats.sample import Sample
from .base import METRICS, Metric, MetricResult, Scale, Universe
from .common import compat_texts, result, standard_texts
from .normalize import java_ptb_available, ptb_java_tokenize, ptb_py_tokenize, whitespace_tokenize

N_ORDER = 4
SIGMA = 6.0
SMALL_CORPUS = 100
TIE_TOLERANCE = 1e-9  # best-reference candidates closer than this (×1 scale) are re-scored in reference order  # below this many images the IDF statistics are unreliable: say so in the extras


def _unique_counts(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique values and their counts (sort based: numpy's hash-based ``unique`` is far slower here)."""
    if a.size == 0:
        return a, np.zeros(0, dtype=np.int64)
    s = np.sort(a)
    starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
    return s[starts], np.diff(np.append(starts, s.size))


def _unique_inverse(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique values and, for each element of ``a``, the index of its value among them."""
    if a.size == 0:
        return a, np.zeros(0, dtype=np.int64)
    order = np.argsort(a, kind="stable")
    s = a[order]
    new = np.concatenate(([True], s[1:] != s[:-1]))
    inverse = np.empty(a.size, dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return s[new], inverse


def _factorize_tokens(sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (flat, int64) and per-sentence token counts, splitting each sentence on whitespace."""
    split = [s.split() for s in sentences]
    lengths = np.fromiter((len(t) for t in split), dtype=np.int64, count=len(split))
    flat = [t for toks in split for t in toks]
    if not flat:
        return np.zeros(0, dtype=np.int64), lengths
    codes, _ = pd.factorize(np.asarray(flat, dtype=object), sort=False)
    return codes.astype(np.int64, copy=False), lengths


def _sentence_grams(sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(sentence, gram, tf) triples sorted by (sentence, gram), the gram orders (0-based), and token counts."""
    tokens, lengths = _factorize_tokens(sentences)
    n_tok = tokens.size
    sent_of_tok = np.repeat(np.arange(len(sentences), dtype=np.int64), lengths)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])) if len(sentences) else np.zeros(0, np.int64)
    remaining = (lengths[sent_of_tok] - (np.arange(n_tok) - starts[sent_of_tok])) if n_tok else np.zeros(0, np.int64)
    vocab = int(tokens.max()) + 1 if n_tok else 1

    sent_parts, gram_parts, order_sizes = [], [], []
    offset = 0
    prev_ids = tokens  # order-1 ids, aligned with token positions
    prev_pos = np.arange(n_tok)
    for order in range(1, N_ORDER + 1):
        if order == 1:
            pos, ids = prev_pos, prev_ids
            n_ids = vocab
        else:
            keep = remaining[prev_pos] >= order  # the gram starting here fits inside its sentence
            pos = prev_pos[keep]
            combined = prev_ids[keep] * vocab + tokens[pos + order - 1]
            uniq, ids = _unique_inverse(combined)
            n_ids = uniq.size
        sent_parts.append(sent_of_tok[pos])
        gram_parts.append(ids + offset)
        order_sizes.append(n_ids)
        offset += n_ids
        prev_pos, prev_ids = pos, ids
    n_grams = max(offset, 1)
    pair = np.concatenate(sent_parts) * n_grams + np.concatenate(gram_parts)
    pair, tf = _unique_counts(pair)
    sent, gram = np.divmod(pair, n_grams)
    order_of_gram = np.repeat(np.arange(N_ORDER, dtype=np.int64), order_sizes)
    return sent, gram, tf.astype(np.float64), order_of_gram[gram] if gram.size else gram, lengths


def cider_d_scores(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    groups: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """Per-image CIDEr-D (native ×1 scale) of pre-tokenised, space-joined sentences.

    ``groups[i]`` names the corpus image i belongs to (default: one corpus). df and ℓ = log(N_group) are
    computed per corpus, so one call can score many independent mini-corpora.
    """
    n_img = len(candidates)
    if len(references) != n_img:
        raise ValueError(f"{n_img} candidates but {len(references)} reference lists")
    if n_img == 0:
        return np.zeros(0)
    m = np.fromiter((len(r) for r in references), dtype=np.int64, count=n_img)
    if (m == 0).any():
        raise ValueError(f"image {int(np.argmax(m == 0))} has no reference")
    group = np.zeros(n_img, dtype=np.int64) if groups is None else pd.factorize(np.asarray(groups))[0].astype(np.int64)
    n_groups = int(group.max()) + 1
    log_n = np.log(np.bincount(group, minlength=n_groups).astype(np.float64))

    ref_owner = np.repeat(np.arange(n_img, dtype=np.int64), m)
    sentences = list(candidates) + [r for refs in references for r in refs]
    sent, gram, tf, order, lengths = _sentence_grams(sentences)
    n_grams = int(gram.max()) + 1 if gram.size else 1
    n_sent = len(sentences)
    image_of_sent = np.concatenate((np.arange(n_img, dtype=np.int64), ref_owner))
    group_of_sent = group[image_of_sent]

    # document frequency per (corpus, gram): images whose reference set contains the gram
    is_ref = sent >= n_img
    img_gram, _ = _unique_counts(image_of_sent[sent[is_ref]] * n_grams + gram[is_ref])
    if n_groups == 1:
        entry_df = np.bincount(img_gram % n_grams, minlength=n_grams)[gram].astype(np.float64)
    else:  # count per (corpus, gram) and look the entries up through one joint factorisation
        keys = np.concatenate((group[img_gram // n_grams] * n_grams + img_gram % n_grams,
                               group_of_sent[sent] * n_grams + gram))
        _, ids = _unique_inverse(keys)
        df = np.bincount(ids[: img_gram.size], minlength=int(ids.max()) + 1 if ids.size else 0)
        entry_df = df[ids[img_gram.size:]].astype(np.float64)
    weight = tf * (log_n[group_of_sent[sent]] - np.log(np.maximum(1.0, entry_df)))

    norm = np.sqrt(np.bincount(sent * N_ORDER + order, weights=weight * weight, minlength=n_sent * N_ORDER))
    norm = norm.reshape(n_sent, N_ORDER)
    bigrams = np.maximum(lengths - 1, 0).astype(np.float64)

    # overlap: reference entries joined to the candidate entries of the same image on the gram
    cand_mask = ~is_ref
    cand_key = sent[cand_mask] * n_grams + gram[cand_mask]  # sorted: entries are sorted by (sentence, gram)
    cand_w = weight[cand_mask]
    r_sent, r_gram, r_w, r_order = sent[is_ref], gram[is_ref], weight[is_ref], order[is_ref]
    r_key = image_of_sent[r_sent] * n_grams + r_gram
    pos = np.searchsorted(cand_key, r_key)
    pos_c = np.minimum(pos, max(cand_key.size - 1, 0))
    hit = (pos < cand_key.size) & (cand_key[pos_c] == r_key) if cand_key.size else np.zeros(r_key.size, bool)
    contrib = np.minimum(cand_w[pos_c[hit]], r_w[hit]) * r_w[hit] if cand_key.size else np.zeros(0)
    n_refs = n_sent - n_img
    ref_local = r_sent[hit] - n_img
    val = np.bincount(ref_local * N_ORDER + r_order[hit], weights=contrib, minlength=n_refs * N_ORDER)
    val = val.reshape(n_refs, N_ORDER)

    norm_c = norm[ref_owner]  # candidate norms, one row per reference
    norm_r = norm[n_img:]
    both = (norm_c != 0) & (norm_r != 0)
    denom = np.where(both, norm_c * norm_r, 1.0)
    val = np.where(both, val / denom, val)
    delta = bigrams[ref_owner] - bigrams[n_img:]
    val *= np.exp(-(delta * delta) / (2.0 * SIGMA * SIGMA))[:, None]

    per_image_sum = np.zeros((n_img, N_ORDER))
    for k in range(N_ORDER):
        per_image_sum[:, k] = np.bincount(ref_owner, weights=val[:, k], minlength=n_img)
    return per_image_sum.mean(axis=1) / m * 10.0


def cider_d(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
    """Corpus CIDEr-D and per-image scores (native ×1 scale), same arithmetic as coco-caption's ``Cider``."""
    scores = cider_d_scores(candidates, references)
    return (float(scores.mean()) if scores.size else 0.0), scores.tolist()


def _precook(sentence: str) -> dict[tuple[str, ...], int]:
    """n-gram counts in the reference's insertion order (orders 1..4, positions left to right)."""
    words = sentence.split()
    counts: dict[tuple[str, ...], int] = {}
    for k in range(1, N_ORDER + 1):
        for i in range(len(words) - k + 1):
            gram = tuple(words[i:i + k])
            counts[gram] = counts.get(gram, 0) + 1
    return counts


def reference_loop_scores(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
    """Per-image CIDEr-D computed in coco-caption ``CiderScorer``'s order of floating-point operations.

    Slow (pure Python) and only used where the order matters: to break best-reference ties exactly as
    ``np.argmax`` over the reference's scores does. Same arithmetic as :func:`cider_d_scores`.
    """
    tests = [_precook(c) for c in candidates]
    refs = [[_precook(r) for r in rs] for rs in references]
    df: dict[tuple[str, ...], float] = {}
    for rs in refs:
        for gram in {g for r in rs for g in r}:
            df[gram] = df.get(gram, 0.0) + 1.0
    ref_len = np.log(float(len(refs)))

    def vec_of(counts: dict[tuple[str, ...], int]):
        vec: list[dict[tuple[str, ...], Any]] = [{} for _ in range(N_ORDER)]
        norm: list[Any] = [0.0] * N_ORDER
        length = 0
        for gram, tf in counts.items():
            n = len(gram) - 1
            vec[n][gram] = float(tf) * (ref_len - np.log(max(1.0, df.get(gram, 0.0))))
            norm[n] += pow(vec[n][gram], 2)
            if n == 1:
                length += tf
        return vec, [np.sqrt(x) for x in norm], length

    out = []
    for test, rs in zip(tests, refs):
        vec, norm, length = vec_of(test)
        score = np.array([0.0] * N_ORDER)
        for r in rs:
            vec_r, norm_r, length_r = vec_of(r)
            delta = float(length - length_r)
            val = np.array([0.0] * N_ORDER)
            for n in range(N_ORDER):
                for gram in vec[n]:
                    w_r = vec_r[n].get(gram, 0.0)
                    val[n] += min(vec[n][gram], w_r) * w_r
                if norm[n] != 0 and norm_r[n] != 0:
                    val[n] /= norm[n] * norm_r[n]
                val[n] *= math.e ** (-(delta ** 2) / (2 * SIGMA ** 2))
            score += val
        out.append(np.mean(score) / len(rs) * 10.0)
    return np.array(out, dtype=np.float64)


def best_reference_indices(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> list[int]:
    """Per image, j* = the first index with the highest CIDEr-D of the mini-corpus (candidate, [ref_j]), j = 1..k.

    The mini-corpora are scored together, vectorised; where two candidates' scores are within
    :data:`TIE_TOLERANCE`, that mini-corpus is re-scored in the reference loop's order of floating-point
    operations (:func:`reference_loop_scores`), so ties break exactly as ``np.argmax`` over the reference's scores.
    """
    m = [len(r) for r in references]
    pair_cand = [c for c, k in zip(candidates, m) for _ in range(k)]
    pair_refs = [[r] for refs in references for r in refs]
    pair_scores = cider_d_scores(pair_cand, pair_refs, np.repeat(np.arange(len(candidates)), m))
    starts = np.concatenate(([0], np.cumsum(m)[:-1])).astype(np.int64)
    best = []
    for i, (s, k) in enumerate(zip(starts, m)):
        scores = pair_scores[s:s + k]
        top = scores.max()
        # all-zero ties are exact in both orders (no overlapping gram): only positive near-ties are re-scored
        if top > 0 and np.count_nonzero(np.abs(scores - top) <= TIE_TOLERANCE) > 1:
            scores = reference_loop_scores([candidates[i]] * k, [[r] for r in references[i]])
        best.append(int(np.argmax(scores)))  # the first maximum, as the reference
    return best


def cider_d_bestref(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
    """The SMoLoRA Flickr30k procedure (docs/scoring.md, CIDEr-D), native ×1 scale.

    1. Per image i, pick j* (:func:`best_reference_indices`).
    2. Corpus CIDEr-D with roles swapped: candidate = ref_{j*}, references = [prediction]; df then comes from
       the predictions.
    """
    if not candidates:
        return 0.0, []
    best = best_reference_indices(candidates, references)
    chosen = [references[i][j] for i, j in enumerate(best)]
    return cider_d(chosen, [[c] for c in candidates])


# ------------------------------------------------------------------------------------------ metrics


def _caption_refs(metric_id: str, samples: Sequence[Sample]) -> list[list[str]]:
    refs = []
    for s in samples:
        if not s.references:
            raise DataError(f"{metric_id} needs at least one reference caption", record=s.uid, field="references")
        refs.append(list(s.references))
    return refs


def _small_corpus_extras(n: int) -> dict[str, str]:
    if 0 < n < SMALL_CORPUS:
        return {"warning": f"CIDEr-D computed over only {n} images: IDF statistics of a small set differ from "
                           "those of the full split; compare only with scores over the same set"}
    return {}


class _CiderMetric(Metric):
    id: ClassVar[str]
    scale: ClassVar[Scale] = "cider_x100"
    universe: ClassVar[Universe]
    positional: ClassVar[bool] = False
    bestref: ClassVar[bool] = False

    def tokenize(self, texts: list[str]) -> list[str]:
        raise NotImplementedError

    def score(self, samples: Sequence[Sample], predictions: Sequence[str | None]) -> MetricResult:
        if self.universe == "samples":
            texts, extras = standard_texts(self.id, samples, predictions)
        else:
            texts, extras = compat_texts(self.id, samples, predictions), {}
        refs = _caption_refs(self.id, samples)
        flat = self.tokenize(texts + [r for rs in refs for r in rs])
        cands, pos, tok_refs = flat[: len(texts)], len(texts), []
        for rs in refs:
            tok_refs.append(flat[pos:pos + len(rs)])
            pos += len(rs)
        _, per_image = (cider_d_bestref if self.bestref else cider_d)(cands, tok_refs)
        extras.update(_small_corpus_extras(len(samples)))
        return result(self.id, [v * 100.0 for v in per_image], self.scale, extras)


class CiderDWhitespace(_CiderMetric):
    """Compat TextCaps (docs/scoring.md, CIDEr-D): whitespace tokens, candidate = prediction, all references."""

    id = "cider_d@whitespace"
    universe = "predictions"

    def tokenize(self, texts: list[str]) -> list[str]:
        return [whitespace_tokenize(t) for t in texts]


class CiderDBestRefWhitespace(CiderDWhitespace):
    """Compat Flickr30k (docs/scoring.md, CIDEr-D): best single reference per image, then roles swapped."""

    id = "cider_d_bestref@whitespace"
    bestref = True


class CiderDPtbJava(_CiderMetric):
    """Standard captions (docs/scoring.md, CIDEr-D): PTB tokenisation with the Stanford jar; refuses to run without Java."""

    id = "cider_d@ptb"
    universe = "samples"

    def resolve_for(self, samples: Sequence[Sample]) -> tuple[str, list[str]]:
        # Without Java, the pure-Python PTB approximation (its own id: numbers may differ slightly).
        if not java_ptb_available():
            return CiderDPtbPy.id, [f"Java PTB tokenizer unavailable; scored with {CiderDPtbPy.id} instead of {self.id}"]
        return self.id, []

    def tokenize(self, texts: list[str]) -> list[str]:
        if not java_ptb_available():
            raise CvitError(
                "cider_d@ptb needs a Java runtime and pycocoevalcap's Stanford PTBTokenizer jar, which are not "
                "available; score with cider_d@ptb-py instead (its resolve_for does this and the "
                "caller records the substitution)"
            )
        return ptb_java_tokenize(texts)


class CiderDPtbPy(_CiderMetric):
    """Standard captions with the pure-Python PTB approximation (a separate id: numbers may differ slightly)."""

    id = "cider_d@ptb-py"
    universe = "samples"

    def tokenize(self, texts: list[str]) -> list[str]:
        return [ptb_py_tokenize(t) for t in texts]


for _cls in (CiderDWhitespace, CiderDBestRefWhitespace, CiderDPtbJava, CiderDPtbPy):
    METRICS.add(_cls())
