"""Decode images in DataLoader worker processes and hand the runner (requests, images) batches.

Decoding (JPEG, EXIF transpose, padding) costs as much as a small model's forward pass, so it runs in
``num_workers`` processes while the main process generates. A sample whose image cannot be decoded does
not stop the loader: its slot holds an :class:`ImageFailure` (picklable, unlike PIL errors with context)
and the runner records the failure for that uid and leaves the sample out of the batch it generates.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from ..data.images import load_image
from .base import GenerationRequest


@dataclass(frozen=True)
class ImageFailure:
    """Marker in place of an image that failed to decode: the file and the reason (DataError's message)."""

    file: str
    message: str


Item = tuple[GenerationRequest, "Image.Image | ImageFailure | None"]


class ImageDataset(Dataset):
    """Requests in the given order; item i is (request, decoded image | ImageFailure | None)."""

    def __init__(self, requests: Sequence[GenerationRequest]) -> None:
        self.requests = list(requests)

    def __len__(self) -> int:
        return len(self.requests)

    def __getitem__(self, i: int) -> Item:
        req = self.requests[i]
        if req.image is None:
            return req, None
        try:
            return req, load_image(req.image, req.image_mode)
        except DataError as e:
            return req, ImageFailure(file=str(req.image), message=str(e))


def collate(items: list[Item]) -> tuple[list[GenerationRequest], list]:
    """Keep requests and images as lists (no tensor stacking: the processor batches images itself)."""
    return [r for r, _ in items], [im for _, im in items]


def make_loader(requests: Sequence[GenerationRequest], num_workers: int, batch_size: int) -> DataLoader:
    """A DataLoader over ``requests`` in order, ``batch_size`` per batch, decoding in ``num_workers`` workers."""
    return DataLoader(
        ImageDataset(requests),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        persistent_workers=False,
        prefetch_factor=2 if num_workers > 0 else None,
    )
