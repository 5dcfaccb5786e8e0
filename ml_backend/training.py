"""START_TRAINING in the background: the webhook answers at once, one training runs at a time.

A request that arrives while a training runs is remembered (not queued N times): when
the running one ends, one more starts on the annotations as they are then. The new
decoder is saved to the workspace's decoder store, where the prediction path picks
it up by version.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Sequence

import numpy as np
from label_studio_sdk import LabelStudio

from al_loop.errors import ImageError, LabelStudioError
from al_loop.models.encoders import Encoder
from al_loop.studio.answers import Answer, answer_mask, latest_answer
from al_loop.studio.client import annotated_tasks, connect, label_config
from al_loop.studio.fetch import LabelStudioAccess
from al_loop.studio.label_config import LabelSchema, parse_label_config
from al_loop.studio.regions import Box
from al_loop.studio.tasks import TaskImage
from al_loop.training.train import TrainingSet, train_decoder

from .service import ProjectKey, SegmentationService, TaskError, project_id

log = logging.getLogger("ml_backend.training")


@dataclass
class TrainingState:
    """The trainer's runs so far; ``/health`` and ``/metrics`` report from it."""

    running: bool = False
    pending: bool = False
    runs: int = 0
    failures: int = 0
    last_version: str | None = None
    last_error: str | None = None
    last_seconds: float | None = None
    last_tiles: int = 0


class Trainer:
    """Trains the domain decoder in a background thread, one run at a time."""

    def __init__(self, service: SegmentationService):
        self.service = service
        self.state = TrainingState()
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()

    def check(self, project_key: ProjectKey) -> None:
        """Refuse, with the status it deserves, a training request that cannot succeed: no
        project id, no way to reach Label Studio, or a project Label Studio does not have."""
        pid = project_id(project_key)
        if pid is None:
            raise TaskError(400, f"the training request names no project id (got {str(project_key)[:80]!r})")
        access = self.service.project(project_key).access
        try:
            label_config(_connect(access), pid, access.url)
        except LabelStudioError as exc:
            status = {None: 503, 404: 404}.get(exc.status, 502)
            raise TaskError(status, f"cannot train project {pid}: {exc}") from None

    def request(self, project_key: ProjectKey) -> str:
        """Start training for a project, or remember to train again after the current run."""
        with self._lock:
            if self.state.running:
                self.state.pending = True
                return "queued"
            self.state.running = True
            self._idle.clear()
        threading.Thread(target=self._loop, args=(project_key,), name="decoder-training", daemon=True).start()
        return "started"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no training runs (for tests and clean shutdown)."""
        return self._idle.wait(timeout)

    def _loop(self, project_key: ProjectKey) -> None:
        while True:
            started = time.perf_counter()
            try:
                version, tiles = self.train_once(project_key)
                with self._lock:
                    self.state.runs += 1
                    self.state.last_version, self.state.last_tiles, self.state.last_error = version, tiles, None
            except Exception as exc:  # a failed training must not take the server down
                log.error("training failed: %s", exc)
                with self._lock:
                    self.state.failures += 1
                    self.state.last_error = str(exc)
            with self._lock:
                self.state.last_seconds = time.perf_counter() - started
                if not self.state.pending:
                    self.state.running = False
                    self._idle.set()
                    return
                self.state.pending = False

    def train_once(self, project_key: ProjectKey) -> tuple[str | None, int]:
        """Train on the project's annotations as they are now; the new version, and its tile count."""
        link, pid = self.service.project(project_key), project_id(project_key)
        client = _connect(link.access)
        schema = link.schema or parse_label_config(label_config(client, pid, link.access.url))
        data, encoder_id = self._training_set(annotated_tasks(client, pid, link.access.url), schema, link.access)
        if len(data) == 0:
            log.info("no usable annotations yet in project %s: nothing to train", pid)
            return None, 0
        settings = self.service.settings
        decoder = train_decoder(data, epochs=settings.epochs, seed=0, progress=False)
        version = self._next_version()
        self.service.store.save(
            decoder, version, settings.decoder_encoder, encoder_id,
            checkpoint=settings.checkpoint, precision=settings.precision, tiles=len(data),
        )
        log.info("trained decoder %s on %d tiles", version, len(data))
        return version, len(data)

    def _next_version(self) -> str:
        # Own names, so the backend's versions never take the name of an al-loop round.
        count = sum(1 for v in self.service.store.versions() if v.startswith("backend-"))
        return f"backend-{count + 1}"

    def _training_set(
        self, tasks: list[dict], schema: LabelSchema, access: LabelStudioAccess
    ) -> tuple[TrainingSet, str]:
        """Embedding and mask of every answered task, and the encoder id of the embeddings; a task
        that cannot be used is logged and skipped, so one bad tile does not stop the training."""
        encoder = self.service.decoder_training_encoder()
        data = TrainingSet(types=len(schema.type_names))
        for task in tasks:
            answer = latest_answer(task)
            if answer is None:
                continue
            try:
                embedding, mask = self._example(task, answer, schema, access, encoder)
            except (TaskError, ImageError, ValueError) as exc:
                log.warning("training skips task %s: %s", task.get("id"), exc)
                continue
            data.add(embedding, mask)
        return data, encoder.id

    def _example(
        self, task: dict, answer: Answer, schema: LabelSchema, access: LabelStudioAccess, encoder: Encoder
    ) -> tuple[np.ndarray, np.ndarray]:
        """A task's embedding under ``encoder`` and its mask; boxes drawn without a mask get SAM's."""
        image = self.service.task_image(task, schema, access)
        embedding = self.service.embedding(image, encoder)
        mask = answer_mask(answer, image.size, schema, partial(self._box_masks, image))
        return embedding, mask

    def _box_masks(self, image: TaskImage, boxes: Sequence[Box]) -> list[np.ndarray]:
        """SAM masks for boxes, through the one box -> mask step (clipped to each box)."""
        service = self.service
        embedding = service.embedding(image, service.sam_encoder)
        return [m.mask for m in service.segmenter.box_masks(embedding, image.size, [b.as_xyxy() for b in boxes])]


def _connect(access: LabelStudioAccess) -> LabelStudio:
    """A Label Studio client; training reads the annotations there, so it needs address and token."""
    if not access.url or not access.token:
        raise LabelStudioError(
            "cannot train: the backend does not know Label Studio's address and token "
            "(connect it to the project, or set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY)"
        )
    return connect(access.url, access.token)
