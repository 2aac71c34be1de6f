"""RefCOCO raw loader (docs/benchmarks/coin.md, Source files): padded-square boxes on awkward images, the plain-data
unpickler (a hostile pickle is refused before it runs), and `prepare --source raw` for CoIN's Grounding."""
from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from coin_fixtures import REF_ANNS, REF_IMAGES, make_coin_files, make_refcoco, write_hostile_pickle
from cvit_bench.errors import DataError
from cvit_bench.data.prepare import prepare
from cvit_bench.safe_pickle import load_plain_pickle
from cvit_bench.formats.sample import read_samples
from cvit_bench.tasks.refcoco import box_text, padded_square_box


@pytest.mark.parametrize("ann", REF_ANNS, ids=lambda a: str(a[0]))
def test_boxes_in_the_padded_square_frame(ann):
    _, iid, bbox, expected = ann
    w, h = dict(REF_IMAGES)[iid]
    box = padded_square_box([float(v) for v in bbox], w, h)
    assert (None if box is None else box_text(box)) == expected


def test_plain_pickles_load_and_everything_else_is_refused(tmp_path):
    ok = tmp_path / "ok.p"
    data = [{"ref_id": 1, "sentences": [{"sent": "a", "sent_id": 2}], "x": (1.5, None, True)}]
    ok.write_bytes(pickle.dumps(data, protocol=2))
    assert load_plain_pickle(ok) == data
    marker = tmp_path / "pwned"
    bad = tmp_path / "refs(unc).p"
    write_hostile_pickle(bad, marker)
    with pytest.raises(DataError) as err:
        load_plain_pickle(bad)
    assert "refs(unc).p" in str(err.value) and "system" in str(err.value)
    assert not marker.exists()                                   # refused before anything ran
    odd = tmp_path / "set.p"
    odd.write_bytes(pickle.dumps([{1, 2}], protocol=4))          # a set needs no global but is not plain data
    with pytest.raises(DataError, match="set"):
        load_plain_pickle(odd)
    junk = tmp_path / "junk.p"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="junk.p"):
        load_plain_pickle(junk)


@pytest.fixture()
def raw_root(tmp_path):
    root = make_refcoco(tmp_path / "raw")
    make_coin_files(tmp_path / "published", "original", n=2)     # where the 'original' templates are read from
    return root


def _prepare(raw_root, out, **kw):
    published = raw_root.parent / "published" / "Instructions_Original"
    return prepare("coin", templates="original", source="raw", raw_root=raw_root, out=out, tasks=["grounding"],
                   paths={"instructions": str(published)}, **kw)


def test_raw_grounding_prepare(raw_root, tmp_path):
    res = _prepare(raw_root, tmp_path / "out")
    test = read_samples(res.folder / "grounding" / "test.parquet")
    # 3 datasets x 4 anns x 2 sentences, minus the degenerate ann (2 sentences per dataset)
    assert len(test) == 18
    by_id = {s.source_id: s for s in test}
    s = by_id["refcoco-unc-0"]
    assert s.question == "thing 0 left" and s.target == "[0.10, 0.35, 0.50, 0.55]" == s.meta["answer_bbox"]
    assert s.meta["size"] == [50.0, 25.0] and s.image == "coco/train2014/COCO_train2014_000000000001.jpg"
    assert s.prompt == ("thing 0 left\nPlease provide the bounding box coordinate of the region this sentence "
                        "describes.")
    assert "refcocog-umd-100" in by_id                             # sentence ids repeat across datasets
    notes = res.manifest["notes"]["grounding"]
    assert sorted(notes["degenerate_boxes"]["test"]) == ["refcoco+-unc-80", "refcoco+-unc-81", "refcoco-unc-30",
                                                          "refcoco-unc-31", "refcocog-umd-130", "refcocog-umd-131"]
    assert set(notes["pickles"]) == {"refcoco/refs(unc).p", "refcoco+/refs(unc).p", "refcocog/refs(umd).p"}
    assert res.manifest["templates"]["5"] == ["Please provide the bounding box coordinate of the region this sentence describes."]


def test_hostile_refs_pickle_is_refused_from_the_cli(raw_root, tmp_path):
    marker = tmp_path / "pwned"
    write_hostile_pickle(raw_root / "refcoco" / "refs(unc).p", marker)
    published = raw_root.parent / "published" / "Instructions_Original"
    proc = subprocess.run([sys.executable, "-m", "cvit_bench", "prepare", "--benchmark", "coin", "--templates",
                           "original", "--source", "raw", "--raw-root", str(raw_root), "--tasks", "grounding",
                           "--path", f"instructions={published}", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "refs(unc).p" in proc.stderr and "refused" in proc.stderr
    assert not marker.exists() and not (tmp_path / "out" / "coin").exists()


def test_raw_with_a_published_set_needs_the_published_files(tmp_path):
    root = make_refcoco(tmp_path / "raw")
    with pytest.raises(DataError, match="instructions"):
        prepare("coin", templates="original", source="raw", raw_root=root, out=tmp_path / "out", tasks=["grounding"])


def test_bad_instances_name_file_record_field(raw_root, tmp_path):
    import json

    path = raw_root / "refcocog" / "instances.json"
    data = json.loads(path.read_text())
    data["images"][1]["width"] = -3
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as err:
        _prepare(raw_root, tmp_path / "out")
    msg = str(err.value)
    assert "refcocog" in msg and "image 2" in msg and "width" in msg
