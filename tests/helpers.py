"""Helpers that several test modules share (tests import from here, not from each other)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def studio_env(label_studio, shared_cache: Path) -> dict:
    """The environment of an al-loop run against the session's Label Studio, with the session's
    shared cache: the real tiles' filter-bank entries outlive a test (the loop tests encode the
    same tiles), and test_pit_types.py's have them already."""
    return {**os.environ, "LABEL_STUDIO_API_KEY": label_studio.token, "AL_LOOP_CACHE_DIR": str(shared_cache),
            "PYTHONUNBUFFERED": "1"}


# -- two experts on one tile, their agreement worked out by hand (test_team, test_team_studio) --

TEAM_SIZE = (256, 256)


def square(y0: int, x0: int, height: int, width: int) -> np.ndarray:
    mask = np.zeros(TEAM_SIZE, bool)
    mask[y0:y0 + height, x0:x0 + width] = True
    return mask


# Expert A and expert B on one tile. Pit 1: B's square 5 px to the right of A's: 20 x 15 = 300
# px shared of 500, IoU 0.6. Pit 2: the same square, IoU 1.0. Pit 3: B's 4 columns narrower:
# 320 of 400, IoU 0.8. Pit 4: only B drew it. Types of the three matched pits: A (pit, skylight,
# pit), B (pit, skylight, skylight).
TEAM_A = [(square(10, 10, 20, 20), "pit"), (square(100, 100, 20, 20), "skylight"), (square(150, 150, 20, 20), "pit")]
TEAM_B = [(square(10, 15, 20, 20), "pit"), (square(100, 100, 20, 20), "skylight"), (square(150, 150, 20, 16), "skylight"),
           (square(200, 10, 10, 10), "pit")]
MEAN_IOU = (0.6 + 1.0 + 0.8) / 3
# Cohen's kappa by hand: observed agreement 2/3; A says pit 2/3, skylight 1/3; B pit 1/3, skylight
# 2/3; chance agreement 2/3 * 1/3 + 1/3 * 2/3 = 4/9; kappa = (2/3 - 4/9) / (1 - 4/9) = 0.4.
KAPPA = 0.4
