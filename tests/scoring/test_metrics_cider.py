"""CIDEr-D (docs/scoring.md, cider_d@ptb) and the caption metrics: worked vectors, equality with pycocoevalcap, quirks."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvit_bench.errors import CvitError
from cvit_bench.formats.sample import Sample
from cvit_bench.scoring.base import get_metric, resolve_metric
from cvit_bench.scoring.cider_d import cider_d, cider_d_bestref, cider_d_scores
from cvit_bench.scoring.normalize import java_ptb_available

IMG1 = ("a man riding a horse", ["a man riding a horse", "a man riding a horse"])
IMG2 = ("a cat on a mat", ["a cat on a mat", "a dog on a rug"])
IMG3 = ("two dogs play", ["two dogs playing", "dogs play in grass"])

FLICKR_PRED = ["a man rides a horse .", "two dogs play in the grass ."]
FLICKR_REFS = [
    ["a man riding a brown horse .", "a person on a horse in a field .", "a man rides a horse ."],
    ["two dogs playing in grass .", "dogs run on a lawn .", "a pair of dogs play outside ."],
]


def caption_sample(i: int, refs: list[str], task: str = "textcaps") -> Sample:
    return Sample(uid=f"{task}/val/{i}", task=task, split="val", source_id=str(i), image=f"{i}.jpg",
                  question="Describe the image.", instruction="", template_set="single", template_index=0,
                  prompt="Describe the image.", target=refs[0], references=list(refs))


def _split(images):
    return [c for c, _ in images], [r for _, r in images]


# ------------------------------------------------------------------------------------- worked vectors


@pytest.mark.parametrize(
    "images, per_image, corpus",
    [
        ([IMG1, IMG2], [10.0, 5.7292], 7.8646),
        ([IMG1], [0.0], 0.0),
        ([IMG1, IMG2, IMG3], [10.0, 5.8573, 2.6733], 6.1769),
    ],
)
def test_spec_5_3_vectors(images, per_image, corpus):
    value, scores = cider_d(*_split(images))
    assert scores == pytest.approx(per_image, abs=5e-5)
    assert value == pytest.approx(corpus, abs=5e-5)


def test_spec_5_4_compat_fixtures_through_the_metrics():
    samples = [caption_sample(i, refs, "flickr30k") for i, refs in enumerate(FLICKR_REFS)]
    best = get_metric("cider_d_bestref@whitespace").score(samples, FLICKR_PRED)
    assert best.per_sample == pytest.approx([1000.0, 270.0839], abs=5e-4)
    assert best.value == pytest.approx(635.0420, abs=5e-4)
    assert best.scale == "cider_x100" and best.n == 2
    plain = get_metric("cider_d@whitespace").score(samples, FLICKR_PRED)
    assert plain.per_sample == pytest.approx([447.7361, 153.5820], abs=5e-4)
    assert plain.value == pytest.approx(300.6591, abs=5e-4)
    assert "warning" in plain.extras  # two images: small-corpus IDF


def test_whitespace_variant_keeps_case_and_punctuation():
    samples = [caption_sample(i, refs) for i, refs in enumerate(FLICKR_REFS)]
    upper = get_metric("cider_d@whitespace").score(samples, [p.upper() for p in FLICKR_PRED])
    assert upper.value == 0.0  # no token matches once case differs


# ------------------------------------------------------------------------- equality with pycocoevalcap


def _random_corpus(rng: random.Random, n_images: int, vocab: int):
    words = [f"w{i}" for i in range(vocab)]

    def sentence():
        return " ".join(rng.choice(words) for _ in range(rng.randint(0, 9)))

    cands = [sentence() for _ in range(n_images)]
    refs = [[sentence() for _ in range(rng.randint(1, 5))] for _ in range(n_images)]
    return cands, refs


@pytest.mark.parametrize("seed", range(6))
def test_equals_pycocoevalcap_cider_on_random_corpora(seed):
    from pycocoevalcap.cider.cider import Cider

    rng = random.Random(seed)
    cands, refs = _random_corpus(rng, n_images=rng.randint(2, 300), vocab=rng.choice([5, 40, 400]))
    if not any(r.strip() for rs in refs for r in rs):
        refs[0][0] = "w0"
    ours_value, ours = cider_d(cands, refs)
    ref_value, ref = Cider().compute_score({i: refs[i] for i in range(len(cands))},
                                           {i: [cands[i]] for i in range(len(cands))})
    assert np.max(np.abs(np.asarray(ours) - ref)) <= 1e-9
    assert abs(ours_value - ref_value) <= 1e-9


def test_groups_score_independent_corpora_in_one_call():
    rng = random.Random(7)
    a = _random_corpus(rng, 20, 30)
    b = _random_corpus(rng, 35, 30)
    joint = cider_d_scores(a[0] + b[0], a[1] + b[1], groups=[0] * 20 + [1] * 35)
    np.testing.assert_allclose(joint[:20], cider_d(*a)[1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(joint[20:], cider_d(*b)[1], rtol=0, atol=1e-12)


def test_corpus_dependence_and_identity():
    # IDF depends on the whole set: adding img3 changes img2's score (5.7292 -> 5.8573)
    assert cider_d(*_split([IMG1, IMG2]))[1][1] != cider_d(*_split([IMG1, IMG2, IMG3]))[1][1]
    # a candidate identical to all its references scores 10
    assert cider_d(*_split([IMG1, IMG3]))[1][0] == pytest.approx(10.0)


def test_bestref_selects_first_maximum_and_swaps_roles():
    # two identical references: the first is selected; the result equals scoring it with swapped roles
    cands = ["a dog runs", "a cat sits on a mat"]
    refs = [["a dog runs fast", "a dog runs fast", "nothing here"], ["a cat sits", "cat on mat"]]
    value, per = cider_d_bestref(cands, refs)
    direct = cider_d(["a dog runs fast", "a cat sits"], [["a dog runs"], ["a cat sits on a mat"]])
    assert per == pytest.approx(direct[1], abs=1e-12) and value == pytest.approx(direct[0], abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(alphabet="ab .", max_size=12),
                          st.lists(st.text(alphabet="ab .", max_size=12), min_size=1, max_size=3)),
                min_size=1, max_size=8))
def test_no_nan_and_non_negative_on_degenerate_input(images):
    cands, refs = [c for c, _ in images], [r for _, r in images]
    for fn in (cider_d, cider_d_bestref):
        value, per = fn(cands, refs)
        assert all(math.isfinite(v) and v >= 0 for v in per) and math.isfinite(value)
        assert len(per) == len(cands)


def test_empty_corpus_and_missing_predictions():
    assert cider_d([], []) == (0.0, [])
    # all sentences empty (no n-gram anywhere), with and without the best-reference grouping
    assert cider_d(["", ""], [[""], [""]]) == (0.0, [0.0, 0.0])
    assert cider_d_bestref(["", "a"], [["", ""], [""]]) == (0.0, [0.0, 0.0])
    samples = [caption_sample(i, refs) for i, refs in enumerate(FLICKR_REFS)]
    res = get_metric("cider_d@ptb-py").score(samples, [None, "   "])
    assert res.per_sample == [0.0, 0.0] and res.value == 0.0 and res.n == 2
    assert res.extras["n_missing"] == 1 and res.extras["n_empty"] == 2


# --------------------------------------------------------------------------------- ptb variants


def test_ptb_py_metric_tokenises_before_scoring():
    samples = [caption_sample(i, refs) for i, refs in enumerate(FLICKR_REFS)]
    shouted = [p.upper().replace(" .", ".") for p in FLICKR_PRED]
    res = get_metric("cider_d@ptb-py").score(samples, shouted)
    expect = cider_d(["a man rides a horse", "two dogs play in the grass"],
                     [[r.replace(" .", "") for r in rs] for rs in FLICKR_REFS])[1]
    assert res.per_sample == pytest.approx([100 * v for v in expect], abs=1e-9)


@pytest.mark.skipif(not java_ptb_available(), reason="no Java runtime / pycocoevalcap jar")
def test_ptb_java_metric_matches_ptb_py_on_plain_captions():
    samples = [caption_sample(i, refs) for i, refs in enumerate(FLICKR_REFS)]
    java = get_metric("cider_d@ptb").score(samples, FLICKR_PRED)
    py = get_metric("cider_d@ptb-py").score(samples, FLICKR_PRED)
    assert java.per_sample == pytest.approx(py.per_sample, abs=1e-9)
    metric, notes = resolve_metric("cider_d@ptb", samples)
    assert metric.id == "cider_d@ptb" and notes == []


def test_ptb_java_refuses_and_resolves_to_py_without_java(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    samples = [caption_sample(i, refs) for i, refs in enumerate(FLICKR_REFS)]
    metric, notes = resolve_metric("cider_d@ptb", samples)
    assert metric.id == "cider_d@ptb-py" and notes == [
        "Java PTB tokenizer unavailable; scored with cider_d@ptb-py instead of cider_d@ptb"]
    assert resolve_metric("cider_d@whitespace", samples) == (get_metric("cider_d@whitespace"), [])
    with pytest.raises(CvitError, match="cider_d@ptb-py"):
        get_metric("cider_d@ptb").score(samples, FLICKR_PRED)


def test_caption_metric_attributes_and_errors():
    for mid, universe in [("cider_d@whitespace", "predictions"), ("cider_d_bestref@whitespace", "predictions"),
                          ("cider_d@ptb", "samples"), ("cider_d@ptb-py", "samples")]:
        m = get_metric(mid)
        assert m.id == mid and m.universe == universe and m.scale == "cider_x100" and m.positional is False
    bad = caption_sample(0, ["x"])
    bad.references = []
    with pytest.raises(CvitError, match="references"):
        get_metric("cider_d@whitespace").score([bad], ["x"])
    with pytest.raises(CvitError, match="prediction"):
        get_metric("cider_d@whitespace").score([caption_sample(0, ["x"])], [None])
