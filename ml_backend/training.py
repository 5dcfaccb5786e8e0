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

from al_loop.studio.answers import answer_mask, latest_answer
from al_loop.models.decoder import TrainingSet, train_decoder
from al_loop.data.images import ImageError
from al_loop.studio.label_config import parse_label_config
from al_loop.studio.client import LabelStudioError, annotated_tasks, connect, label_config

from .service import SegmentationService, TaskError, project_id

log = logging.getLogger("ml_backend.training")


@dataclass
class TrainingState:
    running: bool = False
    pending: bool = False
    runs: int = 0
    failures: int = 0
    last_version: str | None = None
    last_error: str | None = None
    last_seconds: float | None = None
    last_tiles: int = 0


class Trainer:
    def __init__(self, service: SegmentationService):
        self.service = service
        self.state = TrainingState()
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()

    def request(self, project_key) -> str:
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

    def _loop(self, project_key) -> None:
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

    def train_once(self, project_key) -> tuple[str | None, int]:
        service = self.service
        link = service.project(project_key)
        access = link.access
        pid = project_id(project_key)
        if not access.url or not access.token:
            raise LabelStudioError(
                "cannot train: the backend does not know Label Studio's address and token "
                "(connect it to the project, or set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY)"
            )
        client = connect(access.url, access.token)
        schema = link.schema or parse_label_config(label_config(client, pid, access.url))
        tasks = annotated_tasks(client, pid, access.url)
        encoder = service.decoder_training_encoder()
        data = TrainingSet()
        for task in tasks:
            answer = latest_answer(task)
            if answer is None:
                continue
            try:
                image = service.task_image(task, schema, access)
                embedding = service.embedding(image, encoder)

                def box_masks(boxes, image=image):
                    sam_embedding = service.embedding(image, service.sam_encoder)
                    return [b.clip(service.segmenter.segment(sam_embedding, image.size, box=b.as_xyxy()).mask) for b in boxes]

                mask = answer_mask(answer, image.size, schema, box_masks)
            except (TaskError, ImageError, ValueError) as exc:
                log.warning("training skips task %s: %s", task.get("id"), exc)
                continue
            data.add(embedding, mask)
        if len(data) == 0:
            log.info("no usable annotations yet in project %s: nothing to train", pid)
            return None, 0
        decoder = train_decoder(data, epochs=service.settings.epochs, seed=0, progress=False)
        previous = [v for v in service.store.versions() if v.startswith("backend-")]
        version = f"backend-{len(previous) + 1}"
        service.store.save(
            decoder, version, service.settings.decoder_encoder, encoder.id,
            checkpoint=service.settings.checkpoint, precision=service.settings.precision, tiles=len(data),
        )
        log.info("trained decoder %s on %d tiles", version, len(data))
        return version, len(data)
