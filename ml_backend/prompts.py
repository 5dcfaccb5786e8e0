"""SAM in the backend: its weights and engine, the version its masks carry, and one prompt
segmenter per request thread. Without weights a box becomes the ellipse inscribed in it (the
box proxy), never a mask from random weights; point prompts need SAM and are refused."""
from __future__ import annotations

import logging
import threading

from al_loop.models.encoders import Encoder, Sam2Encoder, SamEncoder, encoder_of_model, resolve_engine
from al_loop.models.sam import PromptSegmenter, load_sam
from al_loop.models.weights import has_weights
from al_loop.settings import SAM2_MODELS

from .settings import BackendSettings

log = logging.getLogger("ml_backend")
BOX_PROXY = "box-ellipse"  # model_version of masks made from boxes without SAM (the inscribed ellipse)


class SamPrompts:
    """The backend's SAM (None without weights), its image encoder and engine."""

    def __init__(self, settings: BackendSettings):
        self.settings = settings
        self.sam = self.sam_id = self.encoder = self.engine = None
        self._local = threading.local()  # one SamPredictor per thread: it holds per-image state
        if not has_weights(settings.model, settings.checkpoint):
            log.warning("%s", self.proxy_note)
            return
        # The engine as measured on this machine (or named): /health says which and why.
        self.engine = resolve_engine(encoder_of_model(settings.model), settings.checkpoint, settings.precision,
                                     settings.runtime)
        self.sam, self.sam_id = load_sam(settings.model, settings.checkpoint)
        if settings.model in SAM2_MODELS:
            self.encoder = Sam2Encoder(settings.model, settings.checkpoint, self.engine.precision, self.engine.runtime,
                                       model=self.sam)
        else:
            self.encoder = SamEncoder(self.sam, self.sam_id, self.engine.precision, self.engine.runtime)

    @property
    def version(self) -> str:
        """The model_version of prompt masks: SAM's weights, or the box proxy's name."""
        return self.sam_id or BOX_PROXY

    def engine_description(self) -> dict | None:
        """Which engine and precision SAM's image encoder runs on here, and why (None without SAM)."""
        if self.engine is None:
            return None
        from al_loop.models.engines import cpu_summary

        return {"runtime": self.engine.runtime, "precision": self.engine.precision, "reason": self.engine.reason,
                "cpu": cpu_summary()}

    @property
    def proxy_note(self) -> str | None:
        """What the backend says about its masks when it has no SAM (None when it has one)."""
        if self.sam is not None:
            return None
        model = self.settings.model
        return (f"no SAM weights for {model}: a box gives the ellipse inscribed in it (model_version {BOX_PROXY}) "
                f"and point prompts are refused; `al-loop weights download {model}` gives SAM's masks")

    @property
    def segmenter(self) -> PromptSegmenter:
        """This thread's prompt segmenter (the one box/points -> mask step)."""
        segmenter = getattr(self._local, "segmenter", None)
        if segmenter is None:
            segmenter = self._local.segmenter = PromptSegmenter(self.sam, self.sam_id, self.settings.runtime or None)
        return segmenter

    def shared_encoder(self, settings: BackendSettings) -> Encoder | None:
        """SAM's encoder when the workspace's decoders learn on it (None otherwise)."""
        if self.encoder is not None and settings.encoder == encoder_of_model(settings.model):
            return self.encoder
        return None
