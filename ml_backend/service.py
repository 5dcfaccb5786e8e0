"""What the backend does for one task, free of HTTP: image -> cached embedding -> mask -> regions.

Interactive prompts (a box, +/- points) go to SAM's prompt decoder over the tile's
cached embedding. Batch pre-annotation prompts SAM with the boxes a task already
holds, and otherwise paints the latest trained domain decoder's mask. Every failure
is a :class:`TaskError` with the HTTP status it deserves, so the web layer can answer
one bad task without losing the others.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from al_loop.data.images import decode_image
from al_loop.embeddings.cache import EmbeddingCache
from al_loop.embeddings.embed import TileRef
from al_loop.errors import (
    AlLoopError,
    CacheEntryError,
    FetchError,
    ImageError,
    ImageTooLarge,
    RegionError,
    SchemaError,
    UsageError,
)
from al_loop.models.decoder import DomainDecoder, predict_tile_classes
from al_loop.models.encoders import Encoder, LazyEncoder, Sam2Encoder, SamEncoder, encoder_of_model, resolve_engine
from al_loop.models.pits import THRESHOLD, min_object_pixels
from al_loop.models.sam import PromptSegmenter, load_sam
from al_loop.models.sam2 import Sam2Features
from al_loop.models.weights import has_weights
from al_loop.settings import SAM2_MODELS
from al_loop.studio.answers import prompt_boxes
from al_loop.studio.fetch import ImageFetcher, LabelStudioAccess
from al_loop.studio.label_config import Control, LabelSchema, parse_label_config
from al_loop.studio.regions import Box, mask_to_brush, probability_regions, prompt_from_context
from al_loop.studio.tasks import TaskImage, task_image, task_image_url
from al_loop.training.masks import ellipse_masks
from al_loop.training.store import DecoderStore, DecoderVersion

from .settings import BackendSettings

log = logging.getLogger("ml_backend")
BOX_PROXY = "box-ellipse"  # model_version of masks made from boxes without SAM (the inscribed ellipse)

# How Label Studio names a project: ``"<id>.<created timestamp>"`` towards backends, ``{"id": ...}``
# in webhooks, a plain id elsewhere.
ProjectKey = int | str | dict | None
# The decoder in use: its store entry, the loaded module, and the encoder its embeddings come from.
LoadedDecoder = tuple[DecoderVersion, DomainDecoder, Encoder]
# What a batch hands on per task: its image, or why it has none.
Fetched = TaskImage | Exception


class TaskError(Exception):
    """A task the backend cannot answer; ``status`` is the HTTP status to report."""

    def __init__(self, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(message)


@dataclass
class ProjectLink:
    """What ``/setup`` told us about a project: its config and how to reach Label Studio."""

    schema: LabelSchema | None = None
    access: LabelStudioAccess = field(default_factory=LabelStudioAccess)


def project_id(key: ProjectKey) -> int | None:
    """The project's id in any of the forms Label Studio sends (see :data:`ProjectKey`)."""
    if isinstance(key, dict):
        key = key.get("id")
    try:
        return int(str(key).split(".")[0])
    except (TypeError, ValueError):
        return None


