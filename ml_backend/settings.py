"""The backend's settings: command-line flags first, then environment (for docker), then defaults."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from al_loop.data.images import MIN_SIDE
from al_loop.errors import UsageError
from al_loop.studio.fetch import DOWNLOAD_DEADLINE, PARALLEL_DOWNLOADS
from al_loop.studio.regions import MAX_REGIONS

# setting -> environment variable read when the flag is not given
ENVIRONMENT = {
    "host": "AL_LOOP_BACKEND_HOST",
    "port": "AL_LOOP_BACKEND_PORT",
    "model": "AL_LOOP_MODEL",
    "checkpoint": "AL_LOOP_CHECKPOINT",
    "precision": "AL_LOOP_PRECISION",
    "runtime": "AL_LOOP_RUNTIME",
    "cache_dir": "AL_LOOP_CACHE_DIR",
    "workspace": "AL_LOOP_WORKSPACE",
    "encoder": "AL_LOOP_ENCODER",
    "threads": "AL_LOOP_BACKEND_THREADS",
    "epochs": "AL_LOOP_EPOCHS",
    "local_root": "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT",
    "label_studio_url": "LABEL_STUDIO_URL",
    "label_studio_api_key": "LABEL_STUDIO_API_KEY",
    "basic_auth_user": "BASIC_AUTH_USER",
    "basic_auth_pass": "BASIC_AUTH_PASS",
    "log_level": "AL_LOOP_LOG_LEVEL",
    "download_deadline": "AL_LOOP_DOWNLOAD_DEADLINE",
    "request_deadline": "AL_LOOP_REQUEST_DEADLINE",
    "parallel_downloads": "AL_LOOP_PARALLEL_DOWNLOADS",
    "max_body_mb": "AL_LOOP_MAX_BODY_MB",
    "max_regions": "AL_LOOP_MAX_REGIONS",
    "max_image_pixels": "AL_LOOP_MAX_IMAGE_PIXELS",
    "min_image_side": "AL_LOOP_MIN_IMAGE_SIDE",
}


@dataclass
class BackendSettings:
    host: str = "127.0.0.1"
    port: int = 9090
    model: str = "vit_b"
    checkpoint: str | None = None
    precision: str = "fp32"  # SAM encoder precision for new tiles (fp32, bf16, int8)
    runtime: str = ""  # engine for SAM: torch, openvino, onnx; "" = the defaults (al_loop.models.runtimes)
    cache_dir: str | None = None  # shared embedding cache; None: AL_LOOP_CACHE_DIR or ~/.cache
    workspace: str = "al-workspace"  # where trained decoders live (shared with al-loop)
    encoder: str | None = None  # encoder the backend trains decoders on; None: sam-<model>
    threads: int = 8
    epochs: int = 100
    local_root: str | None = None  # local paths and local-files URLs are read only below this
    label_studio_url: str | None = None
    label_studio_api_key: str | None = field(default=None, repr=False)
    basic_auth_user: str | None = None
    basic_auth_pass: str | None = field(default=None, repr=False)
    log_level: str = "info"
    # Limits (README, "Backend limits"): what one request may cost the server.
    download_deadline: float = DOWNLOAD_DEADLINE  # seconds for one image download, first to last byte
    request_deadline: float = 90.0  # seconds for one /predict; tasks not reached by then answer 504
    parallel_downloads: int = PARALLEL_DOWNLOADS  # image downloads at once, over all requests
    max_body_mb: float = 32.0  # request body size
    max_regions: int = MAX_REGIONS  # boxes/points per task or prompt (each costs a SAM decoder pass)
    max_image_pixels: int = 4096 * 4096  # a larger image is refused before it is decoded
    min_image_side: int = MIN_SIDE  # a smaller image (1x1, a 64000x1 strip) has nothing to segment

    @classmethod
    def resolve(cls, **given) -> "BackendSettings":
        """Flags (non-None values in ``given``) over environment over defaults."""
        values = {}
        for f in fields(cls):
            if given.get(f.name) is not None:
                values[f.name] = given[f.name]
            elif os.environ.get(ENVIRONMENT[f.name]):
                values[f.name] = os.environ[ENVIRONMENT[f.name]]
        settings = cls(**{name: _typed(name, value) for name, value in values.items()})
        if bool(settings.basic_auth_user) != bool(settings.basic_auth_pass):
            # Half a configuration used to switch auth off without a word: refuse to start instead.
            raise UsageError("basic auth is half-configured: set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")
        return settings

    @property
    def predict_slots(self) -> int:
        """Requests that may predict at once: one thread is always left for /health and /metrics,
        so slow image hosts or long encodes can never make the health check wait."""
        return max(1, self.threads - 1)

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        if self.basic_auth_user and self.basic_auth_pass:
            return self.basic_auth_user, self.basic_auth_pass
        return None

    @property
    def decoder_encoder(self) -> str:
        return self.encoder or f"sam-{self.model}"

    def secrets(self) -> list[str]:
        return [s for s in (self.label_studio_api_key, self.basic_auth_pass) if s]

    def workspace_path(self) -> Path:
        return Path(self.workspace)


def _typed(name: str, value: object) -> object:
    """A flag or environment value as its setting's type (numbers arrive as text from the environment)."""
    kind = type(next(f.default for f in fields(BackendSettings) if f.name == name))
    if kind not in (int, float) or isinstance(value, kind):
        return value
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise UsageError(f"{ENVIRONMENT[name]} / --{name.replace('_', '-')} must be a number, not {value!r}") from None
    if number <= 0 and name != "port":
        raise UsageError(f"{ENVIRONMENT[name]} / --{name.replace('_', '-')} must be positive, not {value!r}")
    return number
