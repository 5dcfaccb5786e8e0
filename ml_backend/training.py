"""START_TRAINING in the background: the webhook answers at once, one training runs at a time.

A request that arrives while a training runs is remembered (not queued N times): when
the running one ends, one more starts on the annotations as they are then. Training goes
through the loop's own path (:func:`al_loop.studio.learning.learn`) with the task roles of
the workspace bound to the project: its validation tasks are never trained on, they score
the decoder, and only a scored decoder becomes the one the prediction path uses. A project
no workspace is bound to is refused: without a validation set nobody could tell whether a
new decoder is better than none.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from label_studio_sdk import LabelStudio

from al_loop.data.images import decode_image
from al_loop.data.radiometry import ValueSums
from al_loop.embeddings.embed import TileRef
from al_loop.errors import ImageError, LabelStudioError
from al_loop.loop.workspace import Workspace
from al_loop.models.encoders import Encoder
from al_loop.studio.answers import answers_to_masks, latest_answer
from al_loop.studio.client import annotated_tasks, connect, label_config
from al_loop.studio.fetch import LabelStudioAccess
from al_loop.studio.label_config import LabelSchema, parse_label_config
from al_loop.studio.learning import Labelled, learn, save_learned, split_roles
from al_loop.studio.tasks import TaskImage
from al_loop.training.masks import BoxMasker, SamBoxMasks, ellipse_masks

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
        project id, no way to reach Label Studio, a project Label Studio does not have, or one
        no workspace of this backend is bound to."""
        pid = project_id(project_key)
        if pid is None:
            raise TaskError(400, f"the training request names no project id (got {str(project_key)[:80]!r})")
        access = self.service.projects.project(project_key).access
        try:
            label_config(_connect(access), pid, access.url)
        except LabelStudioError as exc:
            status = {None: 503, 404: 404}.get(exc.status, 502)
            raise TaskError(status, f"cannot train project {pid}: {exc}") from None
        self.roles(pid)

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
        if self.service.settings.annotators > 1:
            # A team's tasks train on the experts' consensus, which next-batch computes (and the
            # Review tab it keeps); the newest answer alone would be one expert's, picked at random.
            log.info("project %s is labelled by a team (annotators %d): `al-loop next-batch` trains on the "
                     "consensus; START_TRAINING leaves it alone", project_id(project_key),
                     self.service.settings.annotators)
            return None, 0
        link, pid = self.service.projects.project(project_key), project_id(project_key)
        roles = self.roles(pid)
        client = _connect(link.access)
        schema = link.schema or parse_label_config(label_config(client, pid, link.access.url))
        labelled, encoder = self._labelled(annotated_tasks(client, pid, link.access.url), schema, link.access)
        if not split_roles(list(labelled.masks), roles)[0]:
            log.info("no usable pool annotations yet in project %s: nothing to train", pid)
            return None, 0
        settings = self.service.settings
        learned = learn(labelled, roles, schema, self.service.cache, encoder.id, epochs=settings.epochs)
        version = self._next_version()
        save_learned(self.service.store, learned, version, settings.encoder, encoder.id, checkpoint=settings.checkpoint,
                     precision=encoder.precision, make_latest=True, epochs=settings.epochs,
                     type_names=list(schema.type_names), runtime=encoder.runtime)
        if learned.evaluation is None:
            log.warning("decoder %s is kept but not used: no validation task of project %s is labelled to score it",
                        version, pid)
        log.info("trained decoder %s on %d tiles, validated on %d", version, len(learned.trained_on),
                 len(learned.validated_on))
        return version, len(learned.trained_on)

    def roles(self, pid: int | None) -> dict[int, str]:
        """Task id -> role (validation or pool) from the workspace bound to project ``pid``; a
        TaskError 409 when this backend serves no workspace of that project."""
        workspace = Workspace(self.service.settings.workspace)
        if not workspace.exists() or workspace.config().project != pid:
            raise TaskError(409, f"this backend trains only the project of its al-loop workspace "
                            f"({self.service.settings.workspace}): `al-loop init --project {pid}` binds one, so "
                            "that validation tasks are set aside and never trained on")
        return {row["task_id"]: row["role"] for row in workspace.tasks()}

    def _next_version(self) -> str:
        # Own names, so the backend's versions never take the name of an al-loop round.
        count = sum(1 for v in self.service.store.versions() if v.startswith("backend-"))
        return f"backend-{count + 1}"

    def _labelled(self, tasks: list[dict], schema: LabelSchema, access: LabelStudioAccess) -> tuple[Labelled, Encoder]:
        """Tile and mask of every answered task, with the encoder of the embeddings; a task that
        cannot be used is logged and skipped, so one bad tile does not stop the training."""
        encoder = self.service.decoders.training_encoder()
        labelled = Labelled({}, {}, {})
        for task in tasks:
            answer = latest_answer(task)
            if answer is None:
                continue
            try:
                image = self.service.tiles.image(task, schema, access)
                self.service.tiles.embedding(image, encoder)
                tile = TileRef(image.url, image.sha256, image.size)
                masks, problems = answers_to_masks({answer.task_id: answer}, {answer.task_id: tile}, schema,
                                                   self._masker(image))
            except (TaskError, ImageError, ValueError) as exc:
                problems, masks = [f"task {task.get('id')}: {exc}"], {}
            for problem in problems:
                log.warning("training skips %s", problem)
            if masks:
                labelled.answers[answer.task_id], labelled.tiles[answer.task_id] = answer, tile
                labelled.masks.update(masks)
                labelled.values[answer.task_id] = ValueSums.of(decode_image(image.data, image.url).pixels)
        return labelled, encoder

    def _masker(self, image: TaskImage) -> BoxMasker:
        """Bare boxes -> SAM masks on this image, through the backend's own SAM and encoder slot;
        the box proxy (inscribed ellipses) where the backend has no SAM weights."""
        service = self.service
        if service.prompts.sam is None:
            return ellipse_masks
        return SamBoxMasks(lambda: service.prompts.segmenter,
                           lambda tile: service.tiles.prompt_features(image, service.sam_encoder))


def _connect(access: LabelStudioAccess) -> LabelStudio:
    """A Label Studio client; training reads the annotations there, so it needs address and token."""
    if not access.url or not access.token:
        raise LabelStudioError(
            "cannot train: the backend does not know Label Studio's address and token "
            "(connect it to the project, or set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY)"
        )
    return connect(access.url, access.token)