class SegmentationService:
    """SAM, the embedding cache, the image fetcher and the decoder store of one backend, shared by
    its request threads; what each project told ``/setup``."""

    def __init__(self, settings: BackendSettings):
        self.settings = settings
        # Without SAM's weights a box becomes the ellipse inscribed in it (the box proxy), never a
        # mask from random weights; point prompts need SAM and are refused.
        self.sam = self.sam_id = self.sam_encoder = self.sam_engine = None
        if has_weights(settings.model, settings.checkpoint):
            # The engine as measured on this machine (or named): /health says which and why.
            self.sam_engine = resolve_engine(encoder_of_model(settings.model), settings.checkpoint, settings.precision,
                                             settings.runtime)
            self.sam, self.sam_id = load_sam(settings.model, settings.checkpoint)
            if settings.model in SAM2_MODELS:
                self.sam_encoder = Sam2Encoder(settings.model, settings.checkpoint, self.sam_engine.precision,
                                               self.sam_engine.runtime, model=self.sam)
            else:
                self.sam_encoder = SamEncoder(self.sam, self.sam_id, self.sam_engine.precision,
                                              self.sam_engine.runtime)
        else:
            log.warning("%s", self.proxy_note)
        self.cache = EmbeddingCache(settings.cache_location)
        self.cache.clean_stale()  # a writer killed mid-write leaves its temporary file behind
        self.fetcher = ImageFetcher(
            settings.local_root, LabelStudioAccess(settings.label_studio_url, settings.label_studio_api_key),
            deadline=settings.download_deadline, parallel=settings.parallel_downloads,
        )
        self.store = DecoderStore(settings.workspace)
        self._projects: dict[int, ProjectLink] = {}
        self._local = threading.local()  # one SamPredictor per thread: it holds per-image state
        # One encoder pass at a time: on a CPU, parallel passes share the same cores (no
        # throughput gained) and each holds its own attention buffers (GBs for vit_*).
        # Requests on cached tiles never wait for this.
        self._encode_slot = threading.Lock()
        self._decoder_lock = threading.Lock()
        self._decoder: LoadedDecoder | None = None
        self.decoder_problem: str | None = None  # why the workspace's decoder cannot be used; /health shows it

    # -- projects --------------------------------------------------------------------------

    def link(
        self, project_key: ProjectKey, schema_xml: str | None, hostname: str | None, token: str | None
    ) -> ProjectLink:
        """Remember a project's config and Label Studio address (``/setup``); raises SchemaError."""
        schema = parse_label_config(schema_xml) if schema_xml else None
        access = LabelStudioAccess(hostname, token) if hostname else self.fetcher.access
        link = ProjectLink(schema, access)
        pid = project_id(project_key)
        if pid is not None:
            self._projects[pid] = link
        return link

    def project(self, project_key: ProjectKey) -> ProjectLink:
        """What ``/setup`` told about the project, else the backend's own Label Studio settings."""
        return self._projects.get(project_id(project_key)) or ProjectLink(access=self.fetcher.access)

    def schema(self, project_key: ProjectKey, label_config: str | None) -> LabelSchema:
        """The config sent with the request, else the project's from ``/setup``; raises SchemaError."""
        if label_config:
            return parse_label_config(label_config)
        schema = self.project(project_key).schema
        if schema is None:
            raise SchemaError("no labelling config: send label_config or connect the backend to the project first")
        return schema

    # -- versions --------------------------------------------------------------------------

    @property
    def sam_version(self) -> str:
        """The model_version of prompt masks: SAM's weights, or the box proxy's name."""
        return self.sam_id or BOX_PROXY

    def engine_description(self) -> dict | None:
        """Which engine and precision SAM's image encoder runs on here, and why (None without SAM)."""
        if self.sam_engine is None:
            return None
        from al_loop.models.engines import cpu_summary

        return {"runtime": self.sam_engine.runtime, "precision": self.sam_engine.precision,
                "reason": self.sam_engine.reason, "cpu": cpu_summary()}

    @property
    def proxy_note(self) -> str | None:
        """What the backend says about its masks when it has no SAM (None when it has one)."""
        if self.sam is not None:
            return None
        model = self.settings.model
        return (f"no SAM weights for {model}: a box gives the ellipse inscribed in it (model_version {BOX_PROXY}) "
                f"and point prompts are refused; `al-loop weights download {model}` gives SAM's masks")

    def model_version(self) -> str:
        """What Label Studio records on predictions: the decoder's version once one is trained."""
        current = self.current_decoder()
        return current[0].version if current else self.sam_version

    # -- images and embeddings ----------------------------------------------------------------

    def task_images(
        self, tasks: list, schema: LabelSchema, access: LabelStudioAccess, until: float | None = None
    ) -> list[Fetched]:
        """Each task's image, downloaded side by side within the deadline, or the TaskError it got."""
        urls: list[str | Exception] = []
        for task in tasks:
            try:
                urls.append(task_image_url(task, schema))
            except FetchError as exc:
                urls.append(_task_error(exc))
        wanted = [u for u in urls if isinstance(u, str)]
        payloads = iter(self.fetcher.fetch_all(wanted, access, until))
        return [self._sized(u, next(payloads)) if isinstance(u, str) else u for u in urls]

    def task_image(self, task: dict, schema: LabelSchema, access: LabelStudioAccess, until: float | None = None) -> TaskImage:
        """One task's image; raises the TaskError it got."""
        image = self.task_images([task], schema, access, until)[0]
        if isinstance(image, Exception):
            raise image
        return image

    def _sized(self, url: str, payload: bytes | FetchError) -> Fetched:
        if isinstance(payload, FetchError):
            return _task_error(payload)
        settings = self.settings
        try:
            return task_image(url, payload, settings.max_image_pixels, settings.min_image_side)
        except ImageError as exc:
            return _task_error(exc)

    def embedding(self, image: TaskImage, encoder: Encoder, until: float | None = None) -> np.ndarray:
        """The tile's embedding from the shared cache; encoded once, ever, across threads and processes.
        Decoding happens inside the encoder slot, so one full-size image is in memory at a time."""
        try:
            return self.cache.get_or_compute(image.sha256, encoder.id,
                                             lambda: self._encode(image, until, encoder.id, encoder.encode))
        except (ImageError, CacheEntryError) as exc:
            raise _task_error(exc) from None

    def prompt_features(self, image: TaskImage, until: float | None = None):
        """What SAM's prompts need for a tile: SAM's embedding, or SAM 2.1's three maps, each
        cached; one encoder pass stores all three (a tile embedded by ``al-loop embed`` has its
        embedding only, and gets the other two on its first prompt)."""
        encoder = self.sam_encoder
        if not isinstance(encoder, Sam2Encoder):
            return self.embedding(image, encoder, until)
        try:
            arrays = self.cache.get_or_compute_many(image.sha256, encoder.map_ids,
                                                    lambda: self._encode(image, until, encoder.id, encoder.encode_maps))
        except (ImageError, CacheEntryError) as exc:
            raise _task_error(exc) from None
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

    @property
    def segmenter(self) -> PromptSegmenter:
        """This thread's prompt segmenter (the one box/points -> mask step)."""
        segmenter = getattr(self._local, "segmenter", None)
        if segmenter is None:
            segmenter = self._local.segmenter = PromptSegmenter(self.sam, self.sam_id, self.settings.runtime or None)
        return segmenter

    # -- predictions -------------------------------------------------------------------------

    def interactive(
        self, task: dict, context: dict, schema: LabelSchema, access: LabelStudioAccess, until: float | None = None
    ) -> dict:
        """One SAM mask for the box and/or points the expert just gave."""
        image = self.task_image(task, schema, access, until)
        try:
            prompt = prompt_from_context(context, image.size, self.settings.max_regions)
            control = schema.brush_for(prompt.label)
        except (RegionError, SchemaError) as exc:
            raise TaskError(422, str(exc)) from None
        points, labels = prompt.point_arrays()
        box = prompt.box.as_xyxy() if prompt.box else None
        if self.sam is None:
            if points is not None or box is None:
                raise TaskError(422, f"point prompts need SAM: {self.proxy_note}")
            mask, score = ellipse_masks(TileRef(image.url, image.sha256, image.size), np.array([box]))[0], 0.0
        else:
            answer = self.segmenter.segment(self.prompt_features(image, until), image.size, box=box, points=points,
                                            point_labels=labels)
            mask, score = answer.mask, answer.score
        regions = [mask_to_brush(mask, control, prompt.label, score)] if mask.any() else []
        return {"result": regions, "score": score, "model_version": self.sam_version}

    def predict_batch(
        self, tasks: list, schema: LabelSchema, access: LabelStudioAccess, until: float | None = None
    ) -> tuple[list[list[dict]], list[dict]]:
        """Pre-annotations per task (``[]`` for a failed one), and per-task errors ``{"task",
        "status", "error"}``: one bad task is reported and costs the others nothing."""
        results, errors = [], []
        for task, image in zip(tasks, self.task_images(tasks, schema, access, until), strict=False):
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
        if self.sam is None:
            masks, scores = ellipse_masks(TileRef(image.url, image.sha256, image.size), xyxy), [0.0] * len(boxes)
        else:
            answers = self.segmenter.box_masks(self.prompt_features(image, until), image.size, xyxy)
            masks, scores = [a.mask for a in answers], [a.score for a in answers]
        regions = [mask_to_brush(m, c, b.label, score) for m, score, c, b in zip(masks, scores, controls, boxes, strict=False) if m.any()]
        return {"result": regions, "score": float(np.mean(scores)), "model_version": self.sam_version}

    def _decoder_predictions(self, image: TaskImage, schema: LabelSchema, until: float | None) -> list[dict]:
        """The latest trained decoder's pits as brush regions; none before a decoder exists."""
        current = self.current_decoder()
        if current is None:
            return []
        version, decoder, encoder = current
        probs = predict_tile_classes(decoder, self.embedding(image, encoder, until), image.size)
        min_pixels = min_object_pixels(image.size, encoder.grid)
        try:
            regions, confidence = probability_regions(probs, schema.mask_control, min_pixels, THRESHOLD)
        except RegionError as exc:  # a decoder of other types than this project's labels
            raise TaskError(409, str(exc)) from None
        return [{"result": regions, "score": confidence, "model_version": version.version}]

    # -- decoders ----------------------------------------------------------------------------

    def current_decoder(self) -> LoadedDecoder | None:
        """The latest decoder of the workspace, reloaded when al-loop or training saves a new one.
        None before the first, or when it is damaged: then :attr:`decoder_problem` says why, and
        SAM's box prompts keep working."""
        try:
            entry = self.store.latest()
            if entry is None:
                self.decoder_problem = None
                return None
            with self._decoder_lock:
                if self._decoder is None or self._decoder[0] != entry:
                    encoder = self._encoder_for(entry)
                    decoder, _ = self.store.load(entry)
                    log.info("using decoder %s (encoder %s)", entry.version, entry.encoder_id)
                    self._decoder = (entry, decoder, encoder)
                loaded = self._decoder
        except AlLoopError as exc:  # a damaged pointer or file, an encoder this backend cannot build
            if str(exc) != self.decoder_problem:
                log.warning("decoder unusable: %s", exc)
            self.decoder_problem = str(exc)
            return None
        self.decoder_problem = None
        return loaded

    def _encoder_for(self, entry: DecoderVersion) -> Encoder:
        if self.sam_encoder is not None and entry.encoder_id == self.sam_encoder.id:
            return self.sam_encoder
        encoder = LazyEncoder(entry.encoder, entry.checkpoint, entry.precision, self.settings.runtime)
        if encoder.id != entry.encoder_id:
            raise UsageError(f"decoder {entry.version} was trained on {entry.encoder_id}; this backend builds {encoder.id}")
        return encoder

    def decoder_training_encoder(self) -> Encoder:
        """The encoder START_TRAINING trains on: the workspace's (the backend's SAM when it is the same)."""
        settings = self.settings
        if self.sam_encoder is not None and settings.encoder == encoder_of_model(settings.model):
            return self.sam_encoder
        return LazyEncoder(settings.encoder, settings.checkpoint, settings.precision, settings.runtime)


def _task_id(task: object) -> object:
    ident = task.get("id") if isinstance(task, dict) else None
    return ident if isinstance(ident, (int, str)) or ident is None else repr(ident)[:40]


def _task_error(exc: Exception) -> TaskError:
    """The TaskError an image or cache failure deserves: the fetch's own status, 413 over a
    size limit, 422 for an unusable image, 503 for a cache entry lost mid-request."""
    if isinstance(exc, FetchError):
        return TaskError(exc.status, exc.message)
    if isinstance(exc, ImageTooLarge):
        return TaskError(413, f"{exc} (AL_LOOP_MAX_IMAGE_PIXELS sets the limit)")
    if isinstance(exc, ImageError):
        return TaskError(422, str(exc))
    return TaskError(503, f"{exc}; ask again")
