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
    from cvit_bench.tiny import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava") / "model", seed=0)


@pytest.fixture(scope="session")
def tiny_qwen2vl_dir(tmp_path_factory):
    """A random Qwen2-VL-layout model folder with the image-only processor, built once."""
    from cvit_bench.tiny import build_tiny_qwen2vl

    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl") / "model", seed=0)
