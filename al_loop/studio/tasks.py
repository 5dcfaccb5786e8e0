"""A Label Studio task's image: its bytes, content hash and size, found through the config."""
from __future__ import annotations

from dataclasses import dataclass

from al_loop.data.images import content_hash, image_size
from al_loop.errors import FetchError
from al_loop.studio.fetch import ImageFetcher, LabelStudioAccess
from al_loop.studio.label_config import LabelSchema


@dataclass(frozen=True)
class TaskImage:
    url: str
    data: bytes
    sha256: str  # the embedding cache key
    size: tuple[int, int]  # (height, width)


def task_image_url(task: dict, schema: LabelSchema) -> str:
    data = task.get("data") if isinstance(task, dict) else None
    if not isinstance(data, dict):
        raise FetchError(400, "task has no 'data' object")
    url = data.get(schema.image_key)
    if not isinstance(url, str) or not url:
        raise FetchError(400, f"task data has no image under {schema.image_key!r}")
    return url


def load_task_image(
    task: dict, schema: LabelSchema, fetcher: ImageFetcher, access: LabelStudioAccess | None = None
) -> TaskImage:
    """Fetch a task's image and read its size from the header (no full decode: the
    embedding is usually cached). Raises FetchError or ImageError."""
    url = task_image_url(task, schema)
    payload = fetcher.fetch(url, access)
    return TaskImage(url, payload, content_hash(payload), image_size(payload, url))
