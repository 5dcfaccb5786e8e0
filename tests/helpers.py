"""Helpers that several test modules share (tests import from here, not from each other)."""
from __future__ import annotations

import os
from pathlib import Path


def studio_env(label_studio, shared_cache: Path) -> dict:
    """The environment of an al-loop run against the session's Label Studio, with the session's
    shared cache: the real tiles' filter-bank entries outlive a test (the loop tests encode the
    same tiles), and test_pit_types.py's have them already."""
    return {**os.environ, "LABEL_STUDIO_API_KEY": label_studio.token, "AL_LOOP_CACHE_DIR": str(shared_cache),
            "PYTHONUNBUFFERED": "1"}
