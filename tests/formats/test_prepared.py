"""PreparedData.open: both --data forms, the manifest check, lazily verified splits and the image root."""
from __future__ import annotations

import shutil

import pytest

from cvit_bench.errors import CvitError, DataError, SchemaVersionError
from cvit_bench.files import atomic_write_json, read_json, sha256_file
from cvit_bench.formats.prepared import PreparedData
from cvit_bench.formats.sample import read_samples


@pytest.fixture()
def prepared_copy(mini_prepared, tmp_path):
    """A private copy of the prepared cvit-mini (the tests edit it): ``<tmp>/out/cvit-mini``."""
    folder = tmp_path / "out" / mini_prepared.name
    shutil.copytree(mini_prepared, folder)
    return folder


def test_open_takes_the_out_folder_with_an_id_or_the_benchmark_folder(prepared_copy):
    by_id = PreparedData.open(prepared_copy.parent, "cvit-mini")
    direct = PreparedData.open(prepared_copy)
    only_one = PreparedData.open(prepared_copy.parent)   # the one benchmark there, no id needed
    assert by_id.folder == direct.folder == only_one.folder == prepared_copy
    assert by_id.manifest == read_json(prepared_copy / "manifest.json", "manifest")
    assert by_id.benchmark_id == "cvit-mini" and by_id.template_set == "single"
    assert by_id.manifest_sha256() == sha256_file(prepared_copy / "manifest.json")
    assert by_id.image_root.is_dir()
    with pytest.raises(CvitError, match="no prepared benchmark cvit here"):
        PreparedData.open(prepared_copy.parent, "cvit")
    with pytest.raises(CvitError, match="holds benchmark 'cvit-mini', not 'cvit'"):
        direct.require_benchmark("cvit")


def test_the_manifest_version_is_checked_on_open(prepared_copy):
    manifest = read_json(prepared_copy / "manifest.json", "manifest")
    atomic_write_json(prepared_copy / "manifest.json", {**manifest, "schema_version": 99})
    with pytest.raises(SchemaVersionError, match="99"):
        PreparedData.open(prepared_copy)


def test_splits_are_read_lazily_and_checked_against_the_manifest(prepared_copy):
    prepared = PreparedData.open(prepared_copy)
    rel = next(iter(prepared.files))
    task, split = prepared.files[rel].task, prepared.files[rel].split
    assert prepared.samples(task, split) == read_samples(prepared_copy / rel)
    assert prepared.fingerprint(task, split) == prepared.manifest["files"][rel]["fingerprint"]
    assert task in set(prepared.tasks_with(split))

    (prepared_copy / rel).write_bytes(b"edited after prepare")
    assert PreparedData.open(prepared_copy).manifest == prepared.manifest    # opening reads no split
    with pytest.raises(DataError, match="sha256 differs from the manifest") as err:
        PreparedData.open(prepared_copy).samples(task, split)
    assert err.value.file == str(prepared_copy / rel)
    with pytest.raises(DataError, match="sha256 differs"):
        PreparedData.open(prepared_copy).verify()
    (prepared_copy / rel).unlink()
    with pytest.raises(DataError, match="listed in the manifest but missing"):
        PreparedData.open(prepared_copy).samples(task, split)
    with pytest.raises(DataError, match="the prepared data has no nosuchtask/") as err:
        prepared.samples("nosuchtask", split)
    assert err.value.file == str(prepared_copy / "manifest.json")


def test_the_manifest_record_gives_back_the_same_file(prepared_copy):
    from cvit_bench.files import dumps_json
    from cvit_bench.formats.manifest import write_manifest

    prepared = PreparedData.open(prepared_copy)
    before = (prepared_copy / "manifest.json").read_bytes()
    assert prepared.record.to_dict() == prepared.manifest and list(prepared.record.to_dict()) == list(prepared.manifest)
    write_manifest(prepared_copy, prepared.record)
    assert (prepared_copy / "manifest.json").read_bytes() == before
    rel, info = next(iter(prepared.record.files.items()))
    assert info.to_dict() == prepared.manifest["files"][rel] and info.rows == len(prepared.samples(info.task, info.split))
    assert dumps_json(prepared.record.to_dict())   # JSON-serialisable as is
