"""Image decoding: RGB conversion of odd modes, EXIF rotation, damaged files, pad-to-square, the loader."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

from cvit_bench.backends.base import GenerationRequest
from cvit_bench.backends.loader import ImageFailure, make_loader
from cvit_bench.errors import DataError, UnknownNameError
from cvit_bench.data.images import PAD_COLOR, load_image


def _noise_jpeg(tmp_path, name="noise.jpg", size=(96, 64)):
    rng = np.random.default_rng(0)
    arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    path = tmp_path / name
    Image.fromarray(arr).save(path, "JPEG", quality=90)
    return path


def test_pad_colour_is_clip_mean_times_255():
    assert PAD_COLOR == (122, 116, 104)


def test_pad_to_square_centres_the_image(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (30, 11), (255, 0, 0)).save(path)
    img = load_image(path, "pad")
    arr = np.asarray(img)
    assert img.size == (30, 30)
    top = (30 - 11) // 2  # 9
    assert (arr[:top] == PAD_COLOR).all() and (arr[top + 11:] == PAD_COLOR).all()
    assert (arr[top:top + 11] == (255, 0, 0)).all()


def test_pad_tall_image_pads_left_and_right(tmp_path):
    path = tmp_path / "tall.png"
    Image.new("RGB", (4, 10), (0, 0, 255)).save(path)
    arr = np.asarray(load_image(path, "pad"))
    assert arr.shape == (10, 10, 3)
    assert (arr[:, :3] == PAD_COLOR).all() and (arr[:, 3:7] == (0, 0, 255)).all() and (arr[:, 7:] == PAD_COLOR).all()


def test_crop_mode_keeps_the_image_as_is(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (30, 11), (1, 2, 3)).save(path)
    img = load_image(path, "crop")
    assert img.size == (30, 11) and img.mode == "RGB"


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, "JPEG", quality=100)  # pure red in CMYK
    img = load_image(path, "crop")
    assert img.mode == "RGB"
    r, g, b = np.asarray(img).reshape(-1, 3).mean(axis=0)
    assert r > 240 and g < 15 and b < 15


def test_palette_with_transparency_becomes_rgb(tmp_path):
    path = tmp_path / "pal.png"
    img = Image.new("P", (8, 8), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * (256 * 3 - 6))
    img.info["transparency"] = 0
    img.save(path, transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the palette-transparency warning must not leak to users
        out = load_image(path, "crop")
    assert out.mode == "RGB" and (np.asarray(out) == (10, 200, 30)).all()


def test_la_drops_alpha(tmp_path):
    path = tmp_path / "la.png"
    Image.new("LA", (5, 5), (77, 0)).save(path)
    assert (np.asarray(load_image(path, "crop")) == 77).all()


def test_16bit_greyscale_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "g16.png"
    arr = np.array([[0, 257 * 100, 65535, 32768]], dtype=np.uint16)
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode.startswith("I")
    out = np.asarray(load_image(path, "crop"))[0, :, 0]
    assert out.tolist() == [0, 100, 255, 128]


def test_exif_rotation_is_applied(tmp_path):
    # stored 40 wide × 20 high, red block in the stored top-left corner; orientation 6 = rotate 90° clockwise
    arr = np.full((20, 40, 3), 255, np.uint8)
    arr[:10, :10] = (255, 0, 0)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    img.save(path, "JPEG", quality=100, exif=exif.tobytes())
    out = load_image(path, "crop")
    assert out.size == (20, 40)  # displayed upright: 20 wide, 40 high
    a = np.asarray(out).astype(int)
    assert a[2:8, 12:18, 1].mean() < 40  # red now in the top-right corner
    assert a[2:8, 2:8, 1].mean() > 215  # the top-left is white


def test_truncated_jpeg_is_accepted_like_load_truncated_images(tmp_path):
    src = _noise_jpeg(tmp_path)
    data = src.read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="truncated JPEG"):
        img = load_image(path, "crop")
    assert img.info.get("cvit_truncated") is True
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # the process-wide flag was never touched
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        expected = Image.open(io.BytesIO(data[: len(data) // 2])).convert("RGB")
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    assert np.array_equal(np.asarray(img), np.asarray(expected))
    # the missing bottom rows are grey, the top rows carry the picture
    arr = np.asarray(img)
    assert (arr[-1] == 128).all() and arr[0].std() > 20


def test_jpeg_truncated_before_the_image_data_is_an_error(tmp_path):
    data = _noise_jpeg(tmp_path).read_bytes()
    path = tmp_path / "header-only.jpg"
    path.write_bytes(data[:100])
    with pytest.raises(DataError, match="cannot be decoded") as e:
        load_image(path)
    assert e.value.file == str(path)


def test_truncated_png_is_an_error(tmp_path):
    src = tmp_path / "full.png"
    Image.fromarray((np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)).save(src)
    path = tmp_path / "cut.png"
    path.write_bytes(src.read_bytes()[:2000])
    with pytest.raises(DataError) as e:
        load_image(path)
    assert str(path) in str(e.value)


def test_garbage_bytes_and_missing_file_name_the_file(tmp_path):
    path = tmp_path / "garbage.jpg"
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(DataError, match="not a readable image") as e:
        load_image(path)
    assert e.value.file == str(path) and str(path) in str(e.value)
    with pytest.raises(DataError, match="not found") as e:
        load_image(tmp_path / "nope.png")
    assert e.value.file == str(tmp_path / "nope.png")


def test_unknown_mode():
    with pytest.raises(UnknownNameError, match="crop, pad"):
        load_image("whatever.png", "stretch")


def test_loader_decodes_in_workers_and_marks_failures(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (10, 4), (9, 9, 9)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\x00" * 50)
    reqs = [
        GenerationRequest("a", "q", str(good), 4, "pad"),
        GenerationRequest("b", "q", None, 4),
        GenerationRequest("c", "q", str(bad), 4),
        GenerationRequest("d", "q", str(good), 4, "crop"),
        GenerationRequest("e", "q", str(tmp_path / "missing.png"), 4),
    ]
    batches = list(make_loader(reqs, num_workers=2, batch_size=2))
    got_reqs = [r for rs, _ in batches for r in rs]
    got_imgs = [im for _, ims in batches for im in ims]
    assert [len(rs) for rs, _ in batches] == [2, 2, 1]
    assert got_reqs == reqs
    assert got_imgs[0].size == (10, 10) and got_imgs[3].size == (10, 4)
    assert got_imgs[1] is None
    assert isinstance(got_imgs[2], ImageFailure) and got_imgs[2].file == str(bad)
    assert isinstance(got_imgs[4], ImageFailure) and "not found" in got_imgs[4].message
