"""The workspace's decoder in the backend: the latest scored one, reloaded when al-loop or a
training run saves a new one, with the encoder its embeddings come from. A damaged decoder
is reported (``problem``, on /health), never fatal: SAM's box prompts keep working."""
from __future__ import annotations

import logging
import threading

from al_loop.errors import AlLoopError, UsageError
from al_loop.models.decoder import DomainDecoder
from al_loop.models.encoders import Encoder, LazyEncoder
from al_loop.training.store import DecoderStore, DecoderVersion

from .prompts import SamPrompts
from .settings import BackendSettings

log = logging.getLogger("ml_backend")
# The decoder in use: its store entry, the loaded module, and the encoder its embeddings come from.
LoadedDecoder = tuple[DecoderVersion, DomainDecoder, Encoder]


class Decoders:
    """The decoder in use, loaded once per version and shared by the request threads."""

    def __init__(self, settings: BackendSettings, store: DecoderStore, prompts: SamPrompts):
        self.settings, self.store, self.prompts = settings, store, prompts
        self._lock = threading.Lock()
        self._loaded: LoadedDecoder | None = None
        self.problem: str | None = None  # why the workspace's decoder cannot be used; /health shows it

    def current(self) -> LoadedDecoder | None:
        """The latest decoder of the workspace, reloaded when a new one is saved. None before the
        first, or when it is damaged: then :attr:`problem` says why."""
        try:
            entry = self.store.latest()
            if entry is None:
                self.problem = None
                return None
            with self._lock:
                if self._loaded is None or self._loaded[0] != entry:
                    encoder = self._encoder_for(entry)
                    decoder, _ = self.store.load(entry)
                    log.info("using decoder %s (encoder %s)", entry.version, entry.encoder_id)
                    self._loaded = (entry, decoder, encoder)
                loaded = self._loaded
        except AlLoopError as exc:  # a damaged pointer or file, an encoder this backend cannot build
            if str(exc) != self.problem:
                log.warning("decoder unusable: %s", exc)
            self.problem = str(exc)
            return None
        self.problem = None
        return loaded

    def _encoder_for(self, entry: DecoderVersion) -> Encoder:
        sam_encoder = self.prompts.encoder
        if sam_encoder is not None and entry.encoder_id == sam_encoder.id:
            return sam_encoder
        encoder = LazyEncoder(entry.encoder, entry.checkpoint, entry.precision, self.settings.runtime)
        if encoder.id != entry.encoder_id:
            raise UsageError(f"decoder {entry.version} was trained on {entry.encoder_id}; this backend builds {encoder.id}")
        return encoder

    def training_encoder(self) -> Encoder:
        """The encoder START_TRAINING trains on: the workspace's (the backend's SAM when it is the same)."""
        settings = self.settings
        return self.prompts.shared_encoder(settings) or LazyEncoder(settings.encoder, settings.checkpoint,
                                                                         settings.precision, settings.runtime)
