"""``al-loop serve-backend``: the Flask app under gunicorn, with secrets kept out of every log line.

One worker process holds SAM once; its threads serve requests side by side (the
embedding cache makes concurrent first requests for one tile encode it once).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

import torch
from gunicorn.app.base import BaseApplication

from .redaction import Secrets, install_redaction
from .settings import BackendSettings

if TYPE_CHECKING:
    from flask import Flask


def build_app(settings: BackendSettings) -> Flask:
    """Load the model and build the WSGI app (in the worker, after fork)."""
    from .app import create_app
    from .service import SegmentationService

    secrets = Secrets(settings.secrets())
    logging.basicConfig(
        level=settings.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    install_redaction(secrets)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    service = SegmentationService(settings)
    logging.getLogger("ml_backend").info(
        "backend ready: SAM %s, predictions as %s, cache %s",
        service.prompts.version, service.model_version(), service.cache.root,
    )
    return create_app(service, secrets=secrets)


class GunicornApp(BaseApplication):
    """gunicorn running the app: one worker (SAM loaded once), request threads."""

    def __init__(self, settings: BackendSettings):
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        for key, value in {
            "bind": f"{s.host}:{s.port}",
            "workers": 1,
            "worker_class": "gthread",
            "threads": s.threads,
            # A cold vit_h encode on a laptop CPU takes a minute; Label Studio waits longer still.
            "timeout": 600,
            "graceful_timeout": 30,
            "loglevel": s.log_level,
            "accesslog": "-",
            "errorlog": "-",
            # gunicorn's control socket sits at one path per user: a second backend (tests, a
            # second project) would take it over. Nothing here uses it.
            "control_socket_disable": True,
        }.items():
            if key in self.cfg.settings:  # control_socket_disable is new in gunicorn 24
                self.cfg.set(key, value)

    def load(self) -> Flask:
        return build_app(self.settings)


def serve(settings: BackendSettings) -> None:
    GunicornApp(settings).run()
