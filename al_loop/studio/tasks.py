"""A Label Studio task's image: its bytes, content hash and size, found through the config."""
from __future__ import annotations

from dataclasses import dataclass

from al_loop.data.images import MAX_PIXELS, MIN_SIDE, content_hash, image_size
from al_loop.errors import FetchError
from al_loop.studio.label_config import LabelSchema


@dataclass(frozen=True)
class TaskImage:
    url: str
    data: bytes
    sha256: str  # the embedding cache key
    size: tuple[int, int]  # (height, width)


def task_image_url(task: dict, schema: LabelSchema) -> str:
    """The task's image URL; a FetchError (400) when the task does not hold one where the config says."""
    if not isinstance(task, dict):
        raise FetchError(400, f"a task must be an object, not {type(task).__name__}")
    data = task.get("data")
    if not isinstance(data, dict):
        raise FetchError(400, "task has no 'data' object")
    url = data.get(schema.image_key)
    if not isinstance(url, str) or not url:
        raise FetchError(400, f"task data has no image URL under {schema.image_key!r}")
    return url


def task_image(url: str, payload: bytes, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> TaskImage:
    """A fetched image with its size read from the header (no full decode: the embedding is
    usually cached), refused past the pixel limits; raises ImageError."""
    return TaskImage(url, payload, content_hash(payload), image_size(payload, url, max_pixels, min_side))
