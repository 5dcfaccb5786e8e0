"""A task's tile in the backend: downloaded within the request's deadline, sized, and embedded
through the shared cache, one encoder pass at a time. Every failure is a :class:`TaskError` with
the HTTP status it deserves."""
from __future__ import annotations

import logging
import threading
import time

import numpy as np

from al_loop.data.images import decode_image
from al_loop.embeddings.cache import EmbeddingCache
from al_loop.errors import CacheEntryError, FetchError, ImageError, ImageTooLarge
from al_loop.models.encoders import Encoder, Sam2Encoder
from al_loop.models.sam2 import Sam2Features
from al_loop.studio.fetch import ImageFetcher, LabelStudioAccess
from al_loop.studio.label_config import LabelSchema
from al_loop.studio.tasks import TaskImage, task_image, task_image_url

from .settings import BackendSettings

log = logging.getLogger("ml_backend")
# What a batch hands on per task: its image, or why it has none.
Fetched = TaskImage | Exception


class TaskError(Exception):
    """A task the backend cannot answer; ``status`` is the HTTP status to report."""

    def __init__(self, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(message)


class Tiles:
    """Task images and their embeddings, shared by the request threads."""

    def __init__(self, settings: BackendSettings, cache: EmbeddingCache, fetcher: ImageFetcher):
        self.settings, self.cache, self.fetcher = settings, cache, fetcher
        # One encoder pass at a time: on a CPU, parallel passes share the same cores (no
        # throughput gained) and each holds its own attention buffers (GBs for vit_*).
        # Requests on cached tiles never wait for this.
        self._encode_slot = threading.Lock()

    def images(self, tasks: list, schema: LabelSchema, access: LabelStudioAccess,
               until: float | None = None) -> list[Fetched]:
        """Each task's image, downloaded side by side within the deadline, or the TaskError it got."""
        urls: list[str | Exception] = []
        for task in tasks:
            try:
                urls.append(task_image_url(task, schema))
            except FetchError as exc:
                urls.append(task_error(exc))
        wanted = [u for u in urls if isinstance(u, str)]
        payloads = iter(self.fetcher.fetch_all(wanted, access, until))
        return [self._sized(u, next(payloads)) if isinstance(u, str) else u for u in urls]

    def image(self, task: dict, schema: LabelSchema, access: LabelStudioAccess, until: float | None = None) -> TaskImage:
        """One task's image; raises the TaskError it got."""
        image = self.images([task], schema, access, until)[0]
        if isinstance(image, Exception):
            raise image
        return image

    def _sized(self, url: str, payload: bytes | FetchError) -> Fetched:
        if isinstance(payload, FetchError):
            return task_error(payload)
        try:
            return task_image(url, payload, self.settings.max_image_pixels, self.settings.min_image_side)
        except ImageError as exc:
            return task_error(exc)

    def embedding(self, image: TaskImage, encoder: Encoder, until: float | None = None) -> np.ndarray:
        """The tile's embedding from the shared cache; encoded once, ever, across threads and processes.
        Decoding happens inside the encoder slot, so one full-size image is in memory at a time."""
        try:
            return self.cache.get_or_compute(image.sha256, encoder.id,
                                             lambda: self._encode(image, until, encoder.id, encoder.encode))
        except (ImageError, CacheEntryError) as exc:
            raise task_error(exc) from None

    def prompt_features(self, image: TaskImage, encoder: Encoder, until: float | None = None):
        """What SAM's prompts need for a tile: SAM's embedding, or SAM 2.1's three maps, each
        cached; one encoder pass stores all three (a tile embedded by ``al-loop embed`` has its
        embedding only, and gets the other two on its first prompt)."""
        if not isinstance(encoder, Sam2Encoder):
            return self.embedding(image, encoder, until)
        try:
            arrays = self.cache.get_or_compute_many(image.sha256, encoder.map_ids,
                                                    lambda: self._encode(image, until, encoder.id, encoder.encode_maps))
        except (ImageError, CacheEntryError) as exc:
            raise task_error(exc) from None
        return Sam2Features(*(np.asarray(a, np.float32) for a in arrays))

    def _encode(self, image: TaskImage, until: float | None, encoder_id: str, encode):
        """``encode`` of the decoded tile, inside the encoder slot (one full-size image at a time)."""
        wait = -1 if until is None else max(0.0, until - time.monotonic())
        if not self._encode_slot.acquire(timeout=wait):
            raise TaskError(503, "the encoder is busy with other new tiles and the request's deadline passed; "
                                 "ask again (tiles encoded meanwhile are cached)")
        try:
            tile = decode_image(image.data, image.url, self.settings.max_image_pixels, self.settings.min_image_side)
            log.info("encoding new tile %s with %s", image.sha256[:12], encoder_id)
            return encode(tile)
        finally:
            self._encode_slot.release()


def task_error(exc: Exception) -> TaskError:
    """The TaskError an image or cache failure deserves: the fetch's own status, 413 over a
    size limit, 422 for an unusable image, 503 for a cache entry lost mid-request."""
    if isinstance(exc, FetchError):
        return TaskError(exc.status, exc.message)
    if isinstance(exc, ImageTooLarge):
        return TaskError(413, f"{exc} (AL_LOOP_MAX_IMAGE_PIXELS sets the limit)")
    if isinstance(exc, ImageError):
        return TaskError(422, str(exc))
    return TaskError(503, f"{exc}; ask again")
