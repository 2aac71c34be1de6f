"""Shared pytest fixtures. Models and data are built at test time, never downloaded."""
from __future__ import annotations

import os

# Before anything imports huggingface_hub: an accidental hub id must fail at once, not retry for 25 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# datasets writes an Arrow cache; keep it out of the user's home during tests.
import tempfile  # noqa: E402

os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="cvit-hf-datasets-"))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory):
    """A random LLaVA-1.5-layout model folder (32 px, 16 image tokens, ~150 k params), built once."""
    from cvit_bench.mini.tiny import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava") / "model", seed=0)


@pytest.fixture(scope="session")
def tiny_qwen2vl_dir(tmp_path_factory):
    """A random Qwen2-VL-layout model folder with the image-only processor, built once."""
    from cvit_bench.mini.tiny import build_tiny_qwen2vl

    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl") / "model", seed=0)


@pytest.fixture(scope="session")
def mini_base_dir():
    """The pretrained cvit-mini base shipped in the package (cvit_bench/mini/mini_base, verified by sha256; read-only:
    tests copy it before changing anything)."""
    from cvit_bench.mini.base_model import shipped_mini_base

    return shipped_mini_base()


@pytest.fixture(scope="session")
def mini_prepared(tmp_path_factory):
    """cvit-mini prepared with the single template set: returns the benchmark folder (holds manifest.json;
    its image_root points at the drawn PNGs)."""
    from cvit_bench.data.prepare import prepare

    root = tmp_path_factory.mktemp("cvit-mini")
    return prepare("cvit-mini", templates="single", source="synthetic", raw_root=root / "raw",
                   out=root / "prepared").folder


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny matrices gain nothing from threads; on a shared 2-core machine a second thread only spins."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def small_train_data(tmp_path_factory):
    """cvit prepared from the generated published-format files: flickr30k, imagenet and places365, 8 samples each."""
    from cvit_bench.data.prepare import prepare
    from cvit_fixtures import make_cvit_files

    root = tmp_path_factory.mktemp("train-data")
    raw = make_cvit_files(root / "raw", "single", n=8)
    prepare("cvit", templates="single", source="cvit-files", raw_root=raw, out=root / "data",
            tasks=["flickr30k", "imagenet", "places365"])
    return root / "data"


@pytest.fixture(scope="session")
def tiny_llava_processor(tiny_llava_dir):
    from cvit_bench.backends.processors import load_processor

    return load_processor(tiny_llava_dir, "llava")


# --- the leaderboard tests' submission (test_leaderboard.py, test_board_integrity.py): built once, read-only ---

@pytest.fixture(scope="session")
def board_prepared(tmp_path_factory):
    """Prepared CVIT references a board re-scores against (the folder given to ``--data``)."""
    from leaderboard_fixtures import make_prepared

    return make_prepared(tmp_path_factory.mktemp("board-prep"))


@pytest.fixture(scope="session")
def run_out(board_prepared, tmp_path_factory):
    """A run output folder as ``evaluate --out`` leaves it (predictions/, scores/, results.json)."""
    from leaderboard_fixtures import make_run_out

    out = tmp_path_factory.mktemp("board-run") / "run"
    make_run_out(board_prepared, out)
    return out


@pytest.fixture(scope="session")
def bundle(run_out, tmp_path_factory):
    """``run_out`` packed as a submission bundle with the tests' meta.yaml."""
    from cvit_bench.leaderboard.bundle import pack
    from leaderboard_fixtures import META

    return pack(run_out, META, tmp_path_factory.mktemp("board-bundle") / "bundle.tar.gz")
