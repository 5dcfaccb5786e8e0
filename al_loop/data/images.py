"""Reading tiles from disk: one place that knows about formats, bit depths and bad files.

HiRISE products arrive as 8-bit or 16-bit greyscale (often TIFF), previews as
JPEG/PNG, sometimes as RGB. Everything downstream sees one of two views of a tile:
``as_rgb8`` for SAM (its predictor wants HxWx3 uint8) and ``as_grey_float`` for the
classical filter bank. Bad files raise :class:`ImageError` naming the file and why.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from al_loop.errors import ImageError, ImageTooLarge

# A HiRISE tile is at most a few thousand pixels a side; anything far larger is
# either a whole product (cut it into tiles first) or a decompression bomb.
MAX_PIXELS = 64_000_000
# SAM scales the long side to 1024 px: a side under 16 px (a 1x1 or 3x3 file, a 64000x1
# strip) leaves nothing to segment, or a zero-pixel side after scaling.
MIN_SIDE = 16
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}


@dataclass(frozen=True)
class DecodedTile:
    """A decoded tile: its pixels as stored (2-D grey or HxWx3) and its content hash."""

    source: str
    pixels: np.ndarray
    sha256: str

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the original tile."""
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])


def list_images(directory: str | Path) -> list[Path]:
    """Image files directly in ``directory`` (or below it), sorted for reproducibility."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ImageError(directory, "not a directory")
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_image(
    data: bytes, source: str | Path = "<bytes>", max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE
) -> DecodedTile:
    """Decode image bytes into a :class:`DecodedTile`, refusing empty, corrupt, tiny and oversized files."""
    with _opened(data, source, max_pixels, min_side) as img:
        try:
            img.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(source, f"corrupt or truncated image ({exc})") from None
        pixels = _to_array(img, source)
    return DecodedTile(source=str(source), pixels=pixels, sha256=content_hash(data))


def image_size(
    data: bytes, source: str | Path = "<bytes>", max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE
) -> tuple[int, int]:
    """(height, width) from the header alone, with the same refusals as :func:`decode_image`
    short of a full decode: what a request needs when the embedding is already cached."""
    with _opened(data, source, max_pixels, min_side) as img:
        width, height = img.size
    return height, width


@contextmanager
def _opened(data: bytes, source: str | Path, max_pixels: int, min_side: int) -> Iterator[Image.Image]:
    if len(data) == 0:
        raise ImageError(source, "the file is empty")
    try:
        with warnings.catch_warnings():
            # Pillow warns (and past 2x its limit raises) on decompression bombs; we
            # apply our own limit before decoding so the message is ours.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(source, f"refused as a possible decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError(source, "not an image Pillow can read (PNG, JPEG or TIFF expected)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(source, f"corrupt or truncated image ({exc})") from None
    with img:
        width, height = img.size
        if width * height > max_pixels:
            raise ImageTooLarge(source, f"{width}x{height} pixels is over the limit of {max_pixels} pixels; cut it into tiles")
        if width == 0 or height == 0:
            raise ImageError(source, "the image has no pixels")
        if min(width, height) < min_side:
            raise ImageError(source, f"{width}x{height} pixels is too small to segment: each side needs {min_side} px or more")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield img


def read_bytes(source: str | Path) -> bytes:
    """A tile file's bytes: a local path, or a URL of any fsspec filesystem (``s3://...``),
    which is how workers of a cluster read tiles they do not hold on local disk."""
    text = str(source)
    try:
        if "://" in text and not text.startswith("file://"):
            import fsspec  # only for URLs: an optional dependency's filesystems (s3fs, ...)

            with fsspec.open(text, "rb") as fh:
                return fh.read()
        return Path(text.removeprefix("file://")).read_bytes()
    except FileNotFoundError:
        raise ImageError(source, "no such file") from None
    except IsADirectoryError:
        raise ImageError(source, "is a directory, not an image") from None
    except (OSError, ValueError, ImportError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ImageError(source, f"cannot be read ({reason})") from None


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> DecodedTile:
    """Read and decode one tile (a path or an fsspec URL)."""
    return decode_image(read_bytes(path), path, max_pixels)


def _to_array(img: Image.Image, source: str | Path) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img)
        fits_uint16 = arr.dtype.kind in "iu" and arr.min() >= 0 and arr.max() <= 65535
        return arr.astype(np.uint16) if fits_uint16 else arr.astype(np.float32)
    if mode in ("L", "P", "1", "LA"):
        return np.asarray(img.convert("L"))
    if mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(img.convert("RGB"))
    raise ImageError(source, f"unsupported pixel mode {mode!r}")


def as_grey_float(pixels: np.ndarray) -> np.ndarray:
    """Grey image scaled to [0, 1] as float32; 16-bit data keeps its full dynamic range."""
    arr = pixels
    if arr.ndim == 3:
        arr = arr[..., :3].astype(np.float32).mean(axis=2)
        return arr / 255.0
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    return _stretch(arr.astype(np.float32))


def as_rgb8(pixels: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 for SAM; 16-bit and float data are stretched, not truncated."""
    if pixels.ndim == 3:
        return np.ascontiguousarray(pixels[..., :3].astype(np.uint8, copy=False))
    grey = pixels if pixels.dtype == np.uint8 else np.round(_stretch(pixels.astype(np.float32)) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _stretch(arr: np.ndarray) -> np.ndarray:
    # HiRISE 16-bit DNs use a small part of the range; a robust percentile stretch
    # keeps shadows inside pits distinct instead of crushing them to black.
    lo, hi = np.percentile(arr, [0.5, 99.5])
    if hi <= lo:
        return np.zeros_like(arr, dtype=np.float32)
    return np.clip((arr - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
