"""Decoding benchmark images into RGB PIL images, in the two preprocessing modes of docs/benchmarks/cvit.md.

``load_image(path, mode)``:

* every image is EXIF-transposed (phone photos carry their rotation in EXIF) and converted to 8-bit RGB.
  8-bit modes (L, P, LA, PA, RGBA, CMYK, YCbCr, 1, ...) go through PIL's ``convert("RGB")``, exactly what
  the reference scripts' ``Image.open(p).convert("RGB")`` does; alpha is dropped, not composited.
  16-bit and 32-bit greyscale (``I;16*``, ``I``) is scaled to 8 bits (value / 257, rounded, clipped),
  because ``convert`` would clip everything above 255 to white; float images (``F``) in [0, 1] are
  scaled by 255, otherwise clipped to [0, 255].
  Note: the reference scripts do not EXIF-transpose; images whose EXIF orientation is not 1 therefore
  differ from the papers' pipeline (they are rare in the benchmark datasets).
* ``pad``: pad to a square with the CLIP mean colour, ``int(c * 255)`` (truncated, not rounded) of
  (0.48145466, 0.4578275, 0.40821073) = (122, 116, 104), image centred (offset ``(long - short) // 2``),
  as LLaVA's ``expand2square``; the processor then resizes the square.
* ``crop``: returned as is; the processor does shortest-side resize + centre crop.

Undecodable images (missing file, not an image, header or tables cut off) raise
:class:`~cvit_bench.errors.DataError` naming the file.

**Truncated JPEGs (decision).** A JPEG whose entropy-coded data is cut short but whose header and tables
are complete is *accepted*: the decoded rows are kept and the missing rows are grey, which is what PIL's
``ImageFile.LOAD_TRUNCATED_IMAGES = True`` gives. We do not flip that process-wide flag (it would change
every other PIL user in the process, including other threads); instead the retry feeds the decoder the
same bytes followed by an end-of-image marker (``FF D9``), which gives the identical pixels (tested) with
no global state. The image is marked ``image.info["cvit_truncated"] = True`` and a warning is issued, so
the runner can record it. Why accept: dropping the sample would change the task's denominator, and
crashing would stop a multi-hour run over one damaged file. Truncated PNG/GIF/other formats raise.
"""
from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError, UnknownNameError

#: CLIP's image mean; LLaVA pads with int(c * 255) of it.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
PAD_COLOR: tuple[int, int, int] = tuple(int(c * 255) for c in CLIP_MEAN)  # (122, 116, 104)

_JPEG_EOI = b"\xff\xd9"
_HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode (see the module docstring for the rules)."""
    if img.mode == "RGB":
        return img
    if img.mode in _HIGH_BIT_MODES:
        arr = np.asarray(img, dtype=np.float64)
        if img.mode == "I" and arr.size and arr.max() <= 255 and arr.min() >= 0:
            scaled = arr  # 32-bit container holding 8-bit data
        else:
            scaled = arr / 257.0
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if arr.size and np.nanmax(arr) <= 1.0 and np.nanmin(arr) >= 0.0:
            arr = arr * 255.0
        arr = np.nan_to_num(arr, nan=0.0)
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    with warnings.catch_warnings():
        # "Palette images with Transparency expressed in bytes should be converted to RGBA": we drop alpha.
        warnings.simplefilter("ignore", UserWarning)
        return img.convert("RGB")


def _open_decoded(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def _decode(path: str, data: bytes) -> Image.Image:
    try:
        return _open_decoded(data)
    except UnidentifiedImageError as e:
        raise DataError(f"not a readable image ({e.__class__.__name__}: cannot identify the format)",
                        file=path) from None
    except (OSError, SyntaxError, ValueError) as e:
        first_error = e
    if data[:2] == b"\xff\xd8" and "truncated" in str(first_error):
        try:
            img = _open_decoded(data + _JPEG_EOI)
        except (OSError, SyntaxError, ValueError):
            pass
        else:
            img.info["cvit_truncated"] = True
            warnings.warn(f"{path}: truncated JPEG; the missing rows are grey ({first_error})", stacklevel=3)
            return img
    raise DataError(f"image cannot be decoded ({type(first_error).__name__}: {first_error})", file=path)


def pad_to_square(img: Image.Image, color: tuple[int, int, int] = PAD_COLOR) -> Image.Image:
    """Centre ``img`` on a square canvas of side max(w, h) filled with ``color``."""
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), color)
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    canvas.info.update(img.info)
    return canvas


#: mode → transform applied after decoding and RGB conversion.
IMAGE_MODES: dict[str, Callable[[Image.Image], Image.Image]] = {
    "pad": pad_to_square,
    "crop": lambda img: img,
}


def _transform_for(mode: str) -> Callable[[Image.Image], Image.Image]:
    if mode not in IMAGE_MODES:
        raise UnknownNameError("image mode", mode, list(IMAGE_MODES))
    return IMAGE_MODES[mode]


def decode_image(data: bytes, mode: str = "pad", *, name: str = "<bytes>") -> Image.Image:
    """Like :func:`load_image` for bytes already in memory (``name`` is used in error messages)."""
    transform = _transform_for(mode)
    img = _decode(name, data)
    info = dict(img.info)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception as e:  # a corrupt EXIF block must not lose the image
        warnings.warn(f"{name}: EXIF orientation ignored ({e})", stacklevel=2)
    rgb = _to_rgb(img)
    if info.get("cvit_truncated"):
        rgb.info["cvit_truncated"] = True
    return transform(rgb)


def load_image(path: str | os.PathLike, mode: str = "pad") -> Image.Image:
    """Decode the image at ``path`` to 8-bit RGB, EXIF-transposed, padded (``pad``) or as is (``crop``)."""
    path = str(path)
    _transform_for(mode)  # a bad mode is a configuration error, reported before any file error
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError("image file not found", file=path) from None
    except OSError as e:
        raise DataError(f"image file cannot be read ({e.strerror or e})", file=path) from None
    return decode_image(data, mode, name=path)
