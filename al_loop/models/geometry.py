"""The one owner of tile geometry: tile <-> SAM's square frame <-> the embedding grid.

Every encoder follows SAM's preprocessing so the domain decoder works on any of them:
the tile is scaled so its longest side fills a square frame and placed top-left; the
G x G embedding grid covers that frame, and the decoder paints an 8G x 8G map over it.
``valid_shape`` says which part of a map over the frame belongs to the tile;
``frame_to_tile`` and ``frame_target`` carry maps between the two.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

# Bumped when an encoder's preprocessing changes, so old cache entries stop matching.
PREPROCESSING_VERSION = 1


def scaled_shape(height: int, width: int, side: int) -> tuple[int, int]:
    """Size of a (height, width) image scaled so its longest side is ``side`` (SAM's own rounding)."""
    # Imported here: segment_anything brings torch and torchvision (seconds), and commands that only
    # read the cache's layout (init, status, config) import this module.
    from segment_anything.utils.transforms import ResizeLongestSide

    return ResizeLongestSide.get_preprocess_shape(height, width, side)


def valid_shape(original_size: tuple[int, int], side: int) -> tuple[int, int]:
    """The part of a ``side`` x ``side`` map over the frame that the tile occupies (top-left)."""
    h, w = scaled_shape(original_size[0], original_size[1], side)
    return max(1, h), max(1, w)


def valid_region(frame: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """The tile's part of a frame map (no resize): what scoring looks at."""
    h, w = valid_shape(original_size, frame.shape[-1])
    return frame[..., :h, :w]


def frame_to_tile(frame: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """Crop the tile's part of a frame map and resize it to the tile's (H, W), bilinear."""
    h, w = valid_shape(original_size, frame.shape[-1])
    crop = np.ascontiguousarray(frame[:h, :w], dtype=np.float32)
    return np.asarray(Image.fromarray(crop).resize((original_size[1], original_size[0]), Image.BILINEAR))


def frame_target(mask: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """A tile-sized mask scaled into the top-left of a ``side`` x ``side`` frame (area-averaged),
    and the frame's pixels that belong to the tile."""
    h, w = valid_shape(mask.shape, side)
    scaled = Image.fromarray(mask.astype(np.float32)).resize((w, h), Image.BOX)
    target = np.zeros((side, side), dtype=np.float32)
    target[:h, :w] = np.clip(np.asarray(scaled), 0.0, 1.0)
    valid = np.zeros((side, side), dtype=bool)
    valid[:h, :w] = True
    return target, valid


def frame_types(labels: np.ndarray, side: int, types: int) -> np.ndarray:
    """The pit type that covers most of each pixel of a ``side`` x ``side`` frame (0 where
    none does), for a tile-sized (H, W) map of type numbers (0 background, 1..K types)."""
    labels = np.asarray(labels)
    if types == 1:  # one type: wherever there is pit, it is type 1
        return (frame_target(labels > 0, side)[0] > 0).astype(np.uint8)
    shares = np.stack([frame_target(labels == k, side)[0] for k in range(1, types + 1)])
    return np.where(shares.max(axis=0) > 0, shares.argmax(axis=0) + 1, 0).astype(np.uint8)


def clip_to_box(mask: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The part of a (H, W) mask inside the box ``(x0, y0, x1, y1)`` (pixels the box touches count)."""
    x0, y0, x1, y1 = box
    inside = np.zeros_like(mask, dtype=bool)
    inside[max(0, int(y0)) : int(math.ceil(y1)), max(0, int(x0)) : int(math.ceil(x1))] = True
    return mask & inside
