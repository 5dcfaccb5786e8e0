"""One box -> mask step: the backend, the loop and the SAM oracle give the same mask for one box.

All three go through ``PromptSegmenter.box_masks`` / ``segment`` (SAM's answer
clipped to the box). The tiny SAM has random weights, so the mask's shape means
nothing; that the three paths agree to the pixel, and stay inside the box, is the point.
"""
from __future__ import annotations

import numpy as np
import pytest

from al_loop.data.images import content_hash, decode_image, image_size
from al_loop.data.yolo import LabelledTile
from al_loop.embeddings.cache import EmbeddingCache
from al_loop.embeddings.embed import TileRef
from al_loop.studio.answers import Answer, answers_to_masks
from al_loop.studio.label_config import default_label_config, parse_label_config
from al_loop.studio.pull import TileSource
from al_loop.studio.regions import brush_to_mask
from al_loop.training.masks import sam_masker
from al_loop.training.oracle import SamOracle
from ml_backend.service import SegmentationService
from ml_backend.settings import BackendSettings

from .conftest import write_tiles

SIZE = 240
BOX_PERCENT = {"x": 20.0, "y": 25.0, "width": 30.0, "height": 35.0}
BOX_PX = (48.0, 60.0, 120.0, 144.0)  # the same box in pixels of the 240 px tile


def rectangle() -> dict:
    return {"type": "rectanglelabels", "from_name": "box", "to_name": "image", "original_width": SIZE,
            "original_height": SIZE, "value": {**BOX_PERCENT, "rotation": 0, "rectanglelabels": ["pit"]}}


@pytest.fixture(scope="module")
def tile(tmp_path_factory):
    root = tmp_path_factory.mktemp("box-masks")
    path = write_tiles(root / "tiles", 1, size=SIZE)[0]
    return root, path


def backend_mask(root, path) -> np.ndarray:
    settings = BackendSettings.resolve(model="tiny", cache_dir=str(root / "cache"), local_root=str(root / "tiles"),
                                       workspace=str(root / "ws"))
    service = SegmentationService(settings)
    schema = parse_label_config(default_label_config())
    task = {"id": 1, "data": {"image": path.name}, "annotations": [{"id": 1, "result": [rectangle()]}]}
    ([prediction],), errors = service.predict_batch([task], schema, service.fetcher.access)
    assert errors == []
    [region] = prediction["result"]
    return brush_to_mask(region)


def loop_mask(root, path, monkeypatch) -> np.ndarray:
    monkeypatch.delenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", raising=False)
    url = f"/data/local-files/?d=tiles/{path.name}"
    source = TileSource("http://127.0.0.1:9", "token", str(root / "tiles"), None, url)
    data = path.read_bytes()
    tiles = {1: TileRef(url, content_hash(data), image_size(data))}
    masker = sam_masker(EmbeddingCache(root / "cache"), lambda ref: decode_image(source.read(ref.source), ref.source),
                        model="tiny")
    masks, warnings = answers_to_masks({1: Answer(1, [rectangle()])}, tiles, parse_label_config(default_label_config()),
                                       masker)
    assert not warnings
    return masks[1]


def oracle_mask(root, path) -> np.ndarray:
    oracle = SamOracle("tiny", cache=EmbeddingCache(root / "cache"))
    return oracle.labels(LabelledTile(path, (SIZE, SIZE), np.array([BOX_PX]), np.array([0]))) > 0


def test_backend_loop_and_oracle_agree_on_one_box(tile, monkeypatch):
    root, path = tile
    backend, loop, oracle = backend_mask(root, path), loop_mask(root, path, monkeypatch), oracle_mask(root, path)
    assert backend.any(), "the tiny SAM paints something inside this box (checked in test_backend too)"
    assert np.array_equal(backend, loop)
    assert np.array_equal(backend, oracle)
    ys, xs = np.nonzero(backend)
    x0, y0, x1, y1 = BOX_PX
    assert xs.min() >= int(x0) and xs.max() < np.ceil(x1) and ys.min() >= int(y0) and ys.max() < np.ceil(y1)
    # one SAM embedding for all three: they share the cache
    assert len(list((root / "cache").rglob("*.npy"))) == 1
