"""What the backend does for one task, free of HTTP: image -> cached embedding -> mask -> regions.

Interactive prompts (a box, +/- points) go to SAM's prompt decoder over the tile's
cached embedding. Batch pre-annotation prompts SAM with the boxes a task already
holds, and otherwise paints the latest trained domain decoder's mask. Every failure
is a :class:`TaskError` with the HTTP status it deserves, so the web layer can answer
one bad task without losing the others.

The service composes its collaborators, one concern each: :class:`~ml_backend.projects.Projects`
(what ``/setup`` said), :class:`~ml_backend.prompts.SamPrompts` (SAM, its engine and version),
:class:`~ml_backend.tiles.Tiles` (images and embeddings) and :class:`~ml_backend.decoders.Decoders`
(the decoder in use); what is left here is turning prompts and decoders into predictions.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from al_loop.embeddings.cache import EmbeddingCache
from al_loop.embeddings.embed import TileRef
from al_loop.errors import RegionError, SchemaError
from al_loop.models.decoder import predict_tile_classes
from al_loop.models.pits import THRESHOLD, min_object_pixels
from al_loop.studio.answers import prompt_boxes
from al_loop.studio.fetch import ImageFetcher, LabelStudioAccess
from al_loop.studio.label_config import Control, LabelSchema
from al_loop.studio.regions import Box, mask_to_brush, probability_regions, prompt_from_context
from al_loop.studio.tasks import TaskImage
from al_loop.training.masks import ellipse_masks
from al_loop.training.store import DecoderStore

from .decoders import Decoders, LoadedDecoder
from .projects import ProjectKey, ProjectLink, Projects, project_id
from .prompts import BOX_PROXY, SamPrompts
from .settings import BackendSettings
from .tiles import Fetched, TaskError, Tiles

__all__ = ["BOX_PROXY", "LoadedDecoder", "ProjectKey", "ProjectLink", "SegmentationService", "TaskError",
           "project_id"]
log = logging.getLogger("ml_backend")


class SegmentationService:
    """SAM, the embedding cache, the image fetcher and the decoder store of one backend, shared by
    its request threads; what each project told ``/setup``."""

    def __init__(self, settings: BackendSettings):
        self.settings = settings
        self.prompts = SamPrompts(settings)
        self.sam_encoder = self.prompts.encoder  # None without SAM weights
        self.cache = EmbeddingCache(settings.cache_location)
        self.cache.clean_stale()  # a writer killed mid-write leaves its temporary file behind
        fetcher = ImageFetcher(
            settings.local_root, LabelStudioAccess(settings.label_studio_url, settings.label_studio_api_key),
            deadline=settings.download_deadline, parallel=settings.parallel_downloads,
        )
        self.fetcher = fetcher
        self.tiles = Tiles(settings, self.cache, fetcher)
        self.projects = Projects(fetcher.access)
        self.store = DecoderStore(settings.workspace)
        self.decoders = Decoders(settings, self.store, self.prompts)

    def model_version(self) -> str:
        """What Label Studio records on predictions: the decoder's version once one is trained."""
        current = self.decoders.current()
        return current[0].version if current else self.prompts.version

    def interactive(
        self, task: dict, context: dict, schema: LabelSchema, access: LabelStudioAccess, until: float | None = None
    ) -> dict:
        """One SAM mask for the box and/or points the expert just gave."""
        image = self.tiles.image(task, schema, access, until)
        try:
            prompt = prompt_from_context(context, image.size, self.settings.max_regions)
            control = schema.brush_for(prompt.label)
        except (RegionError, SchemaError) as exc:
            raise TaskError(422, str(exc)) from None
        points, labels = prompt.point_arrays()
        box = prompt.box.as_xyxy() if prompt.box else None
        if self.prompts.sam is None:
            if points is not None or box is None:
                raise TaskError(422, f"point prompts need SAM: {self.prompts.proxy_note}")
            mask, score = ellipse_masks(TileRef(image.url, image.sha256, image.size), np.array([box]))[0], 0.0
        else:
            features = self.tiles.prompt_features(image, self.sam_encoder, until)
            answer = self.prompts.segmenter.segment(features, image.size, box=box, points=points, point_labels=labels)
            mask, score = answer.mask, answer.score
        regions = [mask_to_brush(mask, control, prompt.label, score)] if mask.any() else []
        return {"result": regions, "score": score, "model_version": self.prompts.version}

    def predict_batch(
        self, tasks: list, schema: LabelSchema, access: LabelStudioAccess, until: float | None = None
    ) -> tuple[list[list[dict]], list[dict]]:
        """Pre-annotations per task (``[]`` for a failed one), and per-task errors ``{"task",
        "status", "error"}``: one bad task is reported and costs the others nothing."""
        results, errors = [], []
        for task, image in zip(tasks, self.tiles.images(tasks, schema, access, until), strict=False):
            try:
                results.append(self._preannotate_one(task, image, schema, until))
            except TaskError as exc:
                errors.append({"task": _task_id(task), "status": exc.status, "error": exc.message})
                results.append([])
        return results, errors

    def _preannotate_one(self, task: object, image: Fetched, schema: LabelSchema, until: float | None) -> list[dict]:
        if isinstance(image, Exception):
            raise image
        if until is not None and time.monotonic() > until:
            raise TaskError(504, "the request's deadline passed before this task was reached; ask again for it "
                                 "(AL_LOOP_REQUEST_DEADLINE sets the limit)")
        try:
            return self.preannotate(task, image, schema, until)
        except TaskError:
            raise
        except Exception as exc:  # a bug must cost one task, not the batch; the log has the traceback
            log.exception("task %s failed unexpectedly", _task_id(task))
            raise TaskError(500, f"internal error on this task ({type(exc).__name__}); see the backend's log") from None

    def preannotate(self, task: dict, image: TaskImage, schema: LabelSchema, until: float | None = None) -> list[dict]:
        """Predictions for a task without a prompt: SAM masks for its boxes, else the decoder's mask."""
        try:
            boxes = prompt_boxes(task, image.size, self.settings.max_regions)
            controls = [schema.brush_for(b.label) for b in boxes]
        except (RegionError, SchemaError) as exc:
            raise TaskError(422, str(exc)) from None
        if boxes:
            return [self._box_prediction(image, boxes, controls, until)]
        return self._decoder_predictions(image, schema, until)

    def _box_prediction(self, image: TaskImage, boxes: list[Box], controls: list[Control], until: float | None) -> dict:
        """One brush region per box the task holds: SAM prompted with the box, or the box proxy."""
        xyxy = np.array([b.as_xyxy() for b in boxes], dtype=np.float32)
        if self.prompts.sam is None:
            masks, scores = ellipse_masks(TileRef(image.url, image.sha256, image.size), xyxy), [0.0] * len(boxes)
        else:
            features = self.tiles.prompt_features(image, self.sam_encoder, until)
            answers = self.prompts.segmenter.box_masks(features, image.size, xyxy)
            masks, scores = [a.mask for a in answers], [a.score for a in answers]
        regions = [mask_to_brush(m, c, b.label, score)
                   for m, score, c, b in zip(masks, scores, controls, boxes, strict=False) if m.any()]
        return {"result": regions, "score": float(np.mean(scores)), "model_version": self.prompts.version}

    def _decoder_predictions(self, image: TaskImage, schema: LabelSchema, until: float | None) -> list[dict]:
        """The latest trained decoder's pits as brush regions; none before a decoder exists."""
        current = self.decoders.current()
        if current is None:
            return []
        version, decoder, encoder = current
        probs = predict_tile_classes(decoder, self.tiles.embedding(image, encoder, until), image.size)
        min_pixels = min_object_pixels(image.size, encoder.grid)
        try:
            regions, confidence = probability_regions(probs, schema.mask_control, min_pixels, THRESHOLD)
        except RegionError as exc:  # a decoder of other types than this project's labels
            raise TaskError(409, str(exc)) from None
        return [{"result": regions, "score": confidence, "model_version": version.version}]


def _task_id(task: object) -> object:
    ident = task.get("id") if isinstance(task, dict) else None
    return ident if isinstance(ident, (int, str)) or ident is None else repr(ident)[:40]
