from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
HIRISE = Path(os.environ.get("HIRISE_PITS_DIR", ROOT.parent / "shared" / "data" / "hirise-pits"))


@pytest.fixture(scope="session")
def hirise() -> Path:
    if not (HIRISE / "data.yaml").is_file():
        pytest.skip(f"real HiRISE data not found at {HIRISE} (set HIRISE_PITS_DIR or place ../shared/data/hirise-pits)")
    return HIRISE


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    from al_loop.synthetic import write_yolo_dataset

    return write_yolo_dataset(tmp_path_factory.mktemp("synthetic"), train=24, valid=6, seed=3, size=256)


@pytest.fixture
def cache(tmp_path):
    from al_loop.cache import EmbeddingCache

    return EmbeddingCache(tmp_path / "cache")


@pytest.fixture(scope="session")
def tiny_sam():
    from al_loop.sam import build_tiny_sam

    return build_tiny_sam()


def write_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(array).save(path)
    return path
