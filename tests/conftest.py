from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
HIRISE = Path(os.environ.get("HIRISE_PITS_DIR", ROOT.parent / "shared" / "data" / "hirise-pits"))
# Without a named runtime a CPU machine with the openvino extra (CI's) encodes on OpenVINO; the
# suite pins torch so that its exact comparisons hold everywhere, and test_runtimes.py tests
# the other engines and the default by name.
os.environ.setdefault("AL_LOOP_RUNTIME", "torch")


@pytest.fixture(scope="session")
def hirise() -> Path:
    if not (HIRISE / "data.yaml").is_file():
        pytest.skip(f"real HiRISE data not found at {HIRISE} (set HIRISE_PITS_DIR or place ../shared/data/hirise-pits)")
    return HIRISE


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    from al_loop.data.synthetic import write_yolo_dataset

    return write_yolo_dataset(tmp_path_factory.mktemp("synthetic"), train=24, valid=6, seed=3, size=256)


@pytest.fixture
def cache(tmp_path):
    from al_loop.embeddings.cache import EmbeddingCache

    return EmbeddingCache(tmp_path / "cache")


@pytest.fixture(scope="session")
def tiny_sam():
    from al_loop.models.sam import build_tiny_sam

    return build_tiny_sam()


def write_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(array).save(path)
    return path


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A real Label Studio (SQLite) on loopback for the whole session."""
    import shutil
    import sys

    from al_loop.sim.servers import LabelStudioServer

    if not (Path(sys.executable).parent / "label-studio").exists() and not shutil.which("label-studio"):
        pytest.skip("label-studio is not installed (pip install -e '.[test]')")
    root = tmp_path_factory.mktemp("label-studio")
    server = LabelStudioServer(root / "data", root / "files").start()
    yield server
    server.stop()


def write_tiles(directory: Path, count: int, size: int = 256, seed: int = 0) -> list[Path]:
    """Generated Mars-like tiles as PNG files, with their expert boxes kept beside (``.boxes.npy``)."""
    from al_loop.data.synthetic import generate_tile

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        tile = generate_tile(seed + i, size)
        path = write_png(directory / f"tile-{seed + i:03d}.png", tile.image)
        np.save(path.with_suffix(".boxes.npy"), tile.boxes)
        paths.append(path)
    return paths


@contextmanager
def serving(handler: type) -> Iterator[str]:
    """A real threaded HTTP server on loopback with ``handler``; yields its base URL."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True  # a handler still trickling bytes must not hold the test's exit
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
