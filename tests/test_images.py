import io

import numpy as np
import pytest
from PIL import Image

from al_loop.data.images import as_grey_float, as_rgb8, list_images, read_image
from al_loop.errors import ImageError

from .conftest import write_png


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_8bit_grey_png_odd_size(tmp_path):
    arr = (np.arange(37 * 53) % 256).astype(np.uint8).reshape(37, 53)
    tile = read_image(write_png(tmp_path / "a.png", arr))
    assert tile.size == (37, 53)
    assert np.array_equal(tile.pixels, arr)
    assert as_rgb8(tile.pixels).shape == (37, 53, 3)
    assert as_grey_float(tile.pixels).max() <= 1.0


def test_16bit_tiff_keeps_dynamic_range(tmp_path):
    import tifffile

    arr = np.linspace(1000, 1400, 64 * 40).reshape(40, 64).astype(np.uint16)  # HiRISE-like narrow DN range
    tifffile.imwrite(tmp_path / "h.tif", arr)
    tile = read_image(tmp_path / "h.tif")
    assert tile.pixels.dtype == np.uint16 and tile.size == (40, 64)
    rgb = as_rgb8(tile.pixels)
    # stretched, not truncated to 255 or crushed to one grey
    assert rgb.min() < 10 and rgb.max() > 245
    grey = as_grey_float(tile.pixels)
    assert 0.0 <= grey.min() < 0.05 and grey.max() > 0.95


def test_rgb_jpeg(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (30, 20, 3), dtype=np.uint8)
    (tmp_path / "c.jpg").write_bytes(_bytes(Image.fromarray(arr), "JPEG"))
    tile = read_image(tmp_path / "c.jpg")
    assert tile.pixels.shape == (30, 20, 3)


def test_hash_is_of_content(tmp_path):
    arr = np.zeros((16, 16), np.uint8)
    a = read_image(write_png(tmp_path / "a.png", arr))
    (tmp_path / "b.png").write_bytes((tmp_path / "a.png").read_bytes())
    assert read_image(tmp_path / "b.png").sha256 == a.sha256


@pytest.mark.parametrize(
    "name,data,reason",
    [
        ("empty.png", b"", "empty"),
        ("text.png", b"this is not an image at all", "not an image"),
        ("trunc.png", None, "corrupt or truncated"),
    ],
)
def test_bad_files_name_file_and_reason(tmp_path, name, data, reason):
    if data is None:
        good = _bytes(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)), "PNG")
        data = good[: len(good) // 2]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ImageError) as err:
        read_image(path)
    assert name in str(err.value) and reason in str(err.value)


def test_oversized_refused_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (3000, 3000)).save(path)
    with pytest.raises(ImageError, match="over the limit"):
        read_image(path, max_pixels=1_000_000)


@pytest.mark.parametrize("width,height", [(1, 1), (3, 3), (64000, 1), (15, 500)])
def test_too_small_to_segment_is_refused(tmp_path, width, height):
    path = tmp_path / "tiny.png"
    Image.new("L", (width, height)).save(path)
    with pytest.raises(ImageError, match=f"{width}x{height} pixels is too small to segment"):
        read_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "nope.png")


def test_list_images_filters_and_sorts(tmp_path):
    for name in ("b.png", "a.tif", "notes.txt", "c.JPG"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.tif", "b.png", "c.JPG"]
    with pytest.raises(ImageError, match="not a directory"):
        list_images(tmp_path / "b.png")
