"""The backend's settings: the one resolver of :mod:`al_loop.settings` (flag, environment,
workspace, default), plus what only a server asks of them.

A backend started for a workspace reads that workspace's saved settings, so the CLI and the
backend share one embedding cache, one encoder and one SAM without being told twice.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from al_loop.settings import Settings, resolve

# setting -> environment variable (the names docker's compose files and the README use)
ENVIRONMENT = {f: Settings.__dataclass_fields__[f].metadata["env"] for f in Settings.__dataclass_fields__
               if f != "sources"}


@dataclass(frozen=True)
class BackendSettings(Settings):
    @classmethod
    def resolve(cls, **given) -> BackendSettings:
        """Flags (non-None values in ``given``) over environment over the workspace over defaults."""
        from al_loop.loop.workspace import saved_settings

        first = resolve({"workspace": given.get("workspace")})
        return resolve(given, saved_settings(first.workspace), kind=cls)

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

    def secrets(self) -> list[str]:
        return [s for s in (self.label_studio_api_key, self.basic_auth_pass) if s]

    def workspace_path(self) -> Path:
        return Path(self.workspace)
