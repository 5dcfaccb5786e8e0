"""The backend's settings: command-line flags first, then environment (for docker), then defaults."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from al_loop.errors import UsageError

# setting -> environment variable read when the flag is not given
ENVIRONMENT = {
    "host": "AL_LOOP_BACKEND_HOST",
    "port": "AL_LOOP_BACKEND_PORT",
    "model": "AL_LOOP_MODEL",
    "checkpoint": "AL_LOOP_CHECKPOINT",
    "precision": "AL_LOOP_PRECISION",
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
}


@dataclass
class BackendSettings:
    host: str = "127.0.0.1"
    port: int = 9090
    model: str = "vit_b"
    checkpoint: str | None = None
    precision: str = "fp32"  # SAM encoder precision for new tiles (fp32, bf16, int8)
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

    @classmethod
    def resolve(cls, **given) -> "BackendSettings":
        """Flags (non-None values in ``given``) over environment over defaults."""
        values = {}
        for f in fields(cls):
            if given.get(f.name) is not None:
                values[f.name] = given[f.name]
            elif os.environ.get(ENVIRONMENT[f.name]):
                values[f.name] = os.environ[ENVIRONMENT[f.name]]
        settings = cls(**values)
        settings.port, settings.threads, settings.epochs = int(settings.port), int(settings.threads), int(settings.epochs)
        if bool(settings.basic_auth_user) != bool(settings.basic_auth_pass):
            # Half a configuration used to switch auth off without a word: refuse to start instead.
            raise UsageError("basic auth is half-configured: set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")
        return settings

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
